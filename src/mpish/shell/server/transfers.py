"""A server's side of ``put`` and ``get``: the file being written or read, its digest, its verdict.

No messages are sent here: the loop (:mod:`.loop`) sends what these return, within its
credit. Part files and cp naming: :mod:`mpish.shell.transfer`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

from .. import protocol as p
from ..transfer import PartFile, destination, umask


def resolve(path: str, cwd: str) -> Path:
    """``path`` as the shell would read it: ``~`` expanded, relative to its cwd."""
    target = Path(os.path.expanduser(path))
    return target if target.is_absolute() else Path(cwd or os.getcwd()) / target


class Put:
    """A file being received: written to a part file, committed once verified."""

    def __init__(self, start: p.PutStart, cwd: str) -> None:
        name = Path(start.name).name or "unnamed"
        self.xfer_id = start.xfer_id
        self.final = destination(resolve(start.path, cwd), name, start.path.endswith(("/", "/.")))
        self.expected = start.size
        self.mode = start.mode
        self.size = 0
        self.digest: Any = hashlib.sha256()
        self.error = ""
        self.part: PartFile | None = None
        try:
            self.part = PartFile(self.final)
        except OSError as exc:
            self.error = f"cannot write {self.final}: {exc.strerror}"

    def write(self, data: bytes) -> None:
        if not self.error and self.part is not None:
            try:
                self.part.write(data)
            except OSError as exc:
                self.error = f"cannot write {self.final}: {exc.strerror}"
        self.digest.update(data)
        self.size += len(data)

    def finish(self, end: p.PutEnd) -> p.PutDone:
        """The verdict: the file committed under its name, or discarded with the reason."""
        digest = self.digest.digest()
        error = self.error
        if not error and end.aborted:
            error = "the transfer was aborted"
        if not error and self.size != self.expected:
            error = f"checksum mismatch for {self.final}"
        if self.part is not None:
            if error:
                self.part.discard()
            else:  # verified again on the part file's own descriptor (transfer.py)
                error = self.part.commit(end.sha256, self.expected, self.mode & ~umask())
            self.part = None
        return p.PutDone(end.xfer_id, self.size, digest, error)

    def discard(self) -> None:
        if self.part is not None:
            self.part.discard()
            self.part = None


class Get:
    """A file being sent, chunk by chunk, as credit allows."""

    def __init__(self, start: p.GetStart, cwd: str) -> None:
        self.xfer_id = start.xfer_id
        self.path = resolve(start.path, cwd)
        self.error = ""
        self.size = 0
        self.interrupted = False
        self.digest: Any = hashlib.sha256()
        self.handle: IO[bytes] | None = None
        try:
            self.handle = self.path.open("rb")
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"

    def read(self, credit: int) -> bytes:
        """The next chunk (at most ``credit`` bytes); b"" at the end, on error or interrupt."""
        if self.handle is None or self.interrupted or self.error or credit <= 0:
            return b""
        try:
            data = self.handle.read(min(p.CHUNK, credit))
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"
            return b""
        self.digest.update(data)
        self.size += len(data)
        return data

    @property
    def finished(self) -> bool:
        """Nothing more to send (read() returned b"" with credit left, or it cannot go on)."""
        return self.handle is None or self.interrupted or bool(self.error)

    def end(self) -> p.GetEnd:
        self.close()
        error = self.error or ("interrupted" if self.interrupted else "")
        return p.GetEnd(self.xfer_id, self.size, self.digest.digest(), error)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
