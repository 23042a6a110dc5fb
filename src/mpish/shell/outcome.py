"""How a command ended, as the console says it: status lines (``mpish: @2,4: exit code 1``)
and :class:`PipeGuard`, which turns a stdout closed by its reader (``| head``) into the
SIGPIPE status, as a shell pipeline would."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .names import TIMEOUT_TEXT, RankNames, Result, ServerNames
from .protocol import STDOUT

if TYPE_CHECKING:
    from .grouping import OutputSink, Style

HANGUP_CHECK = 0.05  # seconds between PipeGuard's looks at stdout's reader
HANDLED = "interrupted (SIGINT): the command handled it and exited 0"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _outcome(result: Result, names: ServerNames, notes: bool) -> str:
    """A status line's text for one result; "" for success or an error already printed."""
    if result.interrupted and not (result.exit or result.signal or result.timed_out or result.error):
        return HANDLED  # a command that traps SIGINT: Ctrl-C must not look like a plain success
    if names.errors_at_once and (result.error or not result.exit):
        return ""
    if notes and result.note:
        return f"{_outcome(result, names, False) or 'exit code 0'} ({result.note})"
    if result.signal:
        cause = f"killed by {signal_name(result.signal)}"
    else:
        cause = f"exit code {result.exit}" if result.exit else ""
    if result.timed_out:
        return TIMEOUT_TEXT
    if cause and result.error:
        cause += f" ({result.error})"
    return cause


def status_lines(
    results: Iterable[Result], style: Style, names: ServerNames | None = None, notes: bool = False,
    quiet: bool = False,
) -> list[str]:
    """One line per distinct non-zero outcome, servers grouped: ``mpish: @2,4: exit code 1``;
    ``notes`` (the console): with the server's note, e.g. that the shell was replaced;
    ``quiet`` (``-q``): not for a plain non-zero exit code (signals, timeouts, errors stay)."""
    names = names or RankNames()
    outcomes: dict[str, list[int]] = {}
    for result in sorted(results, key=lambda result: result.rank):  # in rank order, as over ssh
        if quiet and not (result.signal or result.timed_out or result.error or result.interrupted):
            continue
        text = _outcome(result, names, notes)
        if text:
            outcomes.setdefault(text, []).append(result.rank)
    return [style.error(f"mpish: {names.label(ranks)}: {text}") for text, ranks in outcomes.items()]


STDOUT_CLOSED = 128 + signal.SIGPIPE  # exit status when stdout's reader left: a shell's for yes | head


class PipeGuard:
    """A sink whose stdout may be closed by its reader (``mpish -c yes | head -2``): the
    first EPIPE sets ``closed`` (the console then interrupts the command, quietly) and stdout
    becomes /dev/null, so later output is dropped and results are still kept. No traceback,
    as ``yes | head``. A gathering sink writes nothing before the command ends, so it never
    met the EPIPE: ``closed`` also polls stdout (a pipe or socket) for POLLERR/POLLHUP, what
    poll says of a pipe whose reader left, at most every HANGUP_CHECK seconds. Any other
    failure to write (a full disk, an I/O error) ends the command the same way, and is kept in
    ``failure`` for one line (:meth:`failure_line`), as ``cat`` says "write error" and exits 1."""

    def __init__(self, sink: OutputSink, fd: int = 1) -> None:
        self.sink = sink
        self._closed = False
        self.failure: OSError | None = None
        self._poll: select.poll | None = None
        self._next_check = 0.0
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(mode := os.fstat(fd).st_mode) or stat.S_ISSOCK(mode):
                self._poll = select.poll()
                self._poll.register(fd, 0)  # POLLERR and POLLHUP are always reported

    @property
    def closed(self) -> bool:
        if not self._closed and self._poll is not None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + HANGUP_CHECK
            if any(events & (select.POLLERR | select.POLLHUP) for _, events in self._poll.poll(0)):
                self._close()
        return self._closed

    @property
    def streams(self) -> bool:
        return bool(getattr(self.sink, "streams", False))

    def _close(self) -> None:
        self._closed, self._poll = True, None
        with contextlib.suppress(OSError):  # nothing more reaches it, not even at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)

    def _guard(self, call: Callable[[], None]) -> None:
        try:
            call()
        except BrokenPipeError:
            self._close()
        except OSError as exc:  # ENOSPC, EIO...: nothing more can be shown
            self.failure = self.failure or exc
            self._close()

    def failure_line(self) -> str:
        """What :attr:`failure` was, for the user ("" if none)."""
        if self.failure is None:
            return ""
        reason = self.failure.strerror or str(self.failure)
        return f"cannot write the output: {reason}"  # a command still running was interrupted

    def output(self, rank: int, stream: int, data: bytes) -> None:
        if self._closed and stream == STDOUT:  # dropped here, not formatted for /dev/null: what
            return  # arrived before the interrupt (`mpish ssh -c yes | head`'s window) took seconds
        self._guard(lambda: self.sink.output(rank, stream, data))

    def done(self, result: Result) -> None:
        self._guard(lambda: self.sink.done(result))

    def finish(self) -> None:
        self._guard(self.sink.finish)
