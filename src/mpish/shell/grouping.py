"""Where command output goes on the console: grouped (like ``clush -b``), live, or JSON.

Grouping keeps memory bounded: each rank's stdout and stderr are gathered (gathered.py:
in memory up to 1 MiB, then on disk; identical outputs stored once) while a SHA-256 of
each is computed; at the end ranks with identical (stdout, stderr) digests are printed
once under their rank set; outputs that differ only by a missing final newline are one there,
as the display ends the last line (gathered.py says where bytes stay exact).

Gathering waits for the end, so an endless command (``mpish -n 2 -c yes | head -2``)
showed nothing and filled the disk. Once more than ``gather_limit`` bytes (64 MiB by
default, ``--gather-limit MIB``, 0 for none) of distinct output are gathered, grouped output gives
way to line output: one line on stderr says so, what was gathered is shown line by line,
each line labelled with its server (as ``-L``), and the rest as it comes (as ``-v``), so
``head`` gets its lines and leaves, and the command ends with the SIGPIPE status.

The sinks name servers through a :class:`~mpish.shell.names.ServerNames`. The MPI shell's is
:class:`RankNames`: titles ``@1-3``, live prefixes ``@1: ``, JSON records with rank and
host, errors in the status lines. ``mpish ssh`` runs the same Console over ssh pipes
(rank r is host r of the node set) with :class:`HostNames`: titles ``host[1-3]`` (folded
by ClusterShell), prefixes ``host1: ``, JSON records with the same fields, and a host's
error (a lost connection, or ssh's reason when it never joined) printed as
``host: <why>`` when it comes and counted as exit 255, as ssh does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Protocol

from mpish.wire.text import relabel_returns

from .gathered import SHOW_PIECE, Gathered, Stopped, Store, unified_diff
from .names import RankNames, Result, ServerNames, fold_reasons
from .options import GATHER_LIMIT, OutputMode
from .outcome import STDOUT_CLOSED, PipeGuard, signal_name, status_lines
from .protocol import STDERR, STDOUT
from .style import Style, report_error, set_color

if TYPE_CHECKING:
    from .jsonsink import JsonSink

__all__ = ["STDOUT_CLOSED", "GroupedSink", "LiveSink", "OutputSink", "PipeGuard", "RawSink",
           "Style", "make_sink", "set_color", "signal_name", "status_lines"]

LIVE_LINE_LIMIT = 1 << 16  # a live line longer than this is printed in pieces


class OutputSink(Protocol):
    """Receives output chunks as they arrive and each rank's result."""

    def output(self, rank: int, stream: int, data: bytes) -> None: ...

    def done(self, result: Result) -> None: ...

    def finish(self) -> None: ...


INTERRUPTED_TAIL = 1 << 16  # after a Ctrl-C, at a terminal, only this much of each output is shown
INTERRUPTED_LINES = 40  # and of it only these last lines (`yes`: 32,768 lines of y scrolled by)


def _size(nbytes: int) -> str:
    """``73.9 MiB``, ``12.0 KiB``, ``80 bytes``: never "0.0 MiB" for a few lines left out."""
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.1f} MiB"
    return f"{nbytes / 2**10:.1f} KiB" if nbytes >= 2**10 else f"{nbytes} bytes"
SHOW_NOTICE = 1 << 20  # gathered output at least this big is announced at a terminal (Ctrl-C stops it)


def _never() -> bool:
    return False


def _at_terminal() -> bool:
    """The process's stdin, stdout and stderr are a terminal (the console's sys.stdout may be a
    proxy; without a terminal on stdin no Ctrl-C key is read, the signal ends mpish instead)."""
    return os.isatty(0) and os.isatty(1) and os.isatty(2)


class _Sink:
    """Keeps each server's result (``results``, by rank) as its names report it."""

    def __init__(self, names: ServerNames | None) -> None:
        self.names: ServerNames = names or RankNames()
        self.results: dict[int, Result] = {}

    def done(self, result: Result) -> None:
        result = self.names.result(result)
        self.results[result.rank] = result
        self._ended(result)

    def _ended(self, result: Result) -> None:
        """The server's result came: its output is complete."""


