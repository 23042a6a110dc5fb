"""Gathered output (``clush -b``): each server's stream kept until the end, identical ones once.

Each server's stdout (and stderr) is an :class:`Gathered`: a view of a :class:`Store`, a
``SpooledTemporaryFile`` (in memory up to 1 MiB, then on disk). Every server of a stream
starts on the same store; a server's bytes are compared with what the store holds at its
offset, and only bytes past the store's end are written (the server that is ahead extends
it). A server whose bytes differ from the store's moves to a store of its own, with a copy
of the prefix it shared. So 40 hosts printing the same 20 MB keep 20 MB, not 800 MB, and
the gather limit (grouping.py) counts *distinct* bytes, as clush's MsgTree keeps identical
output once: :meth:`Gathered.write` returns the bytes newly stored.

A SHA-256 of each server's bytes groups identical outputs at the end (two servers on one
store at different offsets have different outputs: one is a prefix of the other).

Outputs that differ only by a missing final newline are one output where the display ends
the last line anyway (a header's block, ``-bL``'s lines, stderr's labelled lines): shown
apart, ``printf x`` and ``echo x`` were two blocks showing the same ``x``, which clush -b
gathers (:meth:`Gathered.shown_digest`). Where the bytes are shown as they are, they stay
apart: ``--diff`` shows the missing newline, ``-L`` and ``-N`` show each server's lines,
one target (raw) and ``--json`` give each server's exact bytes, and none of these gather.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import IO

SPOOL_IN_MEMORY = 1 << 20
SHOW_PIECE = 1 << 16  # gathered output is read back in pieces this big


class Stopped(Exception):
    """The person stopped the display of gathered output (Ctrl-C)."""


class Store:
    """The bytes one or more servers wrote identically, so far."""

    def __init__(self) -> None:
        import tempfile  # at the first output: a command that prints nothing never needs it (~3 ms)

        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self.size = 0
        self.users = 0

    def read(self, offset: int, size: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(size)

    def append(self, data: bytes | memoryview) -> None:
        self.file.seek(self.size)
        self.file.write(data)
        self.size += len(data)

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0:
            self.file.close()


def _common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix (bisection over memcmp'd slices)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class Gathered:
    """One server's stream: its bytes (in ``store``, up to ``size``), digest and last byte."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.store.users += 1
        self.digest = hashlib.sha256()
        self.size = 0
        self.last = b""  # the last byte written
        self.escaped = False  # it held an escape sequence: what follows it on a terminal resets first
        self.start = 0  # where the display starts (keep_tail)

    def write(self, data: bytes) -> int:
        """Add ``data``; the number of bytes newly stored (distinct output)."""
        if not data:
            return 0
        self.digest.update(data)
        stored, held = 0, min(len(data), self.store.size - self.size)
        if held > 0:
            same = self.store.read(self.size, held)
            if same != data[:held]:  # it differs from the others here: a store of its own
                held = _common_prefix(same, data)
                stored = self._own(self.size + held)
        if held < len(data):
            self.store.append(memoryview(data)[held:])
            stored += len(data) - held
        self.size += len(data)
        self.last = data[-1:]
        self.escaped = self.escaped or b"\x1b" in data
        return stored

    def _own(self, prefix: int) -> int:
        """Move to a new store holding a copy of the first ``prefix`` bytes; their count."""
        old, self.store = self.store, Store()
        self.store.users += 1
        for offset in range(0, prefix, SPOOL_IN_MEMORY):
            self.store.append(old.read(offset, min(SPOOL_IN_MEMORY, prefix - offset)))
        old.release()
        return prefix

    def shown_digest(self) -> bytes:
        """The digest of the output as a gathered display shows it: ended by a newline (copy_to),
        so ``x`` and ``x`` + newline are one output there, as clush -b gathers them."""
        if self.last == b"\n" or not self.size:
            return self.digest.digest()
        shown = self.digest.copy()
        shown.update(b"\n")
        return shown.digest()

    def chunks(self, piece: int = SHOW_PIECE) -> Iterator[bytes]:
        """Its bytes from ``start``, a piece at a time."""
        offset = self.start
        while offset < self.size:
            data = self.store.read(offset, min(piece, self.size - offset))
            if not data:
                return
            offset += len(data)
            yield data

    def lines(self) -> Iterator[bytes]:
        """Its lines from ``start``, each with its newline (the last one maybe without)."""
        parts: list[bytes] = []  # a line's pieces so far (a long line spans chunks)
        for chunk in self.chunks():
            begin = 0
            while (end := chunk.find(b"\n", begin)) >= 0:
                parts.append(chunk[begin : end + 1])
                yield b"".join(parts)
                parts, begin = [], end + 1
            if begin < len(chunk):
                parts.append(chunk[begin:])
        if parts:
            yield b"".join(parts)

    def copy_to(self, out: IO[bytes], stop: Callable[[], bool]) -> None:
        """The bytes, then a newline if they do not end with one (as clush does); ``stop()``
        is asked between pieces (a person's Ctrl-C ends a long display)."""
        for chunk in self.chunks():
            out.write(chunk)
            if stop():
                raise Stopped
        if self.size and self.last != b"\n":
            out.write(b"\n")

    def keep_tail(self, limit: int, lines: int | None = None) -> int:
        """Show only about the last ``limit`` bytes, from a line's start, and of them at most the
        last ``lines`` lines; the bytes left out."""
        start = 0
        if self.size > limit:
            head = self.store.read(self.size - limit - 1, limit + 1)  # a byte before: a line may start there
            newline = head.find(b"\n")
            start = self.size - limit + (newline if 0 <= newline < limit else 0)
        if lines is not None:
            tail = self.store.read(start, self.size - start)
            at = len(tail) - 1 if tail.endswith(b"\n") else len(tail)  # a final newline ends the last line
            for _ in range(lines):
                at = tail.rfind(b"\n", 0, at)
                if at < 0:
                    break
            start += at + 1 if at >= 0 else 0
        self.start = start
        return start

    def close(self) -> None:
        self.store.release()


NO_NEWLINE = b"\\ No newline at end of file\n"


def unified_diff(old: list[bytes], new: list[bytes], old_name: str, new_name: str) -> Iterator[bytes]:
    """``--diff``: the lines of ``new`` against ``old`` (each with its newline, the last one maybe
    without) as GNU ``diff -u`` prints them, so ``patch`` applies it: a last line without its
    newline differs from the same line with one, and is followed by diff's marker, which no
    hunk count includes (counted as a removed line, the hunk was malformed)."""
    import difflib  # --diff only

    for line in difflib.diff_bytes(difflib.unified_diff, old, new, old_name.encode(), new_name.encode()):
        yield line if line.endswith(b"\n") else line + b"\n" + NO_NEWLINE
