"""The interactive console: prompt, line editing and history, built-ins, targets.

On a terminal the prompt is prompt_toolkit's (line editing, history, Ctrl-R). Under
mpiexec, whose rank 0 has no terminal on stdin, the console tries ``/dev/tty``; with
no terminal at all it reads plain lines from stdin (scripts: ``mpish < commands``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

from mpish.wire.errors import MpishError

from . import attach, completion, screen
from .console import Console
from .grouping import Style, make_sink, status_lines
from .ranks import TargetError, describe, format_ranks, resolve_targets

HELP = """\
Commands run through each target's shell; cd, export, variables, functions and
aliases persist per rank. Commands get no terminal (stdin is /dev/null): run
programs such as vim, top or less with :attach. Output shown here cannot take over
the console's screen: escape sequences other than colours are removed (:raw on keeps
them). Tab completes built-ins and the paths of the first target. Ctrl-C
interrupts the running command on every target as at a terminal (SIGINT; the rest
of the line is dropped, what ran before is kept); a second Ctrl-C sends SIGTERM, a
third SIGKILL, and the shell is then restarted from the state before the command.

  @TARGETS COMMAND        run one command on other targets (@all, @1-3,7, a host)
  :targets [TARGETS]      show the servers, or set the default targets
  :put LOCAL [REMOTE]     copy a file of the console's cwd to the targets (SHA-256 verified);
                          a directory REMOTE receives it under its own name, as with cp
  :get REMOTE [LOCAL]     copy a file from the targets (NAME.<rank> if several, NAME.<host>
                          over ssh, as clush --rcopy); the paths written are printed
  @TARGETS :put|:get ...  a transfer for other targets
  :timeout [SECONDS]      show or set the per-command timeout (0 = none)
  :mode [grouped|live]    group identical outputs (clush -b) or stream with rank prefixes
  :raw [on|off]           show remote output unfiltered, escape sequences included
  :attach [@TARGET] [COMMAND]
                          run COMMAND (default: your shell) on one target in a terminal of
                          its own, as ssh -t: keys, window size and Ctrl-C/Ctrl-Z go to it;
                          back here with its exit status when it ends. Escapes, after
                          Enter: ~. hang up (end it), ~? help, ~~ a ~
  :help                   this text
  :quit, exit, Ctrl-D     end the session