class _TerminalSink(_Sink):
    """A sink writing to stdout and stderr; errors printed as they come if the names say so."""

    def __init__(
        self, out: IO[bytes], err: IO[bytes], style: Style | None, names: ServerNames | None
    ) -> None:
        super().__init__(names)
        self.out, self.err, self.style = out, err, style or Style()
        self.reported: set[str] = set()  # hosts whose error was already printed (folded)
        self.fold_errors = False  # errors printed at the end, identical ones folded
        self._errors: dict[str, str] = {}

    def _ended(self, result: Result) -> None:
        if result.error and self.names.errors_at_once and result.host not in self.reported:
            if self.fold_errors:
                self._errors[result.host] = result.error
            else:
                report_error(self.err, result.host, result.error, self.style)

    def report_folded(self) -> None:
        """The errors kept by ``fold_errors``, identical ones under one node set."""
        for line in fold_reasons(self._errors):
            self.err.write(self.style.error(line).encode() + b"\n")
        self._errors.clear()
        self.err.flush()

    def finish(self) -> None:
        self.out.flush()
        self.err.flush()


class GroupedSink(_TerminalSink):
    """Identical outputs of several servers shown once under their names (``clush -b``).

    stdout is gathered under a header per distinct output; stderr (unless ``merge_stderr``,
    clush's ``-B``, gathers it with stdout) is gathered apart and each of its lines is
    prefixed with the servers that wrote it (``host[1-4]: oops``), as clush labels stderr.
    ``labels=False`` (``-N``): no headers and no prefixes; ``counts=False`` (``-q``): no
    ``(N)`` after a header; ``lines`` (``-L``): no gathering, each server's lines in
    server order prefixed with its name; ``prefixed`` (``-bL``, as clush): gathered line by
    line, each prefixed with the servers whose Nth lines are alike (``host[1-2]: o``), no
    header; ``diff`` (``--diff``):
    each gathered stdout shown as a unified diff against the first, as GNU ``diff -u`` prints it.
    """

    def __init__(
        self, out: IO[bytes], err: IO[bytes], style: Style, names: ServerNames | None = None, *,
        merge_stderr: bool = False, labels: bool = True, counts: bool = True, lines: bool = False,
        diff: bool = False, limit: int = GATHER_LIMIT, prefixed: bool = False,
    ) -> None:
        super().__init__(out, err, style, names)
        self._spools: dict[tuple[int, int], Gathered] = {}
        self._roots: dict[int, Store] = {}  # per stream: the store every server starts on
        self.merge_stderr, self.labels, self.counts = merge_stderr, labels, counts
        self.lines, self.diff, self.prefixed = lines, diff, prefixed
        # the console's Ctrl-C key: the display of what was gathered (after a flood: gigabytes) ends
        self.stop: Callable[[], bool] = _never
        self.limit = limit  # 0: no limit
        self.gathered = 0
        self.live: LiveSink | None = None  # past the limit: lines as they come (module doc)

    @property
    def streams(self) -> bool:
        """Past the gather limit output is shown as it comes: what was in flight at a Ctrl-C
        is dropped then (console.py), as by a LiveSink; below it everything is gathered."""
        return self.live is not None

    def output(self, rank: int, stream: int, data: bytes) -> None:
        if self.merge_stderr:
            stream = STDOUT
        if self.live is not None:
            self.live.output(rank, stream, data)
            return
        spool = self._spools.get((rank, stream))
        if spool is None:
            spool = self._spools[(rank, stream)] = Gathered(self._roots.get(stream))
            self._roots.setdefault(stream, spool.store)
        self.gathered += spool.write(data)  # distinct bytes (gathered.py)
        if self.limit and self.gathered > self.limit:
            self._give_way()

    def _give_way(self) -> None:
        """Past the limit: say so once, show what was gathered as labelled lines, go live."""
        how = "each line labelled with its server" if self.labels else "unlabelled (-N)"
        how = f"no longer in server order, {how}" if self.lines else f"{how}, as -L" if self.labels else how
        self.err.write(self.style.error(
            f"mpish: more than {self.limit / 2**20:g} MiB of output gathered: the rest is shown as it "
            f"comes, {how}; --gather-limit MIB raises the limit (0: none)").encode() + b"\n")
        self.err.flush()
        self.live = LiveSink(self.out, self.out if self.merge_stderr else self.err, self.style, self.names,
                             labels=self.labels)
        self.live.name_of = lambda rank: self.names.label([rank])  # labelled as -L labels them
        stopped = False
        while self._spools:
            (rank, stream), spool = min(self._spools.items())
            del self._spools[(rank, stream)]
            try:
                for chunk in spool.chunks():
                    if stopped:  # asked once: the key is read (and gone) when stop() says so
                        break
                    self.live.output(rank, stream, chunk)
                    stopped = self.stop()
            finally:
                spool.close()
            if rank in self.results and not stopped:  # it ended already: end its unfinished line
                self.live.end_lines(rank)
        if stopped:  # the console's Ctrl-C key, read here: the command is interrupted as by the key
            self.err.write(self.style.error("\nmpish: display of the gathered output stopped (Ctrl-C)")
                           .encode() + b"\n")
            raise KeyboardInterrupt

    def _ended(self, result: Result) -> None:
        if self.live is not None:
            self.live.end_lines(result.rank)
        super()._ended(result)

    def groups(self, stream: int = STDOUT, exact: bool = False) -> list[tuple[frozenset[int], Gathered]]:
        """(ranks, the spool of the first of them) per distinct output of ``stream``, in rank order;
        unless ``exact`` (--diff), outputs differing only by a missing final newline are one (gathered.py)."""
        by_digest: dict[bytes, list[int]] = {}
        for rank, kind in sorted(self._spools):
            if kind == stream and (spool := self._spools[(rank, kind)]).size:
                digest = spool.digest.digest() if exact else spool.shown_digest()
                by_digest.setdefault(digest, []).append(rank)
        return [(frozenset(ranks), self._spools[(ranks[0], stream)]) for ranks in by_digest.values()]

    def _prefix(self, ranks: Iterable[int], after_escape: bool = False) -> bytes:
        if not self.labels:
            return b""
        return self.style.prefix(f"{self.names.label(ranks)}: ", after_escape).encode()

    def _prefixed(self, spool: Gathered, ranks: Iterable[int], target: IO[bytes]) -> None:
        shown = 0
        clean, after_escape = self._prefix(ranks), self._prefix(ranks, True)
        prefix = clean
        parts: list[bytes] = []  # written a piece at a time, not a line at a time
        for line in spool.lines():
            parts += (prefix, line if line.endswith(b"\n") else line + b"\n")
            prefix = after_escape if b"\x1b" in line else clean
            shown += len(line) + len(prefix)
            if shown >= SHOW_PIECE:
                target.write(b"".join(parts))
                parts, shown = [], 0
                if self.stop():
                    raise Stopped
        target.write(b"".join(parts))

    def finish(self) -> None:
        try:
            if self.live is None:
                self._show()
        except Stopped:
            self.out.flush()
            self.err.write(self.style.error("\nmpish: display of the gathered output stopped (Ctrl-C)")
                           .encode() + b"\n")
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()
        self.out.flush()
        self.err.flush()

    def _show(self) -> None:
        self.out.flush()
        if _at_terminal() and not self.diff and any(r.interrupted for r in self.results.values()):
            # Ctrl-C: the user wants it to stop, not tens of seconds of what it printed before
            shown = self._spools.values() if self.lines else [
                spool for stream in (STDOUT, STDERR) for _, spool in self.groups(stream)]
            left_out = sum(spool.keep_tail(INTERRUPTED_TAIL, INTERRUPTED_LINES) for spool in shown)
            if left_out:
                self.gathered -= left_out
                self.err.write(self.style.error(
                    f"mpish: interrupted: {_size(left_out)} of the gathered output left out; the last "
                    f"{INTERRUPTED_LINES} lines (at most {INTERRUPTED_TAIL >> 10} KiB) of each output follow")
                    .encode() + b"\n")
        if self.stop is not _never and self.gathered >= SHOW_NOTICE and _at_terminal():
            size = self.gathered / 2**20
            notice = f"mpish: {size:.1f} MiB of output gathered; showing it (Ctrl-C stops it)"
            self.err.write(self.style.error(notice).encode() + b"\n")
            self.err.flush()
        if self.lines:
            self._finish_lines()
        else:
            for ranks, spool in self.groups(STDERR):
                self._prefixed(spool, ranks, self.err)
            self.err.flush()
            if self.diff:
                self._finish_diff()
            else:
                self._finish_gathered()

    def _header(self, ranks: frozenset[int], after_escape: bool = False) -> bytes:
        if not self.labels:
            return b""
        line = "-" * 15
        count = f" ({len(ranks)})" if self.counts else ""
        return self.style.header(f"{line}\n{self.names.label(ranks)}{count}\n{line}\n", after_escape).encode()

    def _finish_gathered(self) -> None:
        if self.prefixed and self.labels:
            self._gathered_by_line()
            return
        escaped = False  # the output shown before held an escape sequence (a rank's unreset colour)
        for ranks, spool in self.groups(STDOUT):
            self.out.write(self._header(ranks, escaped))
            spool.copy_to(self.out, self.stop)
            escaped = spool.escaped
        self.out.flush()

    def _gathered_by_line(self) -> None:
        """``-bL`` as clush shows it: line by line, the servers whose Nth lines are alike
        gathered under one prefix (``node[1-3]: a``), the largest group first, then by first
        server; a server whose output ended has no Nth line (clush's LiveGatherOutputHandler).
        Grouping whole outputs, one line in common and the rest different printed each line
        of each server apart (a clush user's review)."""
        outputs = [(ranks, spool.lines()) for ranks, spool in self.groups(STDOUT)]
        parts: list[bytes] = []
        shown, escaped = 0, False
        while outputs:
            alike: dict[bytes, set[int]] = {}
            still = []
            for ranks, lines in outputs:
                line = next(lines, None)
                if line is not None:
                    alike.setdefault(line if line.endswith(b"\n") else line + b"\n", set()).update(ranks)
                    still.append((ranks, lines))
            outputs = still
            for line, sharing in sorted(alike.items(), key=lambda item: (-len(item[1]), min(item[1]))):
                parts += (self._prefix(sharing, escaped), line)
                escaped, shown = b"\x1b" in line, shown + len(line)
            if shown >= SHOW_PIECE:
                self.out.write(b"".join(parts))
                parts, shown = [], 0
                if self.stop():
                    raise Stopped
        self.out.write(b"".join(parts))
        self.out.flush()

    def _finish_lines(self) -> None:
        for rank, stream in sorted(self._spools):
            target = self.out if stream == STDOUT else self.err
            self._prefixed(self._spools[(rank, stream)], [rank], target)
            target.flush()

    def _finish_diff(self) -> None:
        found = [(ranks, list(spool.lines())) for ranks, spool in self.groups(STDOUT, exact=True)]
        spoke = frozenset().union(*(ranks for ranks, _ in found))
        # the servers whose command ran and printed nothing are an output too, as clush diffs them
        silent = frozenset(rank for rank, result in self.results.items() if not result.error) - spoke
        if silent:
            found = sorted([*found, (silent, [])], key=lambda group: min(group[0]))
        if not found:
            return
        first_ranks, reference = found[0]
        for ranks, lines in found[1:]:
            names = [self.names.label(r) + (f" ({len(r)})" if self.counts and len(r) > 1 else "")
                     for r in (first_ranks, ranks)]
            self.out.write(b"".join(unified_diff(reference, lines, names[0], names[1])))
        self.out.flush()


