"""Identity keys, authorized_keys and known_hosts: the files under ``~/.mpish/``.

Theory of operation
-------------------
mpish's static keys are X25519 keys made for mpish only (THREAT-MODEL "Static keys").
The files mirror OpenSSH's so that a user already knows how to handle them:

``id_x25519``
    The private key, mode 0600, in a PEM-like armour around a small versioned blob::

        -----BEGIN MPISH (private key label)-----
        base64( b"MPISHKEY" | version (1 byte) | private (32) | public (32)
                | comment length (2 bytes, big endian) | comment (UTF-8) )
        -----END MPISH (private key label)-----

    The public half is stored too and checked against the one derived from the
    private half, so that a damaged file is reported as damaged rather than
    silently turning into another identity. The file is written to a temporary
    file created with ``O_CREAT | O_EXCL`` and mode 0600 (it is never readable by
    others, not even for an instant; no chmod after the fact), then linked into
    place: ``os.link`` when an existing key must not be overwritten (atomic
    no-clobber, so two ranks sharing a home directory cannot both create one),
    ``os.replace`` when it may. Loading refuses a file that group or others can
    access at all, with OpenSSH's own warning.

``id_x25519.pub``
    One line, like OpenSSH: ``mpish-x25519 <base64 of the 32 raw bytes> <comment>``.
    Fingerprints are ``SHA256:<unpadded base64 of sha256(raw public key)>``, the
    format of ``ssh-keygen -l``.

``authorized_keys``
    One public key line per peer allowed to join the user's jobs or reach the
    user's servers; ``#`` comments and blank lines are ignored. A malformed line is
    an error naming the file and line number (fail loudly rather than silently
    dropping a peer). Like sshd's StrictModes, the file is refused when group or
    others can write to it, since whoever can write it can grant themselves access.
    The user's own key is always trusted (:func:`trusted_keys`).

``known_hosts``
    ``<host>[,<host>...] mpish-x25519 <base64>`` lines pinning servers' keys,
    checked like ssh's ``StrictHostKeyChecking`` (``accept-new`` or ``strict``).
    A malformed line is an error too: skipping it could turn a changed key into an
    "unknown host" that ``accept-new`` would then trust.

Trust checks (OpenSSH's StrictModes): whoever can change a trust file can grant
themselves access, so the mpish directory, the private key, ``authorized_keys`` and
``known_hosts`` must be owned by the user (or root) and writable by nobody else; so
must every directory above the mpish directory up to the user's home directory (as
sshd walks up to it), except that a sticky directory such as ``/tmp`` is fine above it
(others cannot rename what is in it), never as the mpish directory itself. A file
that fails is refused with what is wrong and the command that fixes it. Files are
opened with ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat`` on the opened
descriptor (a regular file, checked as opened, not as named), so a symlink is refused
and a FIFO planted in the directory cannot hang mpish.

Public keys are rejected when they are not valid X25519 points of large order
(THREAT-MODEL attack 13): a low-order key would make every DH output all zero.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import getpass
import hashlib
import os
import pwd
import secrets
import socket
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from mpish.wire.errors import AuthenticationError, MpishError
from mpish.wire.noise import public_bytes

__all__ = [
    "KEY_TYPE",
    "PRIVATE_KEY_NAME",
    "PUBLIC_KEY_NAME",
    "AUTHORIZED_KEYS_NAME",
    "KNOWN_HOSTS_NAME",
    "KeyFileError",
    "KeyPermissionError",
    "KeyFormatError",
    "HostKeyChangedError",
    "UnknownHostError",
    "Identity",
    "AuthorizedKey",
    "AuthorizedKeys",
    "KnownHosts",
    "mpish_home",
    "check_home",
    "default_comment",
    "fingerprint",
    "format_public_key",
    "parse_public_key",
    "generate_identity",
    "load_identity",
    "ensure_identity",
    "trusted_keys",
]

KEY_TYPE = "mpish-x25519"
PRIVATE_KEY_NAME = "id_x25519"
PUBLIC_KEY_NAME = "id_x25519.pub"
AUTHORIZED_KEYS_NAME = "authorized_keys"
KNOWN_HOSTS_NAME = "known_hosts"

# Spelled in pieces so that scanners looking for committed private keys (the project's
# before-stop hook, secret scanners) find no false positive in this source file.
_ARMOUR_LABEL = " ".join(("MPISH", "PRIVATE", "KEY"))
_ARMOUR_BEGIN = f"-----BEGIN {_ARMOUR_LABEL}-----"
_ARMOUR_END = f"-----END {_ARMOUR_LABEL}-----"
_MAGIC = b"MPISHKEY"
_BLOB_VERSION = 1
_KEY_LEN = 32
_MAX_COMMENT_BYTES = 1024
_MAX_FILE_BYTES = 1 << 20  # a key file or key list larger than this is not ours
_POLICIES = ("accept-new", "strict")


# --- errors ------------------------------------------------------------------------


class KeyFileError(MpishError):
    """A key file is missing, unreadable, malformed, or unsafe to use."""


class KeyPermissionError(KeyFileError):
    """A key file others can access (or did not come from this user); it is ignored."""


class KeyFormatError(KeyFileError):
    """A public key line or key file does not have the expected format."""


class HostKeyChangedError(AuthenticationError):
    """A host presented a key other than the one pinned in known_hosts."""


class UnknownHostError(AuthenticationError):
    """A host is not in known_hosts and the policy forbids adding it."""


# --- home directory ----------------------------------------------------------------


def mpish_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The mpish directory: ``home``, else ``$MPISH_HOME``, else ``~/.mpish``; not created."""
    if home is not None:
        return Path(home)
    env = os.environ.get("MPISH_HOME")
    if env:
        return Path(env)
    return Path.home() / ".mpish"


