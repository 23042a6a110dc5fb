"""Files received by put (on a server) and get (on the console): safe part files, cp naming.

A file being received is written to a part file beside its destination, created with an
unpredictable name, ``O_EXCL|O_NOFOLLOW`` and mode 0600 (:func:`tempfile.mkstemp`, or
the same by hand inside a directory descriptor for a tree, :mod:`mpish.shell.tree`), so
another user who can write to that directory can neither plant a symlink that the
transfer would follow nor a file that it would fill and then own. When the last byte
has arrived, the SHA-256 is computed again over what the file descriptor we own holds,
the final mode is set on that descriptor, and only then is the part file renamed over
the destination (a rename replaces a planted link, never follows it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

READ_BACK = 1 << 20
PART_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def destination(target: Path, name: str, as_directory: bool) -> Path:
    """Where a file called ``name`` goes for a cp/scp target: into it if it is a directory."""
    if as_directory or target.is_dir():
        return target / name
    return target


def part_name(name: str) -> str:
    """An unpredictable name for the part file of ``name`` (short enough for NAME_MAX)."""
    return f".{name[:96]}.{secrets.token_hex(6)}.mpish-part"


class PartFile:
    """A file being received (see the module doc); ``commit`` or ``discard`` it.

    ``dir_fd``: the part file and ``final`` are the name ``final.name`` inside that open
    directory (a tree's, never reached through a link); else ``final`` is a path."""

    def __init__(self, final: Path, dir_fd: int | None = None) -> None:
        self.final = final
        self.dir_fd = dir_fd
        self.size = 0
        if dir_fd is None:
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
        while view:
            view = view[os.write(self.fd, view) :]
        self.size += len(data)

    def commit(self, sha256: bytes, size: int, mode: int) -> str:
        """Verify what the descriptor holds, set ``mode``, rename; an error text or ""."""
        try:
            digest, offset = hashlib.sha256(), 0
            while chunk := os.pread(self.fd, READ_BACK, offset):
                digest.update(chunk)
                offset += len(chunk)
            if offset != size or digest.digest() != sha256:
                self.discard()
                return f"checksum mismatch for {self.final}"
            os.fchmod(self.fd, mode & 0o7777)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.part, self.target, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError as exc:
            self.discard()
            return f"cannot write {self.final}: {exc.strerror}"
        return ""

    def discard(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.part, dir_fd=self.dir_fd)