class RawSink(_TerminalSink):
    """One target: its output streamed as is, as ssh would.

    With ``end_lines`` (the console, whose prompt follows), a stream whose last byte was
    not a newline gets one when the command ends, so the text is not lost behind the
    prompt; without it (``-c``) the bytes are exactly the command's, as with ssh.
    """

    streams = True  # output is written as it comes: what was in flight at a Ctrl-C is dropped

    def __init__(
        self, out: IO[bytes], err: IO[bytes], style: Style | None = None, names: ServerNames | None = None,
        end_lines: bool = False,
    ) -> None:
        super().__init__(out, err, style, names)
        self.end_lines = end_lines
        self._last: dict[int, bytes] = {}

    def output(self, rank: int, stream: int, data: bytes) -> None:
        if not data:
            return
        target = self.out if stream == STDOUT else self.err
        target.write(data)
        target.flush()
        self._last[stream] = data[-1:]

    def finish(self) -> None:
        if self.end_lines:
            for stream, last in self._last.items():
                if last != b"\n":
                    (self.out if stream == STDOUT else self.err).write(b"\n")
        self._last.clear()
        super().finish()


class LiveSink(_TerminalSink):
    """Output streamed as produced, each line prefixed with its server (``clush`` without -b)."""

    streams = True  # output is written as it comes: what was in flight at a Ctrl-C is dropped

    def __init__(
        self, out: IO[bytes], err: IO[bytes], style: Style, names: ServerNames | None = None,
        labels: bool = True,
    ) -> None:
        super().__init__(out, err, style, names)
        self._partial: dict[tuple[int, int], bytes] = {}
        self._escaped: dict[int, bool] = {}  # per stream: its last line held an escape sequence
        self.labels = labels
        self.name_of: Callable[[int], str] = self.names.prefix  # a line's label

    def _emit(self, rank: int, stream: int, *lines: bytes) -> None:
        """Write ``lines`` of one server, each with its label, in one write (a write per line
        was a system call per line: 0.4 MB/s of short lines)."""
        after_escape = self._escaped.get(stream, False)  # the last line on this stream held one
        if self.labels:
            name = f"{self.name_of(rank)}: "
            clean, reset = self.style.prefix(name).encode(), self.style.prefix(name, True).encode()
            parts: list[bytes] = []
            for line in lines:
                if b"\r" in line:  # a carriage return would let the rest overwrite the label
                    line = relabel_returns(line, reset if b"\x1b" in line else clean)
                parts += (reset if after_escape else clean, line)
                after_escape = b"\x1b" in line
        else:
            parts, after_escape = list(lines), b"\x1b" in lines[-1]
        (self.out if stream == STDOUT else self.err).write(b"".join(parts))
        self._escaped[stream] = after_escape

    def output(self, rank: int, stream: int, data: bytes) -> None:
        buffered = self._partial.pop((rank, stream), b"") + data
        cut = buffered.rfind(b"\n") + 1
        whole, rest = buffered[:cut], buffered[cut:]
        if whole and (b"\r" in whole or b"\x1b" in whole or self._escaped.get(stream, False)):
            self._emit(rank, stream, *(line + b"\n" for line in whole[:-1].split(b"\n")))
        elif whole:  # plain lines, labelled by one replace (a line at a time: 2 MB/s of `yes`)
            label = self.style.prefix(f"{self.name_of(rank)}: ").encode() if self.labels else b""
            shown = label + whole[:-1].replace(b"\n", b"\n" + label) + b"\n" if label else whole
            (self.out if stream == STDOUT else self.err).write(shown)
        if len(rest) > LIVE_LINE_LIMIT:
            self._emit(rank, stream, rest + b"\n")
            rest = b""
        if rest:
            self._partial[(rank, stream)] = rest
        (self.out if stream == STDOUT else self.err).flush()

    def end_lines(self, rank: int) -> None:
        """The server's output is complete: its unfinished last lines are shown, ended."""
        for stream in (STDOUT, STDERR):
            rest = self._partial.pop((rank, stream), b"")
            if rest:
                self._emit(rank, stream, rest + b"\n")
                (self.out if stream == STDOUT else self.err).flush()

    def _ended(self, result: Result) -> None:
        self.end_lines(result.rank)
        super()._ended(result)


