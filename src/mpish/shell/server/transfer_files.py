"""The files and trees a server is receiving (put) or sending (get), with their digests
and verdicts: :class:`Put`, :class:`Get`, :class:`PutTree`, :class:`GetTree`.

Loaded at a session's first transfer (by :class:`.transfers.ServerTransfers`), not at the
server's start: with :mod:`mpish.shell.transfer`, :mod:`mpish.shell.tree` and pathlib they
cost ~3 ms of CPU on every host of every ``mpish ssh`` session, most of which never
transfer anything. Part files and cp naming: :mod:`mpish.shell.transfer`; trees:
:mod:`mpish.shell.tree`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from .. import protocol as p
from ..transfer import (
    PartFile,
    cannot_write,
    changed,
    destination,
    new_digest,
    open_regular,
    umask,
)
from ..tree import TreeReader, TreeWriter, tree_destination


def resolve(path: str, cwd: str) -> Path:
    """``path`` as the shell would read it: ``~`` expanded, relative to its cwd."""
    target = Path(os.path.expanduser(path))
    return target if target.is_absolute() else Path(cwd or os.getcwd()) / target


class Put:
    """A file being received: written to a part file, committed once verified."""

    def __init__(self, start: p.PutStart, cwd: str, verify: bool = True) -> None:
        name = Path(start.name).name or "unnamed"
        self.xfer_id = start.xfer_id
        self.final = resolve(start.path, cwd)
        self.mode = start.mode
        self.times = (start.atime_ns, start.mtime_ns) if start.preserve else None  # -p
        self.size = 0
        self.error = ""
        self.part: PartFile | None = None
        try:
            self.final = destination(self.final, name, start.path.endswith(("/", "/.")))
            self.part = PartFile(self.final, verify=verify)
        except OSError as exc:
            self.error = cannot_write(self.final, exc)  # of its directory when that is the cause

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if not self.error and self.part is not None:
            try:
                self.part.write(data)  # and its digest
            except OSError as exc:
                self.error = cannot_write(self.final, exc)

    def finish(self, end: p.PutEnd) -> p.PutDone:
        """The verdict: the file committed under its name, or discarded with the reason."""
        error = self.error
        if not error and end.aborted:
            error = "the transfer was stopped on the console's side (interrupted); nothing was written"
        if not error and self.size != end.size:  # the count sent, not PutStart's stat size (/proc)
            error = f"checksum mismatch for {self.final}"
        digest = b""
        if self.part is not None:
            digest = self.part.digest.digest()
            if error:
                self.part.discard()
            else:  # the digest of what was written, and the size the descriptor holds (transfer.py)
                mode = self.mode if self.times is not None else self.mode & ~umask()  # -p: exactly
                error = self.part.commit(end.sha256, end.size, mode, self.times)
            self.part = None
        return p.PutDone(end.xfer_id, self.size, digest, error)

    def discard(self) -> None:
        if self.part is not None:
            self.part.discard()
            self.part = None


class PutTree:
    """A tree being received (:put -r), rebuilt by a :class:`~mpish.shell.tree.TreeWriter`."""

    def __init__(self, start: p.TreePut, cwd: str) -> None:
        self.xfer_id = start.xfer_id
        target = resolve(start.path, cwd)  # into: its parent must exist, or the root entry fails
        final = target / start.name if start.into else tree_destination(target, start.name)
        self.writer = TreeWriter(final, 0 if start.preserve else umask(), start.preserve)  # -p: exact modes
        self.owed = 0  # credit not yet returned

    def finish(self, end: p.TreeEnd) -> p.PutDone:
        return p.PutDone(end.xfer_id, self.writer.bytes, b"", self.writer.finish(end.aborted))

    def discard(self) -> None:
        self.writer.close()


class Get:
    """A file being sent, chunk by chunk, as credit allows."""

    def __init__(self, start: p.GetStart, cwd: str, verify: bool = True) -> None:
        self.xfer_id = start.xfer_id
        self.path = resolve(start.path, cwd)
        self.error = ""
        self.size = 0
        self.interrupted = False
        self.digest: Any = new_digest(verify)
        self.handle: IO[bytes] | None = None
        self.mode = 0  # the file's permission bits, for the copy (GetEnd.mode)
        self.times = (0, 0)  # and its times (for :get -p)
        try:
            self.handle = open_regular(self.path)
            self.opened = os.fstat(self.handle.fileno())
            self.mode = self.opened.st_mode & 0o777
            self.times = (self.opened.st_atime_ns, self.opened.st_mtime_ns)
        except IsADirectoryError:
            self.error = f"{self.path} is a directory (use :get -r)"
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"

    def next_message(self, credit: int) -> p.Chunk | None:
        """The next chunk (at most ``credit`` bytes); None at the end, on error or interrupt."""
        data = self.read(credit)
        return p.Chunk(data) if data else None

    def read(self, credit: int) -> bytes:
        """The next bytes (at most ``credit``); b"" at the end, on error or interrupt."""
        if self.handle is None or self.interrupted or self.error or credit <= 0:
            return b""
        try:
            data = self.handle.read(min(p.CHUNK, credit))
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"
            return b""
        if not data:  # the end: a file written to meanwhile may hold old and new bytes mixed
            self.error = changed(self.handle.fileno(), self.opened, self.path)
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
        return p.GetEnd(self.xfer_id, self.size, self.digest.digest(), error, self.mode, *self.times)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class GetTree:
    """A tree being sent (:get -r): its entries and files' chunks, as credit allows."""

    def __init__(self, start: p.TreeGet, cwd: str) -> None:
        self.xfer_id = start.xfer_id
        self.path = resolve(start.path, cwd)
        self.error = ""
        self.reader: TreeReader | None = None
        self.sent = 0
        self._interrupted = False
        try:
            self.reader = TreeReader(self.path, self.xfer_id)
        except OSError as exc:
            self.error = f"cannot read {self.path}: {exc.strerror}"

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    @interrupted.setter
    def interrupted(self, value: bool) -> None:
        self._interrupted = value
        if self.reader is not None:
            self.reader.interrupted = value

    @property
    def finished(self) -> bool:
        return self.reader is None

    def next_message(self, credit: int) -> object | None:
        if self.reader is None or credit <= 0:
            return None
        message = self.reader.next(credit)
        if message is None:
            self.sent = self.reader.bytes
            self.close()
        return message

    def end(self) -> p.GetEnd:
        self.close()
        error = self.error or ("interrupted" if self._interrupted else "")
        return p.GetEnd(self.xfer_id, self.sent, b"", error, 0)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
