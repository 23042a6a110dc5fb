"""``--json``: one JSON object per server per line, its output kept on disk until it is written.

Theory of operation
-------------------
Every server's record holds its whole stdout and stderr as JSON strings, so nothing can be
written before the server's result came. Its output is kept until then in a
:class:`tempfile.SpooledTemporaryFile` per server and stream (in memory up to
:data:`IN_MEMORY` bytes, then an unlinked file in TMPDIR), and the record is written
piece by piece: the fields before ``stdout`` as ``json.dumps`` writes them, then each
stream read back :data:`PIECE` bytes at a time, decoded by one incremental UTF-8 decoder
(a character cut between two pieces is not replaced) and escaped by ``json.dumps``, then the
fields after. So a command that prints gigabytes costs a piece of memory, not the output
twice over (a clush user's review: 441 MB of RSS for 200 MB of output on two hosts, held
in memory, then copied, decoded and encoded whole).

Output is decoded as UTF-8 with U+FFFD for invalid bytes (JSON carries text only). A spool
that cannot be written (a full TMPDIR) takes no more; what can be read back of it is
written, the record stays whole JSON and its ``error`` says the output was cut.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import tempfile
from typing import IO

from .grouping import _Sink
from .names import ServerNames
from .protocol import STDERR, STDOUT

IN_MEMORY = 1 << 20  # bytes of a stream kept in memory before it goes to a temporary file
PIECE = 1 << 20  # bytes read back, decoded and escaped at a time


class JsonSink(_Sink):
    """One JSON object per server per line, in rank order, the same fields over MPI and
    ssh: rank, host, exit, signal, stdout, stderr, seconds, timed_out; ``error`` only
    when the server could not run the command (a note, such as a restarted shell, is not
    an error and is left out). Output is kept as the module doc says."""

    def __init__(self, out: IO[bytes], names: ServerNames | None = None) -> None:
        super().__init__(names)
        self.out = out
        self._data: dict[tuple[int, int], IO[bytes]] = {}
        self._cut: dict[int, str] = {}  # rank -> why its output was cut (a full TMPDIR)

    def output(self, rank: int, stream: int, data: bytes) -> None:
        if rank in self._cut:
            return
        spool = self._data.get((rank, stream))
        if spool is None:  # kept open until finish() writes it (closed there)
            spool = tempfile.SpooledTemporaryFile(IN_MEMORY, prefix="mpish-json-")  # noqa: SIM115
            self._data[rank, stream] = spool
        try:
            spool.write(data)
        except OSError as exc:
            self._cut[rank] = f"its output was cut here: cannot keep it ({exc.strerror or exc}, in TMPDIR)"

    def finish(self) -> None:
        for rank in sorted(self.results):
            result = self.results[rank]
            record = self.names.record(result)
            record.update(exit=result.exit, signal=result.signal or None)
            head = json.dumps(record)[:-1]  # without its "}": the streams follow
            self.out.write(head.encode())
            for name, stream in (("stdout", STDOUT), ("stderr", STDERR)):
                self.out.write(f', "{name}": "'.encode())
                why = self._write_text(self._data.pop((rank, stream), None))
                if why:
                    self._cut.setdefault(rank, f"its {name} could not be read back ({why}, in TMPDIR)")
                self.out.write(b'"')
            tail: dict[str, object] = {"seconds": round(result.seconds, 6), "timed_out": result.timed_out}
            error = "; ".join(why for why in (result.error, self._cut.pop(rank, "")) if why)
            if error:
                tail["error"] = error
            self.out.write(b", " + json.dumps(tail)[1:].encode() + b"\n")
        self.out.flush()

    def _write_text(self, spool: IO[bytes] | None) -> str:
        """A stream's bytes as the inside of a JSON string, a piece at a time (module doc); why
        the rest could not be read back, if it could not (a full TMPDIR), else ""."""
        if spool is None:
            return ""
        decoder, why = codecs.getincrementaldecoder("utf-8")("replace"), ""
        try:
            spool.seek(0)
        except OSError as exc:
            why = f"{exc.strerror or exc}"
        while not why:  # (the output's own errors are PipeGuard's: not caught here)
            try:
                piece = spool.read(PIECE)
            except OSError as exc:
                piece, why = b"", f"{exc.strerror or exc}"
            text = decoder.decode(piece, final=not piece)
            if text:
                self.out.write(json.dumps(text)[1:-1].encode())
            if not piece:
                break
        with contextlib.suppress(OSError):  # (a full TMPDIR: the buffer fails once more)
            spool.close()
        return why
