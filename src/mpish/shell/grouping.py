"""Where command output goes on the console: grouped (like ``clush -b``), live, or JSON.

Grouping keeps memory bounded: each rank's stdout and stderr go to a
``SpooledTemporaryFile`` (in memory up to 1 MiB, then on disk) while a SHA-256 of each
is computed; at the end ranks with identical (stdout, stderr) digests are printed once
under their rank set.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from .protocol import STDERR, STDOUT
from .ranks import format_ranks

SPOOL_IN_MEMORY = 1 << 20
LIVE_LINE_LIMIT = 1 << 16  # a live line longer than this is printed in pieces


@dataclass(frozen=True)
class Result:
    """How a command ended on one rank."""

    rank: int
    host: str
    exit: int
    signal: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    error: str = ""
    peak_rss_kib: int = 0


class OutputSink(Protocol):
    """Receives output chunks as they arrive and each rank's result."""

    def output(self, rank: int, stream: int, data: bytes) -> None: ...

    def done(self, result: Result) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class Style:
    """Terminal styling: colours only on a terminal and when NO_COLOR is not set."""

    color: bool = False

    @classmethod
    def for_stream(cls, stream: Any) -> Style:
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        return cls(color=tty and not os.environ.get("NO_COLOR"))

    def paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def header(self, text: str) -> str:
        return self.paint(text, "1;36")

    def error(self, text: str) -> str:
        return self.paint(text, "1;31")

    def prefix(self, text: str) -> str:
        return self.paint(text, "33")


class _Spool:
    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)

    def copy_to(self, out: IO[bytes]) -> None:
        self.file.seek(0)
        while chunk := self.file.read(1 << 20):
            out.write(chunk)

    def close(self) -> None:
        self.file.close()


class GroupedSink:
    """Identical outputs of several ranks shown once under their rank set (``clush -b``)."""

    def __init__(self, out: IO[bytes], err: IO[bytes], style: Style) -> None:
        self.out, self.err, self.style = out, err, style
        self._spools: dict[tuple[int, int], _Spool] = {}
        self.results: dict[int, Result] = {}

    def output(self, rank: int, stream: int, data: bytes) -> None:
        spool = self._spools.get((rank, stream))
        if spool is None:
            spool = self._spools[(rank, stream)] = _Spool()
        spool.write(data)

    def done(self, result: Result) -> None:
        self.results[result.rank] = result

    def groups(self) -> list[tuple[frozenset[int], _Spool | None, _Spool | None]]:
        """(ranks, stdout spool, stderr spool) per distinct output, in rank order."""
        by_key: dict[tuple[bytes, bytes], list[int]] = {}
        ranks = sorted({rank for rank, _ in self._spools} | set(self.results))
        for rank in ranks:
            key = tuple(
                self._spools[(rank, s)].digest.digest() if (rank, s) in self._spools else b""
                for s in (STDOUT, STDERR)
            )
            by_key.setdefault((key[0], key[1]), []).append(rank)
        found = []
        for members in by_key.values():
            first = members[0]
            found.append(
                (frozenset(members), self._spools.get((first, STDOUT)), self._spools.get((first, STDERR)))
            )
        return found

    def finish(self) -> None:
        for ranks, out, err in self.groups():
            if out is None and err is None:
                continue
            self.err.flush()
            line = "-" * 15
            title = f"{line}\n@{format_ranks(ranks)} ({len(ranks)})\n{line}\n"
            self.out.write(self.style.header(title).encode())
            if out is not None:
                out.copy_to(self.out)
            self.out.flush()
            if err is not None:
                err.copy_to(self.err)
                self.err.flush()
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()
        self.out.flush()


class RawSink:
    """One target: its output streamed as is, as ssh would."""

    def __init__(self, out: IO[bytes], err: IO[bytes]) -> None:
        self.out, self.err = out, err
        self.results: dict[int, Result] = {}

    def output(self, rank: int, stream: int, data: bytes) -> None:
        target = self.out if stream == STDOUT else self.err
        target.write(data)
        target.flush()

    def done(self, result: Result) -> None:
        self.results[result.rank] = result

    def finish(self) -> None:
        self.out.flush()
        self.err.flush()