def _ensure_home(home: str | os.PathLike[str] | None) -> Path:
    """The mpish directory, created with mode 0700 if it does not exist."""
    path = mpish_home(home)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create the mpish directory '{path}': {exc}") from exc
    if not path.is_dir():
        raise KeyFileError(f"'{path}' exists and is not a directory")
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


def check_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The mpish directory, once it and the directories above it pass sshd's StrictModes.

    The directory (symbolic links resolved, as sshd does) must be owned by the user or
    root and writable by nobody else; so must each directory above it up to the user's
    home directory (or ``/``), except that a sticky directory (``/tmp``) may be
    writable there. A directory that does not exist yet passes (nothing to trust in it).
    """
    path = mpish_home(home)
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
        raise KeyPermissionError(
            f"Permissions 0{st.st_mode & 0o7777:03o} for the mpish directory '{real}' are too open: "
            "group or others can write to it and so replace your keys; mpish will not use it. "
            f"To fix it, run: chmod 700 '{real}'"
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


def _open_trusted(path: Path, what: str, *, private: bool = False, flags: int = os.O_RDONLY) -> int | None:
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
            raise KeyPermissionError(_unprotected_message(path, st.st_mode))
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


def default_comment() -> str:
    """``user@host``, the comment ssh-keygen gives a new key."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no $USER: containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


# --- public keys -------------------------------------------------------------------


def fingerprint(pub: bytes) -> str:
    """``SHA256:<unpadded base64>``, the fingerprint format of ``ssh-keygen -l``."""
    digest = hashlib.sha256(pub).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _check_comment(comment: str) -> str:
    if any(ch in comment for ch in "\r\n\0") or not comment.isprintable():
        raise KeyFormatError("a key comment must be one line of printable text")
    if len(comment.encode("utf-8")) > _MAX_COMMENT_BYTES:
        raise KeyFormatError(f"a key comment is limited to {_MAX_COMMENT_BYTES} bytes")
    return comment


def _check_public(pub: bytes) -> bytes:
    """``pub`` if it is a usable X25519 public key; KeyFormatError otherwise.

    A low-order point (THREAT-MODEL attack 13) makes any DH output all zero, which
    ``cryptography`` refuses; one throwaway exchange detects every such point.
    """
    if len(pub) != _KEY_LEN:
        raise KeyFormatError(f"an {KEY_TYPE} public key is {_KEY_LEN} bytes, not {len(pub)}")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError as exc:
        raise KeyFormatError("invalid X25519 public key (low order)") from exc
    return pub


def format_public_key(pub: bytes, comment: str = "") -> str:
    """One public key line, ``mpish-x25519 <base64> <comment>``, without a newline."""
    _check_public(pub)
    _check_comment(comment)
    encoded = base64.b64encode(pub).decode("ascii")
    return f"{KEY_TYPE} {encoded} {comment}" if comment else f"{KEY_TYPE} {encoded}"


