"""The trust files' directory and I/O: StrictModes checks, safe reads and atomic writes.

Whoever can change a trust file can grant themselves access (OpenSSH's StrictModes):
see the theory of operation in :mod:`mpish.keys`. Every read goes through
:func:`open_trusted` (``O_NOFOLLOW | O_NONBLOCK``, then ``fstat`` of what was opened);
every write through :func:`write_new_file` (``O_EXCL``, final mode from the start).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from mpish.wire.errors import MpishError

MAX_FILE_BYTES = 1 << 20  # a key file or key list larger than this is not ours


class KeyFileError(MpishError):
    """A key file is missing, unreadable, malformed, or unsafe to use."""


class KeyPermissionError(KeyFileError):
    """A key file others can access (or did not come from this user); it is ignored."""


class KeyFormatError(KeyFileError):
    """A public key line or key file does not have the expected format."""


def mpish_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The mpish directory: ``home``, else ``$MPISH_HOME``, else ``~/.mpish``; not created."""
    if home is not None:
        return Path(home)
    env = os.environ.get("MPISH_HOME")
    if env:
        return Path(env)
    return Path.home() / ".mpish"


def ensure_home(home: str | os.PathLike[str] | None) -> Path:
    """The mpish directory, created with mode 0700 if it does not exist."""
    path = mpish_home(home)
    _refuse_foreign_links(path)  # before anything is made through them
    where = "MPISH_HOME" if home is None and os.environ.get("MPISH_HOME") else "the mpish directory"
    if path.exists() and not path.is_dir():  # (mkdir's "File exists" said nothing of what is wrong)
        raise KeyFileError(f"{where} '{path}' is not a directory: give a directory (it is created if "
                           "missing, mode 0700)")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {where} '{path}': {exc.strerror or exc}") from exc
    if not path.is_dir():
        raise KeyFileError(f"{where} '{path}' is not a directory")
    return path


# --- trust checks (StrictModes) ----------------------------------------------------

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# never follow a link, never block on a FIFO; the descriptor is then checked with fstat
_O_TRUST = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | _O_CLOEXEC


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry: containers
        return str(uid)


def _user_home() -> Path | None:
    """The user's home directory as the passwd file has it (where sshd stops walking up)."""
    try:
        return Path(os.path.realpath(pwd.getpwuid(os.geteuid()).pw_dir))
    except KeyError:
        return None


def _owned_by_user(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0)


def _foreign_owner(what: str, path: Path, st: os.stat_result, fix: str) -> KeyPermissionError:
    me = os.geteuid()
    return KeyPermissionError(
        f"{what} '{path}' is owned by {_user_name(st.st_uid)} (uid {st.st_uid}), not by you "
        f"({_user_name(me)}, uid {me}) or root: its owner can change it and so your keys, "
        f"so mpish will not use it. To fix it, {fix}"
    )


def _own_directory_advice(user: str, path: Path) -> str:
    return (
        "use a directory of your own: mkdir -m 700 DIR and set MPISH_HOME=DIR "
        f"(or, as root: chown {user} '{path}')"
    )


SHARED_TEMPORARY = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - named, never written to


def _refuse_foreign_links(path: Path) -> None:
    """A symbolic link on the way that another user can replace (it is in a directory of theirs,
    or in one others can write: a sticky one, /tmp, if the link is not the user's or root's)
    chooses where mpish takes keys from: refused. Whose the link is matters only there (a link
    is never changed, only replaced: /home -> /nfs/home of uid nobody in / is fine)."""
    for link, st in _links_on_the_way(path):
        try:
            above = os.stat(link.parent)
        except OSError:
            continue
        if not _owned_by_user(above):
            holder, who = above, f"its directory '{link.parent}' belongs to another user"
        elif above.st_mode & 0o022 and not (above.st_mode & stat.S_ISVTX and _owned_by_user(st)):
            holder, who = st, "it is in a directory others can write to"
        else:
            continue
        raise KeyPermissionError(
            f"the symbolic link '{link}', on the way to the mpish directory '{path}', can be replaced "
            f"by another user ({who}; the link is {_user_name(holder.st_uid)}'s), who would choose "
            f"where mpish takes your keys from; mpish will not follow it. To fix it, point MPISH_HOME "
            f"at the directory itself (now {os.path.realpath(path)})"
        )


