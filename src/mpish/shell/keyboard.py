"""The terminal's keys while an operation runs: Ctrl-C as a key, and lines typed ahead.

:class:`InterruptKeys` turns the terminal's ISIG off for the duration of a command or a
transfer (Ctrl-C is then read, not a signal to the process group); :class:`TypedAhead`
turns what else was typed meanwhile into whole lines, run in order afterwards;
:func:`terminate_as_interrupt` makes a SIGTERM during ``-c`` (and a copy's SIGHUP) a Ctrl-C that
then ends mpish.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any


class InterruptKeys:
    """While an operation runs, Ctrl-C is read as a key instead of raising SIGINT.

    The terminal's ISIG is turned off (as ssh does for its session), so Ctrl-C reaches no
    process group: MPICH's singleton mpiexec, which shares our process group, would
    otherwise take SIGINT as "abort the job". The console polls the key and forwards it
    to the servers as an Interrupt. Other keys are kept in ``typed`` (lines typed or
    pasted while the operation runs), except those before a Ctrl-C, which discards typed-
    ahead input as a terminal's interrupt does. Not a terminal: nothing changes.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self.fd = -1
        self.saved: list[Any] | None = None
        self.typed = bytearray()
        self.interrupted = False  # Ctrl-C was typed: earlier typed-ahead lines are void

    def __enter__(self) -> InterruptKeys:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if self.stream.isatty():
                import termios

                self.fd = self.stream.fileno()
                self.saved = termios.tcgetattr(self.fd)
                raw = termios.tcgetattr(self.fd)
                raw[3] &= ~(termios.ISIG | termios.ICANON | termios.ECHO)
                raw[6][termios.VMIN] = 0
                raw[6][termios.VTIME] = 0
                termios.tcsetattr(self.fd, termios.TCSANOW, raw)
        return self

    def pressed(self) -> bool:
        """True if Ctrl-C was typed since the last call (other keys are dropped)."""
        if self.saved is None:
            return False
        try:
            data = os.read(self.fd, 4096)
        except OSError:
            return False
        if b"\x03" in data:
            self.typed[:] = data[data.rindex(b"\x03") + 1 :]
            self.interrupted = True
            return True
        self.typed += data
        return False

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            import termios

            while True:  # what is still queued was typed after the operation's last poll
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    break
                if not data:
                    break
                self.typed += data
            if b"\x03" in self.typed:  # a Ctrl-C after the last poll: as one during the operation
                self.typed[:] = self.typed[self.typed.rindex(b"\x03") + 1 :]
                self.interrupted = True

            with contextlib.suppress(OSError):
                termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)
            self.saved = None


class TypedAhead:
    """Keys typed while an operation ran: whole lines to run in order, and a partial one.

    Backspace and Ctrl-U edit the line as a terminal's line discipline would; escape
    sequences (arrow keys) and other control characters are dropped.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.partial = ""

    def feed(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        current, i = self.partial, 0
        while i < len(text):
            char = text[i]
            i += 1
            if char in "\r\n":
                self.lines.append(current)
                current = ""
            elif char in "\x7f\b":
                current = current[:-1]
            elif char == "\x15":
                current = ""
            elif char == "\x1b":  # ESC [ ... final byte, or ESC O x
                if i < len(text) and text[i] in "[O":
                    i += 1
                    while i < len(text) and not ("@" <= text[i] <= "~"):
                        i += 1
                i += 1
            elif char >= " " or char == "\t":
                current += char
        self.partial = current

    def next_line(self) -> str | None:
        return self.lines.pop(0) if self.lines else None

    def take_partial(self) -> str:
        partial, self.partial = self.partial, ""
        return partial


@contextlib.contextmanager
def terminate_as_interrupt(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[list[int]]:
    """While ``-c``'s command runs, a SIGTERM (``timeout 60 mpish ...``, a batch system's end
    of the job) interrupts it as a Ctrl-C does: the command gets its SIGINT, what the targets
    sent so far is shown, and mpish exits 143 (the list yielded holds the signal once it
    came). A second SIGTERM meets the handler there was before. Over MPI the first one ended
    the session at once and the gathered output was lost; over ssh mpish died of it, output
    and status alike (a clush user's review). ``signums``: SIGHUP too (``--copy``/``--rcopy``:
    a killed --rcopy left its part file, 82 MB of it); after a hang-up, output to the terminal
    that is gone goes to /dev/null (session.quiet_after_hangup)."""
    came: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        del frame
        for each, handler in previous.items():
            signal.signal(each, handler)
        came.append(signum)
        if signum == signal.SIGHUP:
            from .session import quiet_after_hangup

            quiet_after_hangup()
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield came
    finally:
        if not came:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@contextlib.contextmanager
def deaf_to_sigint() -> Iterator[None]:
    """SIGINT ignored meanwhile (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