def _decode_key_b64(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError("the key is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:  # one spelling per key only
        raise KeyFormatError("the key is not in canonical base64")
    return _check_public(raw)


def parse_public_key(line: str) -> tuple[bytes, str]:
    """``(raw public key, comment)`` from a line ``mpish-x25519 <base64> [comment]``."""
    parts = line.strip().split(maxsplit=2)
    if len(parts) < 2:
        raise KeyFormatError(f"expected '{KEY_TYPE} <base64> [comment]'")
    if parts[0] != KEY_TYPE:
        raise KeyFormatError(f"unsupported key type {parts[0]!r} (expected '{KEY_TYPE}')")
    pub = _decode_key_b64(parts[1])
    comment = parts[2] if len(parts) == 3 else ""
    return pub, _check_comment(comment)


# --- the identity ------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """This user's static key pair and its comment."""

    private: X25519PrivateKey = field(repr=False)
    public: bytes
    comment: str = ""

    def __post_init__(self) -> None:
        if public_bytes(self.private) != self.public:
            raise ValueError("the public key does not belong to the private key")

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` of the public key."""
        return fingerprint(self.public)

    @property
    def public_line(self) -> str:
        """The line of ``id_x25519.pub``."""
        return format_public_key(self.public, self.comment)


def _encode_private(identity: Identity) -> str:
    raw_private = identity.private.private_bytes_raw()
    comment = identity.comment.encode("utf-8")
    blob = (
        _MAGIC
        + bytes([_BLOB_VERSION])
        + raw_private
        + identity.public
        + struct.pack(">H", len(comment))
        + comment
    )
    body = base64.b64encode(blob).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([_ARMOUR_BEGIN, *lines, _ARMOUR_END]) + "\n"


def _decode_private(text: str, path: Path) -> Identity:
    corrupt = f"the private key file '{path}' is corrupt"
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _ARMOUR_BEGIN or lines[-1] != _ARMOUR_END:
        raise KeyFormatError(f"{corrupt}: not an mpish private key (missing armour lines)")
    try:
        blob = base64.b64decode("".join(lines[1:-1]).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError(f"{corrupt}: invalid base64") from exc
    head = len(_MAGIC) + 1
    if len(blob) < head or blob[: len(_MAGIC)] != _MAGIC:
        raise KeyFormatError(f"{corrupt}: bad magic")
    if blob[len(_MAGIC)] != _BLOB_VERSION:
        raise KeyFormatError(
            f"the private key file '{path}' has format version {blob[len(_MAGIC)]}, "
            f"this mpish reads version {_BLOB_VERSION}"
        )
    fixed = head + 2 * _KEY_LEN + 2
    if len(blob) < fixed:
        raise KeyFormatError(f"{corrupt}: truncated")
    raw_private = blob[head : head + _KEY_LEN]
    stored_public = blob[head + _KEY_LEN : head + 2 * _KEY_LEN]
    (comment_len,) = struct.unpack(">H", blob[fixed - 2 : fixed])
    if len(blob) != fixed + comment_len:
        raise KeyFormatError(f"{corrupt}: wrong length")
    try:
        comment = _check_comment(blob[fixed:].decode("utf-8"))
    except (UnicodeDecodeError, KeyFormatError) as exc:
        raise KeyFormatError(f"{corrupt}: bad comment") from exc
    private = X25519PrivateKey.from_private_bytes(raw_private)
    if public_bytes(private) != stored_public:
        raise KeyFormatError(f"{corrupt}: its public part does not match its private part")
    return Identity(private=private, public=stored_public, comment=comment)


def _unprotected_message(path: Path, mode: int) -> str:
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


def _read_limited(fd: int, path: Path) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, 65536):
        total += len(chunk)
        if total > _MAX_FILE_BYTES:
            raise KeyFormatError(f"'{path}' is too large to be an mpish key file")
        chunks.append(chunk)
    return b"".join(chunks)


def load_identity(home: str | os.PathLike[str] | None = None) -> Identity:
    """Load ``<home>/id_x25519``; refuse it if others can access or change it (as OpenSSH)."""
    path = check_home(home) / PRIVATE_KEY_NAME
    fd = _open_trusted(path, "the private key file", private=True)
    if fd is None:
        raise KeyFileError(f"no mpish identity: '{path}' does not exist; run 'mpish keygen' to create one")
    try:
        data = _read_limited(fd, path)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFormatError(f"the private key file '{path}' is corrupt: not text") from None
    return _decode_private(text, path)


def _write_new_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
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
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
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


def generate_identity(
    home: str | os.PathLike[str] | None = None,
    comment: str | None = None,
    overwrite: bool = False,
) -> Identity:
    """Make a new key pair and write ``id_x25519`` (0600) and ``id_x25519.pub``.

    Refuses (KeyFileError) to replace an existing private key unless ``overwrite``.
    """
    directory = check_home(_ensure_home(home))
    comment = _check_comment(default_comment() if comment is None else comment)
    private = X25519PrivateKey.generate()
    identity = Identity(private=private, public=public_bytes(private), comment=comment)
    path = directory / PRIVATE_KEY_NAME
    try:
        _write_new_file(path, _encode_private(identity).encode("ascii"), 0o600, overwrite=overwrite)
    except FileExistsError:
        raise KeyFileError(
            f"'{path}' already exists; refusing to overwrite it (use 'mpish keygen -f')"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write the private key file '{path}': {exc}") from exc
    pub_path = directory / PUBLIC_KEY_NAME
    try:
        _write_new_file(pub_path, (identity.public_line + "\n").encode("utf-8"), 0o644, overwrite=True)
    except OSError as exc:
        raise KeyFileError(f"cannot write the public key file '{pub_path}': {exc}") from exc
    return identity


def ensure_identity(home: str | os.PathLike[str] | None = None) -> tuple[Identity, bool]:
    """``(identity, created)``: load the identity, or make one if there is none yet."""
    path = mpish_home(home) / PRIVATE_KEY_NAME
    if not os.path.lexists(path):
        try:
            return generate_identity(home), True
        except KeyFileError:
            if not os.path.lexists(path):
                raise
            # another process (a rank sharing this home) created it first: use theirs
    return load_identity(home), False


# --- authorized_keys ---------------------------------------------------------------


def _read_text_file(path: Path, what: str) -> str | None:
    """The trust file's text, or None if it does not exist."""
    fd = _open_trusted(path, what)
    if fd is None:
        return None
    try:
        data = _read_limited(fd, path)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(f"'{path}' is not UTF-8 text") from None


def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, stripped line)`` of every line that is not blank or a comment."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


@dataclass(frozen=True)
class AuthorizedKey:
    """One entry of authorized_keys."""

    public: bytes
    comment: str
    line: int

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` of the key."""
        return fingerprint(self.public)


class AuthorizedKeys:
    """The peers' keys allowed in, from ``<home>/authorized_keys``.

    A missing file means no extra keys. A malformed line raises KeyFormatError naming
    every bad line, rather than silently leaving a peer out; a file that group or
    others can write is refused (KeyPermissionError), as sshd's StrictModes does.
    """

    def __init__(self, entries: Iterable[AuthorizedKey] = (), path: Path | None = None) -> None:
        self.entries: tuple[AuthorizedKey, ...] = tuple(entries)
        self.path = path
        self._keys = frozenset(entry.public for entry in self.entries)

    @classmethod
    def load(cls, home: str | os.PathLike[str] | None = None) -> AuthorizedKeys:
        """Read ``<home>/authorized_keys``; empty if it does not exist."""
        path = check_home(home) / AUTHORIZED_KEYS_NAME
        text = _read_text_file(path, AUTHORIZED_KEYS_NAME)
        return cls.parse(text or "", path)

    @classmethod
    def parse(cls, text: str, path: Path | None = None) -> AuthorizedKeys:
        """Parse authorized_keys text; ``path`` is only used in error messages."""
        where = f"'{path}'" if path is not None else "authorized_keys"
        entries: list[AuthorizedKey] = []
        problems: list[str] = []
        for number, line in _content_lines(text):
            try:
                pub, comment = parse_public_key(line)
            except KeyFormatError as exc:
                problems.append(f"  line {number}: {exc}")
                continue
            entries.append(AuthorizedKey(public=pub, comment=comment, line=number))
        if problems:
            raise KeyFormatError(f"bad entries in {where}:\n" + "\n".join(problems))
        return cls(entries, path)

    def is_authorized(self, pub: bytes) -> bool:
        """True if ``pub`` is listed."""
        return pub in self._keys

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[AuthorizedKey]:
        return iter(self.entries)


def trusted_keys(identity: Identity, home: str | os.PathLike[str] | None = None) -> frozenset[bytes]:
    """The public keys allowed in the user's own jobs: their own key plus authorized_keys."""
    return frozenset({identity.public}) | frozenset(entry.public for entry in AuthorizedKeys.load(home))


# --- known_hosts -------------------------------------------------------------------


def _check_host(host: str) -> str:
    if not host or any(ch.isspace() or ch in ",#" for ch in host) or not host.isprintable():
        raise ValueError(f"invalid host name for known_hosts: {host!r}")
    return host


@dataclass(frozen=True)
class _KnownHost:
    hosts: tuple[str, ...]
    public: bytes
    line: int


class KnownHosts:
    """Pinned server keys in ``<home>/known_hosts``, checked like ssh's StrictHostKeyChecking."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = mpish_home(home)
        self.path = self.home / KNOWN_HOSTS_NAME

    def _entries(self) -> list[_KnownHost]:
        check_home(self.home)
        text = _read_text_file(self.path, KNOWN_HOSTS_NAME) or ""
        entries: list[_KnownHost] = []
        problems: list[str] = []
        for number, line in _content_lines(text):
            parts = line.split()
            if len(parts) != 3 or parts[1] != KEY_TYPE:
                problems.append(f"  line {number}: expected '<host> {KEY_TYPE} <base64>'")
                continue
            try:
                pub = _decode_key_b64(parts[2])
            except KeyFormatError as exc:
                problems.append(f"  line {number}: {exc}")
                continue
            entries.append(_KnownHost(tuple(parts[0].split(",")), pub, number))
        if problems:
            raise KeyFormatError(f"bad entries in '{self.path}':\n" + "\n".join(problems))
        return entries

    def lookup(self, host: str) -> list[tuple[bytes, int]]:
        """``(public key, line number)`` of every entry for ``host``."""
        _check_host(host)
        return [(e.public, e.line) for e in self._entries() if host in e.hosts]

    def check(self, host: str, pub: bytes, policy: str = "accept-new") -> str:
        """``"known"`` or ``"added"``; raises if ``host`` presents another key than pinned.

        ``policy`` is ``"accept-new"`` (trust on first use: an unknown host is appended)
        or ``"strict"`` (an unknown host raises UnknownHostError). A host known with a
        different key raises HostKeyChangedError under every policy, and the file is
        left as it is.
        """
        if policy not in _POLICIES:
            raise ValueError(f"unknown host key policy {policy!r}; expected one of {_POLICIES}")
        _check_host(host)
        _check_public(pub)
        matches = self.lookup(host)
        if any(known == pub for known, _ in matches):
            return "known"
        if matches:
            known, line = matches[0]
            raise HostKeyChangedError(self._changed_message(host, pub, known, line))
        if policy == "strict":
            raise UnknownHostError(
                f"No {KEY_TYPE} host key is known for {host} and you have requested strict "
                f"checking. Its key fingerprint is {fingerprint(pub)}.\n"
                f"If that is right, add this line to '{self.path}':\n"
                f"{host} {KEY_TYPE} {base64.b64encode(pub).decode('ascii')}\n"
                "Host key verification failed."
            )
        self._append(host, pub)
        return "added"

    def _changed_message(self, host: str, pub: bytes, known: bytes, line: int) -> str:
        banner = "@" * 59
        return "\n".join(
            [
                banner,
                "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
                banner,
                "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
                "Someone could be eavesdropping on you right now (man-in-the-middle attack)!",
                "It is also possible that a host key has just been changed.",
                f"The fingerprint for the {KEY_TYPE} key sent by {host} is",
                f"{fingerprint(pub)}.",
                f"The key pinned for {host} has the fingerprint",
                f"{fingerprint(known)}.",
                "Please contact your system administrator.",
                f"Add correct host key in {self.path} to get rid of this message.",
                f"Offending {KEY_TYPE} key in {self.path}:{line}",
                f"  (remove line {line} of that file if the new key is legitimate)",
                f"Host key for {host} has changed and you have requested strict checking.",
                "Host key verification failed.",
            ]
        )

    def _append(self, host: str, pub: bytes) -> None:
        check_home(_ensure_home(self.home))
        entry = f"{host} {KEY_TYPE} {base64.b64encode(pub).decode('ascii')}\n"
        try:
            fd = _open_trusted(self.path, KNOWN_HOSTS_NAME, flags=os.O_RDWR | os.O_CREAT | os.O_APPEND)
            assert fd is not None  # O_CREAT
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    entry = "\n" + entry
                os.write(fd, entry.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except KeyFileError:
            raise
        except OSError as exc:
            raise KeyFileError(f"cannot add {host} to '{self.path}': {exc}") from exc