def _links_on_the_way(path: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Each symbolic link followed in resolving ``path``, with its own status (as realpath walks:
    component by component, a link's target walked in its place; up to 40 links)."""
    todo = list((Path.cwd() / path).parts[1:])  # not abspath: "link/.." is the target's parent
    current, followed = Path("/"), 0
    while todo and followed <= 40:
        part = todo.pop(0)
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            st = os.lstat(candidate)
        except OSError:
            return  # not there (yet): nothing further to follow
        if not stat.S_ISLNK(st.st_mode):
            current = candidate
            continue
        yield candidate, st
        followed += 1
        target = Path(os.readlink(candidate))
        if target.is_absolute():
            current = Path("/")
        todo[:0] = [p for p in target.parts if p not in ("/", ".")]


def check_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The mpish directory, once it and the directories above it pass sshd's StrictModes.

    The directory (symbolic links resolved, as sshd does) must be owned by the user or
    root and writable by nobody else; so must each directory above it up to the user's
    home directory (or ``/``), except that a sticky directory (``/tmp``) may be
    writable there. A directory that does not exist yet passes (nothing to trust in it).
    A symbolic link on the way must be the user's or root's too: another user's link in /tmp
    chose which directory, of the user's, mpish took keys from.
    """
    path = mpish_home(home)
    _refuse_foreign_links(path)
    real = Path(os.path.realpath(path))
    user = _user_name(os.geteuid())
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise KeyFileError(f"cannot examine the mpish directory '{path}': {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"the mpish directory '{path}' is not a directory")
    if not _owned_by_user(st):
        raise _foreign_owner("the mpish directory", real, st, _own_directory_advice(user, real))
    if st.st_mode & 0o022:
        shared = st.st_mode & stat.S_ISVTX and (st.st_uid != os.geteuid() or str(real) in SHARED_TEMPORARY)
        fix = (f"To fix it, run: chmod 700 '{real}'" if not shared else
               "It is a directory shared by every user (as /tmp): do not chmod it; "
               "give mpish one of its own: mkdir -m 700 DIR and set MPISH_HOME=DIR")
        raise KeyPermissionError(
            f"Permissions 0{st.st_mode & 0o7777:03o} for the mpish directory '{real}' are too open: "
            f"group or others can write to it and so replace your keys; mpish will not use it. {fix}"
        )
    stop = _user_home()
    for parent in real.parents:
        try:
            st = os.stat(parent)
        except OSError as exc:
            raise KeyFileError(f"cannot examine '{parent}', above the mpish directory: {exc}") from exc
        if not _owned_by_user(st):
            raise _foreign_owner(
                f"the directory above the mpish directory '{real}',", parent, st,
                _own_directory_advice(user, parent),
            )
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise KeyPermissionError(
                f"bad modes for directory '{parent}' (0{st.st_mode & 0o7777:03o}), above the mpish "
                f"directory '{real}': group or others can write to it and so replace the mpish "
                f"directory; mpish will not use it. To fix it, run: chmod go-w '{parent}' "
                "(or use an mpish directory elsewhere: mkdir -m 700 DIR and set MPISH_HOME=DIR)"
            )
        if parent == stop:
            break
    return path


def open_trusted(path: Path, what: str, *, private: bool = False, flags: int = os.O_RDONLY) -> int | None:
    """A descriptor of ``path`` once the opened file passes the trust checks; None if absent.

    ``O_NOFOLLOW | O_NONBLOCK``: a symbolic link is refused and a FIFO cannot block the
    open; ``fstat`` then checks the file that was opened (a regular file, owned by the
    user or root, writable by nobody else; ``private``: accessible by nobody else).
    """
    try:
        fd = os.open(path, flags | _O_TRUST, 0o600)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyPermissionError(
                f"{what} '{path}' is a symbolic link; mpish does not follow links to its trust files. "
                f"To fix it, replace the link by the file itself: cp --remove-destination "
                f"\"$(readlink -f '{path}')\" '{path}'"
            ) from None
        raise KeyFileError(f"cannot open {what} '{path}': {exc}") from exc
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the name points to now
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} '{path}' is not a regular file; remove it: rm '{path}'")
        if not _owned_by_user(st):
            user = _user_name(os.geteuid())
            fix = f"remove it (rm '{path}') and make it again, or as root: chown {user} '{path}'"
            raise _foreign_owner(what, path, st, fix)
        if private and st.st_mode & 0o077:
            raise KeyPermissionError(unprotected_message(path, st.st_mode))
        if st.st_mode & 0o022:
            raise KeyPermissionError(
                f"Permissions 0{st.st_mode & 0o777:03o} for {what} '{path}' are too open: "
                "group or others can write to it and so grant themselves access. "
                f"It will be ignored. To fix it, run: chmod 600 '{path}'"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def unprotected_message(path: Path, mode: int) -> str:
    banner = "@" * 59
    return "\n".join(
        [
            banner,
            "@         WARNING: UNPROTECTED PRIVATE KEY FILE!          @",
            banner,
            f"Permissions 0{mode & 0o777:03o} for '{path}' are too open.",
            "It is required that your private key files are NOT accessible by others.",
            "This private key will be ignored.",
            f"To fix it, run: chmod 600 '{path}'",
        ]
    )


def read_limited(fd: int, path: Path) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 65536):
        total += len(chunk)
        if total > MAX_FILE_BYTES:
            raise KeyFormatError(f"'{path}' is too large to be an mpish key file")
        chunks.append(chunk)
    return b"".join(chunks)


def write_new_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically; the file never exists with a wider mode.

    The temporary file is created with ``O_CREAT | O_EXCL`` and ``mode`` (the umask can
    only narrow it). ``overwrite=False`` links it into place, which fails if ``path``
    exists, so a concurrent creator cannot be clobbered.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the data is already safe
        pass
    finally:
        os.close(fd)


def read_trusted(path: Path, what: str, *, private: bool = False) -> bytes | None:
    """The bytes of a key file checked by :func:`open_trusted`, or None if it does not exist."""
    fd = open_trusted(path, what, private=private)
    if fd is None:
        return None
    try:
        return read_limited(fd, path)
    finally:
        os.close(fd)


def read_text_file(path: Path, what: str) -> str | None:
    """The trust file's text, or None if it does not exist."""
    data = read_trusted(path, what)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(f"'{path}' is not UTF-8 text") from None


def content_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` of every line that is not blank or a comment."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line