def make_sink(
    kind: str | OutputMode, targets: int, out: IO[bytes], err: IO[bytes], style: Style,
    names: ServerNames | None = None, end_lines: bool = False,
) -> GroupedSink | RawSink | LiveSink | JsonSink:
    """The sink for an output mode (:class:`~mpish.shell.options.OutputMode`, or its kind:
    ``json``, ``live``, ``lines``, ``grouped``); one target in grouped mode: raw, as ssh
    shows it (``end_lines``: the console's, which ends an unfinished last line before the
    prompt), unless ``-b`` or ``-B`` asked for a header, as clush prints one for one node."""
    mode = kind if isinstance(kind, OutputMode) else OutputMode(kind=kind)
    if mode.kind == "json":
        from .jsonsink import JsonSink  # (it builds on this module's sinks)

        return JsonSink(out, names)
    if mode.kind == "live":
        return LiveSink(out, err, style, names, labels=mode.labels)
    if targets == 1 and mode.kind == "grouped" and not mode.diff and not mode.gathered:
        return RawSink(out, out if mode.merge_stderr else err, style, names, end_lines)  # -B: one stream
    return GroupedSink(out, err, style, names, merge_stderr=mode.merge_stderr, labels=mode.labels,
                       counts=not mode.quiet, lines=mode.kind == "lines" and not mode.gathered,
                       diff=mode.diff, limit=mode.gather_limit, prefixed=mode.kind == "lines")
