"""The console's side of the pty mode: ``:attach @N [COMMAND]``, like ``ssh -t``.

Theory of operation
-------------------
The console asks one server for a program on a pseudo-terminal
(:class:`~mpish.shell.protocol.PtyOpen` with the terminal's size and ``TERM``;
:mod:`mpish.shell.pty_session` runs it), puts its own terminal in raw mode, and from then
on the terminal belongs to the remote program: what the user types goes to it as
:class:`PtyInput` (Ctrl-C, Ctrl-Z, Ctrl-\\ too: the remote pty turns them into signals),
what it writes comes back raw on channel STDOUT and goes to the terminal unchanged, and a
SIGWINCH of the console sends its new size (:class:`PtyResize`). When the program ends
(:class:`PtyExit`) the terminal's modes are restored and the console's prompt comes back
with the program's exit status. The keys travel within the bulk window (the server
credits them once written to the pty), so a paste never grows a buffer past WINDOW.

Escape from a program that does not end (as ssh's, after Enter or at the start): ``~.``
hangs up (SIGHUP to the program, SIGKILL a second later to what is left of it; the console
says which ended it: :func:`outcome`) and returns to the prompt (after
:data:`HANGUP_WAIT` at most, should the server not answer), ``~?``
shows the escapes, ``~~`` sends one ``~``. SIGTERM or SIGHUP of the console hang up the
program too, on the way out.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import IO

from . import protocol as p
from .console import Console
from .grouping import Style, signal_name

ESCAPE_HELP = (
    "\r\nmpish escapes (after Enter):\r\n"
    "  ~.  hang up: end the program (SIGHUP, then SIGKILL) and return to the prompt\r\n"
    "  ~?  this help\r\n"
    "  ~~  send ~\r\n"
)
KEYS_CHUNK = 4096
# Programs that need a terminal (a new user ran vi, which hung, and top: "failed tty get")
FULL_SCREEN = frozenset({"vi", "vim", "nvim", "view", "nano", "emacs", "top", "htop", "btop", "less",
                         "more", "man", "tmux", "screen", "watch", "mc", "ncdu", "nvtop", "iotop"})
IDLE_WAIT = 0.01  # longest sleep between looks at the keys and the link (MPI: its backoff)
HANGUP_WAIT = 5.0  # seconds the console waits for the program's end after ~.
SANE_SCREEN = b"\x1b7\x1b[r\x1b8\x1b[?25h\x1b[0m\r\n"  # whole-screen scrolling, cursor shown, plain


class AttachError(ValueError):
    """:attach cannot start: the message says why and what to do."""


def terminal_hint(command: str, targets: Iterable[int], failed: bool) -> str:
    """After ``command`` failed or was interrupted: how to run it where it gets a terminal, if
    it is one of :data:`FULL_SCREEN` (else "")."""
    words = command.split()
    while words and "=" in words[0] and not words[0].startswith("="):  # TERM=xterm vi
        words.pop(0)
    name = os.path.basename(words[0]) if words else ""
    if not failed or name not in FULL_SCREEN:
        return ""
    return (f"mpish: {name} needs a terminal, which commands here do not get: run it on one target "
            f"with :attach @{min(targets)} {command.strip()}")


@dataclass
class Escapes:
    """ssh-style escapes in the typed bytes: ``~`` right after Enter (or at the start)."""

    line_start: bool = True
    tilde: bool = False

    def feed(self, data: bytes) -> tuple[bytes, str]:
        """(bytes for the program, action: "" | "hangup" | "help")."""
        out = bytearray()
        action = ""
        for byte in data:
            char = bytes((byte,))
            if self.tilde:
                self.tilde = False
                if char == b".":
                    return bytes(out), "hangup"
                if char == b"?":
                    action = "help"  # and another escape may follow at once
                    continue
                if char != b"~":
                    out += b"~"
                out += char
            elif self.line_start and char == b"~":
                self.tilde = True
                continue
            else:
                out += char
            self.line_start = char in (b"\r", b"\n")
        return bytes(out), action


@dataclass
class Ended:
    exit: int
    signal: int
    error: str
    hung_up: bool = False  # ~., or the terminal's end: SIGHUP was sent


def outcome(ended: Ended) -> str:
    """What the console says of the program's end ("" for exit 0). After a hang-up, that it hung
    up: a program that ignored SIGHUP was said to be "killed by SIGHUP" (the launching shell was;
    the program ran on); killed only as the status says (pty_session.py kills what is left)."""
    if ended.error:
        why = ended.error
    elif ended.signal:
        why = f"killed by {signal_name(ended.signal)}"
    else:
        why = f"exit code {ended.exit}" if ended.exit or ended.hung_up else ""
    if not ended.hung_up:
        return why
    if ended.signal == signal.SIGKILL:
        return f"hung up: SIGHUP sent; still running a second later: {why}"
    return f"hung up: SIGHUP sent; {why if ended.signal or ended.error else f'it ended ({why})'}"


def window_size(fd: int) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 24, 80
    return size.lines, size.columns


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode (no echo, no line editing, no signals from keys), restored after."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def attach(console: Console, rank: int, command: str, keys_fd: int, screen_fd: int,
           term: str | None = None) -> Ended:
    """Run ``command`` (empty: the user's shell) on ``rank`` in a pty until it ends."""
    pty_id = console.new_id()
    ended: list[Ended] = []
    credit = p.WINDOW  # key bytes the server may still be sent
    resized = [True]
    escapes = Escapes()
    peer = console.peers[rank]

    def handle(source: int, message: object) -> None:
        nonlocal credit
        if source != rank:
            return
        if isinstance(message, p.Credit):
            credit += message.nbytes
        elif isinstance(message, p.PtyExit) and message.pty_id == pty_id:
            ended.append(Ended(message.exit, message.signal, message.error))

    def output(source: int, stream: int, data: bytes) -> None:
        if source == rank:
            _write_all(screen_fd, data)
        console.consumed(source, len(data))

    def on_winch(signum: int, frame: object) -> None:
        del signum, frame
        resized[0] = True

    rows, cols = window_size(screen_fd)
    previous = signal.signal(signal.SIGWINCH, on_winch)
    hung_up = 0.0  # when the user (or the terminal's end) hung up
    try:
        with console.routed(handle, output), raw_terminal(keys_fd):
            term = term or os.environ.get("TERM", "xterm")
            console.send(rank, p.PtyOpen(pty_id, command, rows, cols, term))
            resized[0] = False
            try:
                while not ended and peer.alive:
                    if hung_up and time.monotonic() - hung_up > HANGUP_WAIT:
                        break  # the server does not answer: give the terminal back all the same
                    busy = console.pump()
                    if resized[0]:
                        resized[0] = False
                        rows, cols = window_size(screen_fd)
                        console.send(rank, p.PtyResize(pty_id, rows, cols))
                    readable: list[int] = []
                    if not ended:
                        delay = 0.0 if busy else IDLE_WAIT  # the link's wait: sooner on a record
                        watched = [keys_fd] if credit >= KEYS_CHUNK and not hung_up else []
                        with contextlib.suppress(InterruptedError):
                            readable = list(console.link.wait(delay, watched)[0]) if delay or watched else []
                    if readable:
                        data = os.read(keys_fd, KEYS_CHUNK)
                        if not data:  # the terminal is gone
                            hung_up = time.monotonic()
                            console.send(rank, p.PtyClose(pty_id))
                            continue
                        data, action = escapes.feed(data)
                        if data:
                            credit -= len(data)
                            console.send(rank, p.PtyInput(pty_id, data))
                        if action == "help":
                            _write_all(screen_fd, ESCAPE_HELP.encode())
                        elif action == "hangup":
                            hung_up = time.monotonic()
                            console.send(rank, p.PtyClose(pty_id))
            except BaseException:  # SIGTERM of the console (Terminated): hang up on the way out
                console.send(rank, p.PtyClose(pty_id))
                raise
    finally:
        signal.signal(signal.SIGWINCH, previous)
    if hung_up:  # the program may have left a scroll region and a hidden cursor behind
        _write_all(screen_fd, SANE_SCREEN)
    if ended:
        return replace(ended[0], hung_up=bool(hung_up))
    return Ended(255, 0, "no answer after the hang-up" if peer.alive else "rank lost", bool(hung_up))


def parse(rest: str, default: frozenset[int], hosts: dict[int, str],
          lost: Mapping[int, str] | None = None) -> tuple[int, str]:
    """``[@TARGET] [COMMAND]`` -> (rank, command); the target must be one live server (``lost``:
    the servers lost, rank -> host, named as such)."""
    from .ranks import format_ranks, resolve_targets

    words = rest.split(None, 1)
    targets = default
    if words and words[0].startswith("@"):
        targets = resolve_targets(words[0], hosts, lost or {})
        rest = words[1] if len(words) > 1 else ""
    if len(targets) != 1:
        raise AttachError(
            f":attach runs a program on ONE target, not {len(targets)} (@{format_ranks(targets)}): "
            "say which, e.g. :attach @1 top"
        )
    return next(iter(targets)), rest.strip()


def terminal_fds(tty_stream: IO[str] | None, what: str = ":attach") -> tuple[int, int]:
    """(keys, screen) descriptors of the console's terminal; AttachError if it has none."""
    if tty_stream is not None:
        return tty_stream.fileno(), tty_stream.fileno()
    if os.isatty(0) and os.isatty(1):
        return 0, 1
    raise AttachError(f"{what} needs the console on a terminal, and it has none here: run it from a "
                      "terminal, with stdin and stdout on it (under an MPI launcher rank 0 often has "
                      "none: use mpish -n K, or srun --pty)")


def run_builtin(console: Console, default: frozenset[int], rest: str, tty_stream: IO[str] | None,
                err: IO[str]) -> int:
    """``:attach [@TARGET] [COMMAND]`` at the console; the program's exit status."""
    rank, command = parse(rest, default, console.hosts, console.lost)
    return _run(console, rank, command, tty_stream, err)


def one_shot(console: Console, ranks: Iterable[int], command: str, err: IO[str]) -> int:
    """``-c COMMAND --tty``: COMMAND on the one target in a terminal (as ``ssh -t``); its status.
    A user's mistake (several targets, no terminal) is an :class:`AttachError`."""
    targets = sorted(set(ranks))
    if len(targets) != 1:
        raise AttachError(f"--tty runs the command on ONE target, not {len(targets)}: choose it with -w")
    return _run(console, targets[0], command, None, err, "--tty")


def _run(console: Console, rank: int, command: str, tty_stream: IO[str] | None, err: IO[str],
         what: str = ":attach") -> int:
    keys_fd, screen_fd = terminal_fds(tty_stream, what)
    sys.stdout.flush()
    err.flush()
    ended = attach(console, rank, command, keys_fd, screen_fd)
    why = outcome(ended)
    if why:
        print(Style.for_stream(err).error(f"mpish: {console.describe([rank])}: {why}"), file=err)
        err.flush()
    return ended.exit
