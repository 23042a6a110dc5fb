"""Files received by put (on a server) and get (on the console): safe part files, cp naming.

A file being received is written to a part file beside its destination, created with an
unpredictable name, ``O_EXCL|O_NOFOLLOW`` and mode 0600 (:func:`tempfile.mkstemp`, or
the same by hand inside a directory descriptor for a tree, :mod:`mpish.shell.tree`), so
another user who can write to that directory can neither plant a symlink that the
transfer would follow nor a file that it would fill and then own. The SHA-256 is
computed over the bytes as they are written to that descriptor; when the last byte has
arrived it must match the sender's, and the size the descriptor holds must be the size
sent; the final mode is set on that descriptor, and only then is the part file renamed
over the destination (a rename replaces a planted link, never follows it). The rename
is by name: in a directory others can write that is not sticky, another user can rename
the part file away and put hers under its name, so after the rename the inode at the
destination must be the descriptor's; if not, what our rename put there is removed and
the transfer fails (a :get into such a directory is warned about beforehand).

A file to send is opened non-blocking and must be a regular file (:func:`open_regular`):
a FIFO planted under its name would otherwise block the open forever.

The file is not read back to be hashed a second time: only its owner (and root) can
open a 0600 part file with an unpredictable name, and whoever can do that can as well
change the file after its rename; reading it back cost a second digest and a second
pass over the file (half a second of CPU per GiB) and proved nothing more.

Over ssh the file is not hashed at all (:func:`digests_needed`): ssh's MAC already
authenticates every byte in transit, in order, and the pipes to ssh are the kernel's, so
the end-to-end SHA-256 only checked mpish's own copying, at half a second of CPU per GiB
on each end, which was the whole gap to scp on two cores (bench/ssh_shell.py). What it
was said to protect against is checked without it: a short or failed write by the size
the sender counted and the size the descriptor holds; a source that grows or shrinks by
that count against the size sent; a source changed in place while it was read (which a
stream digest never saw: both ends hash the bytes that were read) by :func:`changed`. A
tree's files (many, mostly small) and every transfer over MPI keep the SHA-256.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from mpish.report import owner
from mpish.transport.link import Channel, Link
from mpish.transport.pipe import MultiLink, PipeLink, PlainChannel

from . import protocol as p

SSH_EXTRA_WINDOW = 12 << 20  # bulk bytes a file transfer over ssh may have in flight beyond WINDOW
PART_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened to be sent, as cp does (a link followed), if it is a regular file:
    opened non-blocking so that a FIFO planted under its name cannot block the open, checked
    on the descriptor, then made blocking. A directory raises IsADirectoryError, another
    non-regular file OSError "not a regular file"."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def send_chunk(link: Link, channel: Channel, dest: int, data: bytes) -> None:
    """A file's bytes to ``dest``, raw on channel FILE (:class:`~mpish.shell.protocol.Chunk`).
    Over ssh the plain channel's 5-byte header and ``data`` go to ``writev`` as two pieces
    of one frame: 1 MiB is not copied behind a header (``data`` is immutable, so it may
    wait in the pipe's queue)."""
    if isinstance(channel, PlainChannel) and isinstance(link, (PipeLink, MultiLink)):
        link.send_frame(dest, channel.send_parts(data, p.FILE))
    else:
        link.send_all(dest, channel.send(data, p.FILE))


def digests_needed(channel: object) -> bool:
    """Whether a file sent over ``channel`` is hashed end to end (not over ssh: module doc)."""
    return not isinstance(channel, PlainChannel)


def extra_window(channel: object) -> int:
    """Bulk bytes a file's sender may have in flight over ``channel`` beyond the protocol's
    WINDOW: :data:`SSH_EXTRA_WINDOW` over ssh, 0 over MPI. Over ssh the bytes in flight
    wait in the kernel's pipes and ssh's buffers (ssh's own window bounds those), not in
    the receiver, and a 4 MiB window (10 ms at 400 MiB/s) stalled the sender whenever a
    process of the chain was descheduled; over MPI they would wait in the receiver's
    unexpected-message queue, so the window stays as it is."""
    return 0 if digests_needed(channel) else SSH_EXTRA_WINDOW


class Unhashed:
    """The digest of a file that is not hashed (over ssh): it is b"" on both ends."""

    def update(self, data: object) -> None:
        pass

    def digest(self) -> bytes:
        return b""


def new_digest(verify: bool) -> Any:
    """A SHA-256 if ``verify``, else :class:`Unhashed`."""
    import hashlib  # late: a shell server that transfers nothing does not load OpenSSL's hashes

    return hashlib.sha256() if verify else Unhashed()


def identity(info: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when a file is written to or replaced in place (atime aside)."""
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def changed(fd: int, before: os.stat_result, path: object) -> str:
    """An error text if the open file ``fd`` was written to since ``before`` (its fstat when
    it was opened): the copy may hold old and new bytes mixed. "" if it is as it was."""
    try:
        if identity(os.fstat(fd)) == identity(before):
            return ""
    except OSError:
        pass
    return (f"{path} changed while it was read: nothing was written (copy it again; a file "
            f"that is still being written, a live log, copies as a snapshot made first: cp FILE FILE.copy)")


def shared_directory(path: Path) -> bool:
    """``path`` is a directory that group or others can write and that is not sticky: there
    another user can rename a part file away and put hers under its name (see commit)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & 0o022) and not mode & stat.S_ISVTX


def shared_warning(directories: Iterable[Path]) -> str:
    """One line warning of the :func:`shared_directory` among ``directories``, or ""."""
    shared = sorted({str(d) for d in directories if shared_directory(d)})
    if not shared:
        return ""
    return (f"warning: {', '.join(shared)} can be written by other users and is not sticky: "
            "another user could swap a file there while it is received")


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def foreign(info: os.stat_result) -> bool:
    """Made by another user: neither yours nor root's."""
    return info.st_uid not in (os.geteuid(), 0)


def into_directory(target: Path) -> bool:
    """cp's "an existing directory receives it", but never through another user's symbolic
    link (:func:`_owned_end`: a chain of links of yours or root's only): a link planted at the
    destination's name sent a :get or :put into the directory of the planter's choice (a
    security review); such a link is no directory here, so a file replaces it and a tree is
    refused there (tree.py)."""
    end = _owned_end(target)
    return end is not None and stat.S_ISDIR(end[1].st_mode)


def destination(target: Path, name: str, as_directory: bool) -> Path:
    """Where a file called ``name`` goes for a cp/scp target: into it if it is a directory
    (``as_directory``: it was named with a trailing /, and must be one, never another user's
    link: OSError). Named without the /, another user's directory is refused (OSError): a
    user who meant a new file there had the copy put into a directory made at its name in
    advance, where its maker read it (a security review; cp and scp do that)."""
    if as_directory:
        try:
            info = os.lstat(target)
        except OSError:
            return target / name  # no such directory: said when the file is written
        if stat.S_ISLNK(info.st_mode) and _owned_end(target) is None:
            what = f"is a symbolic link of {owner(info.st_uid)}" if foreign(info) else \
                "leads through another user's symbolic link"
            raise ForeignLink(errno.ELOOP, f"{target} {what}, not followed")
        return target / name
    end = _owned_end(target)  # into_directory's look, whose status is needed here too
    if end is None or not stat.S_ISDIR(end[1].st_mode):
        return target
    info = end[1]
    if foreign(info):  # named as a file: perhaps planted where the user meant a new file
        raise ForeignDirectory(
            errno.EPERM, f"{target} is a directory of {owner(info.st_uid)}, not yours: the copy would be "
            f"theirs to read; to copy into it all the same, name it with a trailing / ({target}/)")
    return target / name


# errors of the directory a copy is written in, or of its file system, not of the copy itself
IN_DIRECTORY = frozenset({errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def cannot_write(final: Path, exc: OSError) -> str:
    """Why the copy ``final`` could not be written: ``cannot write FINAL: why``, or, for a cause
    in its directory (read-only, full, not writable: :data:`IN_DIRECTORY`), ``cannot write into
    DIR: why``, the same words for every copy there. The ``NAME.<host>`` copies of a :get from
    many hosts into a read-only directory were a line each, told apart only by their names
    (a clush user's trial); now identical, they fold into one (names.fold_by_reason)."""
    if exc.errno in IN_DIRECTORY:
        return f"cannot write into {os.path.abspath(final.parent)}: {exc.strerror}"
    if exc.errno == errno.ENOENT and not os.path.isdir(final.parent):  # --copy F --dest /no/such/dir
        return f"cannot write into {os.path.abspath(final.parent)}: no such directory (make it first)"
    return f"cannot write {final}: {exc.strerror}"


class ForeignLink(OSError):
    """A destination named as a directory is another user's symbolic link."""


class ForeignDirectory(OSError):
    """A destination named as a file is another user's directory (a trailing / says "into it")."""


def part_name(name: str) -> str:
    """An unpredictable name for the part file of ``name`` (short enough for NAME_MAX)."""
    import secrets  # late, as hashlib above

    return f".{name[:96]}.{secrets.token_hex(6)}.mpish-part"


class PartFile:
    """A file being received (see the module doc); ``commit`` or ``discard`` it.

    ``dir_fd``: the part file and ``final`` are the name ``final.name`` inside that open
    directory (a tree's, never reached through a link); else ``final`` is a path. A character
    device at ``final`` (/dev/null) is written into, as cp does, never replaced (:func:`_device`;
    ``follow``: a link of ours or root's to one is followed, as for a path the user named: a
    tree's root)."""

    def __init__(self, final: Path, dir_fd: int | None = None, verify: bool = True,
                 follow: bool = False) -> None:
        self.final = final
        self.dir_fd = dir_fd
        self.size = 0
        self.digest: Any = new_digest(verify)  # of the bytes written
        self.device = False
        device = _device(final) if dir_fd is None or follow else _device(final, dir_fd)
        if device is not None:  # /dev/null and the like: written into, as cp does, never replaced
            self.fd, self.part, self.target, self.device = device, "", str(final), True
            return
        if dir_fd is None:
            import tempfile  # here: its import (random...) costs every ssh server's start

            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".mpish-part", dir=final.parent)
            self.fd, self.part, self.target = fd, name, str(final)
            return
        self.target = final.name
        while True:
            self.part = part_name(final.name)
            try:
                self.fd = os.open(self.part, PART_FLAGS, 0o600, dir_fd=dir_fd)
                return
            except FileExistsError:
                continue

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self.fd, view) :]

    def commit(self, sha256: bytes, size: int, mode: int, times: tuple[int, int] | None = None) -> str:
        """Check the digest of what was written and the size the descriptor holds, set
        ``mode`` (and ``times``, (atime, mtime) in ns: -p), rename; an error text or ""."""
        if self.device:
            ok = self.size == size and self.digest.digest() == sha256
            self.discard()
            return "" if ok else f"checksum mismatch for {self.final}"
        try:
            if self.size != size or self.digest.digest() != sha256 or os.fstat(self.fd).st_size != size:
                self.discard()
                return f"checksum mismatch for {self.final}"
            os.fchmod(self.fd, mode & 0o7777)
            if times is not None:
                os.utime(self.fd, ns=times)
            written = os.fstat(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.part, self.target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            placed = os.lstat(self.target, dir_fd=self.dir_fd)
        except OSError as exc:
            self.discard()
            return f"cannot write {self.final}: {exc.strerror}"
        if (placed.st_dev, placed.st_ino) != (written.st_dev, written.st_ino) and not self._same_copy(placed):
            # the rename is by name: someone who can write the directory put another file
            # under the part name; what our rename placed at the target is theirs, remove it
            with contextlib.suppress(OSError):
                os.unlink(self.target, dir_fd=self.dir_fd)
            return (f"cannot write {self.final}: the part file was replaced by someone else during "
                    f"the transfer ({self.final.parent} is writable by others); nothing was written")
        return ""

    def _same_copy(self, placed: os.stat_result) -> bool:
        """Whether the other file at the target (not the one we wrote) is a copy of the same
        bytes of ours: several ranks on one file system (``mpish -n K``, a shared home) write
        the same destination, and a sibling's rename came between ours and our check. As two
        ``cp`` to one name, the last one stays; removing it, as the check did, lost the file.
        Only a plain file of our user with the same size, and the same SHA-256 when one is kept."""
        if not stat.S_ISREG(placed.st_mode) or placed.st_uid != os.geteuid() or placed.st_size != self.size:
            return False
        if isinstance(self.digest, Unhashed):
            return True
        import hashlib

        try:
            fd = os.open(self.target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except OSError:
            return False
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (placed.st_dev, placed.st_ino):  # replaced since: not judged
            os.close(fd)
            return False
        digest = hashlib.sha256()
        with os.fdopen(fd, "rb") as handle:  # hashlib.file_digest is 3.11's; hosts may have 3.10
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return bool(digest.digest() == self.digest.digest())

    def discard(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.device:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.part, dir_fd=self.dir_fd)


DISCARDING = frozenset({os.makedev(1, 3), os.makedev(1, 5), os.makedev(1, 7)})  # /dev/null, zero, full


def _device(final: Path, dir_fd: int | None = None) -> int | None:
    """A descriptor open for writing if ``final`` is /dev/null, /dev/zero or /dev/full (a device
    of root's or ours with their numbers: written into and the bytes dropped, as cp does), or
    a chain of our or root's links to one; None if it is missing, a regular file, a directory
    or another user's link (such a link is replaced, never followed). Refused (OSError): any
    other character device (a terminal: a peer's bytes must never reach one raw; /dev/mem...),
    a FIFO, socket or block device, and our or root's link to anything but those three (it is
    neither followed nor replaced: /dev/stdout as root). Renaming a part file over /dev/null
    replaced the system's /dev/null with a regular file. ``dir_fd``: ``final.name`` inside that
    directory (a tree's entry below its root), where no link is followed: it is replaced."""
    name: Path | str = final if dir_fd is None else final.name
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        if dir_fd is not None or foreign(info):
            return None  # planted by another, or inside a tree: replaced, never followed
        end = _owned_end(final)
        if end is None or not (stat.S_ISCHR(end[1].st_mode) and end[1].st_rdev in DISCARDING):
            raise OSError(errno.EINVAL, "it is a symbolic link, neither followed (mpish writes through a "
                          "link only to /dev/null, /dev/zero or /dev/full, by links of yours or root's) nor "
                          "replaced: give the file itself")
        name, info = end
    kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFBLK: "a block device"}
    kind = kinds.get(stat.S_IFMT(info.st_mode))
    if stat.S_ISCHR(info.st_mode) and foreign(info):
        kind = "another user's device"  # unprivileged users can make some (0:0) in a shared directory
    elif stat.S_ISCHR(info.st_mode) and info.st_rdev not in DISCARDING:
        kind = "a character device other than /dev/null, /dev/zero or /dev/full (a terminal, say)"
    if kind is not None:
        raise OSError(errno.EINVAL, f"it is {kind}, not replaced (mpish writes regular files and devices "
                                    "such as /dev/null)")
    if not stat.S_ISCHR(info.st_mode):
        return None
    # Opened by name: what is opened must be what lstat saw (another user swapping files in a
    # shared directory between the two calls), and never block (a FIFO swapped in).
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(name, flags, dir_fd=dir_fd)
    opened = os.fstat(fd)
    if (opened.st_mode, opened.st_dev, opened.st_ino, opened.st_rdev) != (
        info.st_mode, info.st_dev, info.st_ino, info.st_rdev
    ):
        os.close(fd)
        raise OSError(errno.EAGAIN, "it was replaced while it was opened; nothing was written")
    os.set_blocking(fd, True)
    return fd


def _owned_end(link: Path) -> tuple[Path, os.stat_result] | None:
    """Where a chain of links ends, with its lstat, if every link on the way is root's or ours
    (one planted by another user is never followed); None otherwise, or past 40 links."""
    path = link
    for _ in range(40):
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISLNK(info.st_mode):
            return path, info
        if foreign(info):
            return None
        path = Path(os.path.join(os.path.dirname(path), os.readlink(path)))
    return None
