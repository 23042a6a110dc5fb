"""Files received by put (on a server) and get (on the console): safe part files, cp naming.

A file being received is written to a part file beside its destination, created with an
unpredictable name, ``O_EXCL|O_NOFOLLOW`` and mode 0600 (:func:`tempfile.mkstemp`), so
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
import tempfile
from pathlib import Path

READ_BACK = 1 << 20


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def destination(target: Path, name: str, as_directory: bool) -> Path:
    """Where a file called ``name`` goes for a cp/scp target: into it if it is a directory."""
    if as_directory or target.is_dir():
        return target / name
    return target


class PartFile:
    """A file being received (see the module doc); ``commit`` or ``discard`` it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".mpish-part", dir=final.parent)
        self.fd = fd
        self.path = Path(name)
        self.size = 0

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
            os.replace(self.path, self.final)
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
            self.path.unlink()