"""


class LineReader(Protocol):
    def read(self, prompt: str, default: str = "") -> str: ...


class PlainReader:
    """Lines from a stream; the prompt is shown only when the stream is a terminal."""

    def __init__(self, stream: IO[str], prompt_to: IO[str] | None) -> None:
        self.stream, self.prompt_to = stream, prompt_to

    def read(self, prompt: str, default: str = "") -> str:
        del default  # not a terminal: nothing was typed ahead
        if self.prompt_to is not None:
            self.prompt_to.write(prompt)
            self.prompt_to.flush()
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


HISTORY_NAME = "history"


def history_file(home: Path) -> Path | None:
    """``<home>/history``, created 0600 if new (commands can hold secrets); None if unusable.

    As bash does with ``~/.bash_history``: a new file is created 0600 (prompt_toolkit
    would create it 0666 less the umask), and an existing file keeps the mode its owner
    gave it. Without the mpish directory, or if the file cannot be created, there is
    no history file (history in memory only).
    """
    if not home.is_dir():
        return None
    path = home / HISTORY_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return None
    return path


class ToolkitReader:
    """prompt_toolkit's PromptSession: line editing and history on a terminal."""

    def __init__(self, tty: TextIO | None = None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory

        from mpish import keys  # here: cryptography is not needed on mpish ssh -c's way

        self.tty = tty
        history: History = InMemoryHistory()
        path = history_file(keys.mpish_home())
        if path is not None:
            history = FileHistory(str(path))
        options: dict[str, Any] = {}
        if tty is not None:
            from prompt_toolkit.input import create_input
            from prompt_toolkit.output import create_output

            options = {"input": create_input(stdin=tty), "output": create_output(stdout=tty)}
        self.session: Any = PromptSession(history=history, **options)

    def read(self, prompt: str, default: str = "") -> str:
        text: str = self.session.prompt(prompt, default=default)
        return text

    def complete_with(self, repl: Repl) -> None:
        """Tab completion (on Tab only: a remote path costs a round trip)."""
        self.session.completer = completion.for_repl(repl)
        self.session.complete_while_typing = False


def make_reader(under_launcher: bool) -> LineReader:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return ToolkitReader()
    if under_launcher:
        with contextlib.suppress(OSError):
            tty: TextIO = open("/dev/tty", "r+")  # noqa: SIM115 - lives as long as the console
            if tty.isatty():
                return ToolkitReader(tty)
            tty.close()
    # Under a launcher without a usable /dev/tty, stdin is a pipe from mpiexec but a person
    # is usually typing at the launcher's terminal: show the prompt on stderr all the same.
    return PlainReader(sys.stdin, sys.stderr if sys.stdin.isatty() or under_launcher else None)


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


class Progress:
    """A one-line progress bar on a terminal (stderr), nothing otherwise."""

    def __init__(self, label: str, total: int, stream: IO[str]) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.enabled = stream.isatty()
        self.started = self.shown = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.shown < 0.1:
            return
        self.shown = now
        total = total or self.total
        rate = done / max(now - self.started, 1e-6) / 2**20
        if total:
            width = 30
            filled = width * done // total
            bar = "#" * filled + "." * (width - filled)
            text = f"\r{self.label} [{bar}] {100 * done // total:3d}% {rate:7.1f} MiB/s"
        else:
            text = f"\r{self.label} {done / 2**20:9.1f} MiB {rate:7.1f} MiB/s"
        self.stream.write(text)
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class Repl:
    """Read commands, run them on the targets, show grouped or live output."""

    def __init__(self, console: Console, verbose: int = 0, reader: LineReader | None = None) -> None:
        self.console = console
        self.targets = frozenset(console.hosts)
        self.mode = "live" if verbose else "grouped"
        self.reader = reader
        self.out = sys.stdout.buffer
        self.err = sys.stderr
        self.style = Style.for_stream(sys.stdout)
        self.last_status = 0
        self.tty: IO[str] | None = None
        self.typed_ahead = TypedAhead()
        self.raw = False  # remote output shown unfiltered (screen.py)

    def prompt(self) -> str:
        self.targets = frozenset(r for r in self.targets if r in self.console.hosts)
        where = describe(self.targets, self.console.hosts)
        return f"[{where}] {self.console.cwd(self.targets)}#> "

    def loop(self) -> int:
        from .mpi_session import under_launcher

        reader = self.reader or make_reader(under_launcher())
        if isinstance(reader, ToolkitReader):
            self.tty = reader.tty
            reader.complete_with(self)
        while self.console.hosts:
            try:
                line = self._next_line(reader)
            except EOFError:
                break
            except KeyboardInterrupt:
                continue
            line = line.strip()
            if not line:
                continue
            if line in ("exit", "logout", ":quit", ":q", "quit"):
                break
            ended = re.fullmatch(r"(?:exit|logout)\s+(\d{1,9})", line)
            if ended:  # as bash's exit N: the session ends with that status
                return int(ended.group(1)) & 0xFF
            try:
                self.handle(line)
            except (MpishError, OSError, ValueError) as exc:
                print(self.style.error(f"mpish: {exc}"), file=self.err)
                self.last_status = 1
        return 0

    def _next_line(self, reader: LineReader) -> str:
        """A line typed ahead (shown after its prompt, as a terminal echoes it), else read one."""
        prompt = self.prompt()
        line = self.typed_ahead.next_line()
        if line is None:
            return reader.read(prompt, default=self.typed_ahead.take_partial())
        screen = self.tty or sys.stdout
        screen.write(prompt + line + "\n")
        screen.flush()
        return line

    def handle(self, line: str) -> None:
        if line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            builtin = getattr(self, f"cmd_{name}", None)
            if builtin is None:
                print(f"mpish: unknown built-in :{name} (see :help)", file=self.err)
                return
            builtin(rest.strip())
            return
        targets = self.targets
        if line.startswith("@"):
            spec, _, line = line.partition(" ")
            targets = resolve_targets(spec, self.console.hosts)
            line = line.strip()
            if not line:
                raise TargetError("no command after the targets")
            if line.startswith(":"):  # a built-in for these targets only: @1 :get FILE
                saved, self.targets = self.targets, targets
                try:
                    self.handle(line)
                finally:
                    self.targets = saved
                return
        self.run(line, targets)

    def run(self, command: str, targets: frozenset[int]) -> None:
        made = make_sink(self.mode, len(targets), self.out, sys.stderr.buffer, self.style, end_lines=True)
        sink = screen.for_terminal(made, self.out, self.raw)
        with self.keys():
            results = self.console.run(command, targets, sink)
        sys.stdout.flush()
        for text in status_lines(results.values(), Style.for_stream(sys.stderr), notes=True):
            print(text, file=self.err)
        self.last_status = max((r.exit for r in results.values()), default=0)

    @contextlib.contextmanager
    def keys(self) -> Iterator[None]:
        """Ctrl-C as a key for the duration of one operation (see InterruptKeys)."""
        keys_ = InterruptKeys(self.tty)
        try:
            with keys_:
                self.console.interrupt_key = keys_.pressed
                yield
        finally:
            self.console.interrupt_key = None
            if keys_.interrupted:
                self.typed_ahead = TypedAhead()
            self.typed_ahead.feed(bytes(keys_.typed))

    # -- built-ins

    def cmd_help(self, rest: str) -> None:
        del rest
        print(HELP, end="", file=sys.stdout)
        sys.stdout.flush()

    def cmd_targets(self, rest: str) -> None:
        if rest:
            self.targets = resolve_targets(rest, self.console.hosts)
        hosts = self.console.hosts
        print(f"targets: {describe(self.targets, hosts)} ({len(self.targets)} of {len(hosts)} servers)")
        by_host: dict[str, list[int]] = {}
        for rank, host in hosts.items():
            by_host.setdefault(host, []).append(rank)
        for host, ranks in sorted(by_host.items()):
            print(f"  {host}: @{format_ranks(ranks)}")
        for reason in self.console.session.refused.values():
            print(f"  refused: {reason}")
        sys.stdout.flush()

    def cmd_timeout(self, rest: str) -> None:
        if rest:
            try:
                value = float(rest)
            except ValueError:
                raise ValueError(f"usage: :timeout SECONDS (a number, 0 = none), not {rest!r}") from None
            if value < 0:
                raise ValueError("a timeout cannot be negative")
            self.console.timeout = value
        shown = f"{self.console.timeout:g} s" if self.console.timeout else "none"
        print(f"timeout: {shown}")
        sys.stdout.flush()

    def cmd_mode(self, rest: str) -> None:
        if rest:
            if rest not in ("grouped", "live"):
                raise ValueError("mode is 'grouped' or 'live'")
            self.mode = rest
        print(f"mode: {self.mode}")
        sys.stdout.flush()

    def cmd_raw(self, rest: str) -> None:
        if rest:
            if rest not in ("on", "off"):
                raise ValueError("usage: :raw on|off")
            self.raw = rest == "on"
        print(f"raw: {'on' if self.raw else 'off'}")
        sys.stdout.flush()

    def cmd_attach(self, rest: str) -> None:
        self.last_status = attach.run_builtin(self.console, self.targets, rest, self.tty, self.err)

    def cmd_put(self, rest: str) -> None:
        words = shlex.split(rest)
        if not 1 <= len(words) <= 2:
            raise ValueError("usage: :put LOCAL [REMOTE]")
        local = words[0]
        remote = words[1] if len(words) == 2 else os.path.basename(local)
        if os.path.isdir(local):
            raise ValueError(f":put copies one file: {local!r} is a directory on the console's machine "
                             "(:put -r is not there yet; tar it, or :put its files)")
        if not os.path.isfile(local):
            raise ValueError(f":put copies a file of the console's machine: no file {local!r} in the "
                             f"console's directory {os.getcwd()} (not the targets' cwd)")
        size = os.path.getsize(local)
        progress = Progress(f"put {os.path.basename(local)}", size, self.err)
        started = time.monotonic()
        with self.keys():
            verdicts = self.console.put(local, remote, self.targets, progress)
        progress.end()
        self._report("put", verdicts, size, time.monotonic() - started)

    def cmd_get(self, rest: str) -> None:
        words = shlex.split(rest)
        if not 1 <= len(words) <= 2:
            raise ValueError("usage: :get REMOTE [LOCAL]")
        remote = words[0]
        local = words[1] if len(words) == 2 else os.path.basename(remote)
        progress = Progress(f"get {os.path.basename(remote)}", 0, self.err)
        started = time.monotonic()
        with self.keys():
            verdicts = self.console.get(remote, local, self.targets, progress)
        progress.end()
        self._report("get", verdicts, 0, time.monotonic() - started)
        written = self.console.get_destinations(remote, local, verdicts)
        for rank, error in sorted(verdicts.items()):
            if not error:
                print(f"  {written[rank]}")
        sys.stdout.flush()

    def _report(self, what: str, verdicts: dict[int, str], size: int, seconds: float) -> None:
        good = [r for r, e in verdicts.items() if not e]
        if good:
            extra = f", {size / 2**20 / max(seconds, 1e-6):.1f} MiB/s" if size else ""
            print(f"mpish: {what} @{format_ranks(good)}: ok, SHA-256 verified ({seconds:.2f} s{extra})")
        failures: dict[str, list[int]] = {}
        for rank, error in verdicts.items():
            if error:
                failures.setdefault(error, []).append(rank)
        for error, ranks in failures.items():
            print(self.style.error(f"mpish: {what} @{format_ranks(ranks)}: {error}"), file=self.err)
        sys.stdout.flush()

    def cmd_quit(self, rest: str) -> None:  # handled in loop(); here for :help discoverability
        del rest