class LiveSink:
    """Output streamed as produced, each line prefixed with its rank (``clush`` without -b)."""

    def __init__(self, out: IO[bytes], err: IO[bytes], style: Style) -> None:
        self.out, self.err, self.style = out, err, style
        self._partial: dict[tuple[int, int], bytes] = {}
        self.results: dict[int, Result] = {}

    def _emit(self, rank: int, stream: int, line: bytes) -> None:
        target = self.out if stream == STDOUT else self.err
        target.write(self.style.prefix(f"{rank}: ").encode() + line)

    def output(self, rank: int, stream: int, data: bytes) -> None:
        buffered = self._partial.pop((rank, stream), b"") + data
        *lines, rest = buffered.split(b"\n")
        for line in lines:
            self._emit(rank, stream, line + b"\n")
        if len(rest) > LIVE_LINE_LIMIT:
            self._emit(rank, stream, rest + b"\n")
            rest = b""
        if rest:
            self._partial[(rank, stream)] = rest
        (self.out if stream == STDOUT else self.err).flush()

    def done(self, result: Result) -> None:
        for stream in (STDOUT, STDERR):
            rest = self._partial.pop((result.rank, stream), b"")
            if rest:
                self._emit(result.rank, stream, rest + b"\n")
        self.results[result.rank] = result

    def finish(self) -> None:
        self.out.flush()
        self.err.flush()


class JsonSink:
    """One JSON object per rank per line: rank, host, exit, signal, stdout, stderr, seconds.

    Output is decoded as UTF-8 with U+FFFD for invalid bytes (JSON carries text only);
    it is held in memory, so --json suits commands with modest output.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self._data: dict[tuple[int, int], bytearray] = {}
        self.results: dict[int, Result] = {}

    def output(self, rank: int, stream: int, data: bytes) -> None:
        self._data.setdefault((rank, stream), bytearray()).extend(data)

    def done(self, result: Result) -> None:
        self.results[result.rank] = result

    def finish(self) -> None:
        for rank in sorted(self.results):
            result = self.results[rank]
            record = {
                "rank": rank,
                "host": result.host,
                "exit": result.exit,
                "signal": result.signal or None,
                "stdout": bytes(self._data.pop((rank, STDOUT), b"")).decode("utf-8", "replace"),
                "stderr": bytes(self._data.pop((rank, STDERR), b"")).decode("utf-8", "replace"),
                "seconds": round(result.seconds, 6),
            }
            if result.timed_out:
                record["timed_out"] = True
            if result.error:
                record["error"] = result.error
            self.out.write(json.dumps(record).encode() + b"\n")
        self.out.flush()


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def status_lines(results: Iterable[Result], style: Style) -> list[str]:
    """One line per distinct non-zero outcome, ranks grouped: ``[2,4] exit code 1``."""
    outcomes: dict[str, list[int]] = {}
    for result in results:
        if result.timed_out:
            text = f"timed out after {result.seconds:.1f} s"
        elif result.signal:
            text = f"killed by {signal_name(result.signal)}"
        elif result.exit:
            text = f"exit code {result.exit}"
        else:
            continue
        if result.error and not result.timed_out:
            text += f" ({result.error})"
        outcomes.setdefault(text, []).append(result.rank)
    return [style.error(f"mpish: @{format_ranks(ranks)}: {text}") for text, ranks in outcomes.items()]


def make_sink(
    kind: str, targets: int, out: IO[bytes], err: IO[bytes], style: Style
) -> GroupedSink | RawSink | LiveSink | JsonSink:
    """The sink for an output mode: ``json``, ``live``, or ``grouped`` (raw for one target)."""
    if kind == "json":
        return JsonSink(out)
    if kind == "live":
        return LiveSink(out, err, style)
    if targets == 1:
        return RawSink(out, err)
    return GroupedSink(out, err, style)


SinkFactory = Callable[[int], OutputSink]
