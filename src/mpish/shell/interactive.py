"""The interactive console: the loop of prompt, line and command, built-ins, targets.

Lines come from readers.py: on a terminal prompt_toolkit's prompt (line editing, history,
Ctrl-R); under mpiexec, whose rank 0 has no terminal on stdin, ``/dev/tty``; with no
terminal at all plain lines from stdin (scripts: ``mpish < commands``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

from mpish import report
from mpish.wire.errors import MpishError
from mpish.wire.message import replace

from . import attach, outfiles, screen
from . import console_put_get as put_get
from .console import Console
from .continuation import Block
from .grouping import GroupedSink, Style, make_sink, status_lines
from .keyboard import InterruptKeys, TypedAhead, terminate_as_interrupt
from .names import RankHostNames, RankNames, ServerNames, status_of
from .options import OutputMode, seconds
from .ranks import TargetError, describe, fold_hosts, format_ranks, resolve_targets
from .readers import LineReader, ToolkitReader, make_reader
from .session import NOT_REACHED

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
  :put [-r] [-p] LOCAL [REMOTE]   (or LOCAL... DIRECTORY, as cp)
                          copy a file (-r: a directory) of the console's cwd to the targets,
                          verified (SHA-256; a file over ssh: its size, ssh's MAC the bytes);
                          as cp: a directory REMOTE receives it under its own name; -r keeps
                          modes and empty directories, copies links as links and never
                          writes through one; -p keeps times and exact modes (scp -p)
  :get [-r] [-p] REMOTE [LOCAL]   (or REMOTE... DIRECTORY)
                          the same from the targets (NAME.<rank> if several, NAME.<host>
                          over ssh, as clush --rcopy); the paths written are printed
  @TARGETS :put|:get ...  a transfer for other targets
  :lcd [DIR]              change the console's own directory (where :put reads and :get
                          writes; default: your home; -: the one before), and show it
  :timeout [SECONDS]      show or set the per-command timeout (0 = none)
  :mode [MODE]            grouped: identical outputs once (clush -b), lines: each line
                          prefixed (-L), live: as it comes (-v), json: one object per target;
                          the option works too (:mode -L)
  :raw [on|off]           show remote output unfiltered, escape sequences included
  :attach [[@]TARGET] [COMMAND]
                          run COMMAND (default: your shell) on one target in a terminal of
                          its own, as ssh -t: keys, window size and Ctrl-C/Ctrl-Z go to it;
                          back here with its exit status when it ends. Escapes, after
                          Enter: ~. hang up (end it), ~? help, ~~ a ~
  :reconnect [HOSTS]      mpish ssh: connect again to hosts that were lost (default: all of
                          them), each with a new shell
  :help                   this text
  :quit, exit, Ctrl-D     end the session (:quit with status 0, exit and Ctrl-D with the
                          last command's, as bash; exit N with N)
"""


MODES = ("grouped", "lines", "live", "json")  # :mode's choices (OutputMode.kind)
MODE_FLAGS = {"-b": "grouped", "-L": "lines", "-v": "live", "--json": "json"}  # as on the command line
CONTINUATION_PROMPT = "> "  # bash's PS2: the command goes on (shell/continuation.py)


def builtin_name(line: str) -> str:
    """``put`` for ``:put FILE``: a line naming a built-in (a known one or a typo of one);
    "" for bash's own ``:`` (``: <<'EOF'`` block comments, ``: ${X:=y}``)."""
    named = re.match(r":(\w+)", line)
    return named.group(1) if named else ""


def target_words(spec: str) -> str:
    """A target spec with its node sets and groups expanded (``@node[1-2]``, ``@1,@3``, as
    ``-w`` and ``-x`` read them: nodes.expand_target_words), for resolve_targets."""
    from .nodes import expand_target_words

    words = expand_target_words(spec)  # its first word may keep its @ (nodes.py)
    return words if words.startswith("@") else "@" + words


class Repl:
    """Read commands, run them on the targets, show their output as the command line's
    output options say (``output``: -b -B -L -N -q --json --label, :mode changes its kind),
    at most ``fanout`` targets running a command at once (clush's -f; 0: all)."""

    def __init__(self, console: Console, verbose: int = 0, reader: LineReader | None = None,
                 output: OutputMode | None = None, fanout: int = 0) -> None:
        self.console = console
        self.targets = frozenset(console.hosts)
        self.output = output or OutputMode(kind="live" if verbose else "grouped")
        self.fanout = fanout
        self.reader = reader
        self.out = sys.stdout.buffer
        self.err = sys.stderr
        self.style = Style.for_stream(sys.stdout)
        self.last_status = 0
        self.tty: IO[str] | None = None
        self.typed_ahead = TypedAhead()
        self.raw = False  # remote output shown unfiltered (screen.py)
        self.old_lcd: str | None = None  # the console's directory before the last :lcd (:lcd -)
        self.pruned: set[int] = set()  # default targets lost since they were chosen (live_targets)
        self.report = report.Reporter(paint=Style.for_stream(sys.stderr).error)  # messages, not output

    def live_targets(self) -> frozenset[int]:
        """The default targets less the servers lost since; those are kept in ``pruned``, to
        be targets again if :reconnect brings them back (until :targets chooses anew)."""
        gone = self.targets - set(self.console.hosts)
        self.pruned |= gone
        self.targets -= gone
        return self.targets

    def prompt(self) -> str:
        self.live_targets()
        where = describe(self.targets, self.console.hosts)
        return f"[{where}] {self.console.cwd(self.targets)}#> "

    def loop(self) -> int:
        from .mpi_session import under_launcher

        reader = self.reader or make_reader(under_launcher())
        if isinstance(reader, ToolkitReader):
            self.tty = reader.tty
            reader.complete_with(self)
        # at a terminal over ssh, a session whose every host was lost stays for :reconnect
        stays = isinstance(reader, ToolkitReader) and hasattr(self.console.session, "reconnect")
        while self.console.hosts or (stays and self.console.lost):
            try:
                line = self._next_line(reader)
            except EOFError:
                break
            except KeyboardInterrupt:
                continue
            line = line.lstrip()  # trailing blanks stay: "echo a \\ " ends in an escaped blank
            if not line.rstrip():
                continue
            if line.rstrip() in (":quit", ":q", "quit"):  # the console's own quit: a clean end
                return 0
            if line.rstrip() in ("exit", "logout"):  # as bash's: the last command's status
                break
            ended = self._exit_status(line)
            if ended is not None:  # as bash's exit N: the session ends with that status
                return ended
            try:
                line = self._whole(reader, line)
            except KeyboardInterrupt:  # the block is dropped, as bash drops it
                continue
            with terminate_as_interrupt() as terminated:  # while it runs, a SIGTERM is a Ctrl-C
                self.console.terminated = terminated
                try:
                    self.handle(line)
                except (MpishError, OSError, ValueError) as exc:
                    self.report.say(str(exc))
                    self.last_status = 1
            if terminated:  # scancel, a job's time limit: what the command sent is shown; then 143
                return 128 + terminated[0]
        return self.last_status  # exit, or the end of input: the last command's, as bash's

    def _exit_status(self, line: str) -> int | None:
        """The console's status for ``exit N`` (``logout N``) typed alone, as bash's: N modulo 256
        (``exit -1``: 255, ``exit +3``: 3), ``exit $?`` the last command's; a plain word that is
        no number is bash's "numeric argument required" (status 2). None: not such a line (it
        runs on the targets: ``exit 3 4``, ``exit $rc``, inside a compound)."""
        ended = re.fullmatch(r"(?:exit|logout)\s+(?:--(?:\s+|$))?([\w.+$?-]*)\s*", line)
        if ended is None:
            return None
        word = ended.group(1)
        if not word:  # exit --
            return self.last_status
        if re.fullmatch(r"[-+]?\d+", word) and -(2**63) <= int(word) < 2**63:  # bash's intmax_t
            return int(word) & 0xFF
        if word == "$?":
            return self.last_status
        if "$" in word:
            return None
        self.report.say(f"exit: {word}: numeric argument required")
        return 2

    def _whole(self, reader: LineReader, line: str) -> str:
        """The line and those bash would read after it as one command (an open ``if``, quote,
        here-document, trailing ``\\`` or ``&&``; shell/continuation.py), each read after the
        continuation prompt. A built-in is one line. At the end of input the text is sent as it
        is (the server then reports bash's "unexpected end of file", as bash would)."""
        command = line.partition(" ")[2] if line.startswith("@") else line
        if builtin_name(command.lstrip()):
            return line.rstrip()
        block = Block()
        more = command
        while block.add(more):
            try:
                more = self._next_line(reader, CONTINUATION_PROMPT)
            except EOFError:
                break
            line += "\n" + more
        return line

    def _next_line(self, reader: LineReader, prompt: str = "") -> str:
        """A line typed ahead (shown after its prompt, as a terminal echoes it), else read one."""
        prompt = prompt or self.prompt()
        line = self.typed_ahead.next_line()
        if line is None:
            return reader.read(prompt, default=self.typed_ahead.take_partial())
        screen = self.tty or sys.stdout
        screen.write(prompt + line + "\n")
        screen.flush()
        return line

    def handle(self, line: str) -> None:
        if builtin_name(line):
            name, _, rest = line[1:].partition(" ")
            builtin = getattr(self, f"cmd_{name}", None)
            if builtin is None:
                self.report.say(f"unknown built-in :{name} (see :help)")
                return
            builtin(rest.strip())
            return
        targets = self.targets
        if line.startswith("@"):
            spec, _, line = line.partition(" ")
            targets = resolve_targets(target_words(spec), self.console.hosts, self.console.lost,
                                      unreached=self.unreached())
            line = line.strip()
            if not line:
                raise TargetError("no command after the targets")
            if (name := builtin_name(line)) and name not in ("put", "get", "attach"):  # (it was ignored)
                raise TargetError(f"@TARGETS goes before a command, :put, :get or :attach, not :{name}")
            if name:  # a built-in for these targets only: @1 :get FILE
                saved, self.targets = self.targets, targets
                try:
                    self.handle(line)
                finally:
                    self.targets = saved
                return
        if not self.console.hosts:
            raise TargetError("every host was lost: :reconnect brings them back (or :quit)")
        self.run(line, targets)

    def names(self) -> ServerNames:
        """How output names the servers: by rank, or by host (--label host)."""
        return RankHostNames(self.console.hosts) if self.output.by_host else RankNames()

    def _ctrl_c(self) -> bool:
        key = self.console.interrupt_key
        return key is not None and key()

    def run(self, command: str, targets: frozenset[int]) -> None:
        names, json = self.names(), self.output.kind == "json"
        made = make_sink(self.output, len(targets), self.out, sys.stderr.buffer, self.style, names,
                         end_lines=True)
        if isinstance(made, GroupedSink):  # Ctrl-C also ends a long display of what was gathered
            made.stop = self._ctrl_c
        shown = made if json else screen.for_terminal(made, self.out, self.raw)
        sink = outfiles.tee(shown, self.output, names, sys.stderr.buffer)  # --outdir: a file per server too
        session: Any = self.console.session  # over ssh, a host lost now is named by its result alone
        announce = getattr(session, "report_losses", None)
        try:
            if announce is not None:
                session.report_losses = False
            with self.keys():
                self.console.run(command, targets, sink, fanout=self.fanout)
        finally:
            if announce is not None:
                session.report_losses = announce
        sys.stdout.flush()
        results = made.results.values()  # as the names report them (a lost host: 255)
        for text in [] if json else status_lines(results, Style.for_stream(sys.stderr), names, notes=True,
                                                 quiet=self.output.quiet):
            print(text, file=self.err)
        self.last_status = max([status_of(r) for r in results] + [int(outfiles.failed(sink))])
        failed = self.last_status != 0 or any(r.interrupted for r in results)
        if (hint := attach.terminal_hint(command, targets, failed)) and not json:
            print(hint, file=self.err)  # vi hung, top said "failed tty get": :attach gives a terminal
        self.err.flush()

    @contextlib.contextmanager
    def keys(self) -> Iterator[InterruptKeys]:
        """Ctrl-C as a key for the duration of one operation (see InterruptKeys, given: its
        ``interrupted`` says afterwards whether Ctrl-C was typed)."""
        keys_ = InterruptKeys(self.tty)
        try:
            with keys_:
                self.console.interrupt_key = keys_.pressed
                yield keys_
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
            self.targets = resolve_targets(target_words(rest), self.console.hosts, self.console.lost,
                                           unreached=self.unreached())
            every = self.targets == set(self.console.hosts)  # @all: the lost ones too, if they come back
            self.pruned = set(self.console.lost) if every else set()
        hosts, lost = self.console.hosts, len(self.console.lost)  # the lost count: "2 of 2" hid one
        print(f"targets: {self.target_names()} ({len(self.targets)} of {len(hosts) + lost} {self.servers}"
              f"{f', {lost} lost' if lost else ''})")
        for line in self.server_lines():
            print(line)
        unreached = sorted(self.unreached())
        gone = [rank for rank in self.console.lost if rank not in unreached]
        if gone:
            print(f"  lost: {self.describe_all(gone)}: its server is gone{self.lost_hint}")
        if unreached:
            print(f"  lost: {self.describe_all(unreached)}: {NOT_REACHED}{self.lost_hint}")
        for reason in self.console.session.refused.values():
            print(f"  refused: {reason}")
        sys.stdout.flush()

    def cmd_timeout(self, rest: str) -> None:
        if rest:
            try:
                value = seconds(rest.strip())
            except ValueError as exc:
                raise ValueError(f"usage: :timeout SECONDS: {exc}") from None
            self.console.timeout = value
        shown = f"{self.console.timeout:g} s" if self.console.timeout else "none"
        print(f"timeout: {shown}")
        sys.stdout.flush()

    def cmd_mode(self, rest: str) -> None:
        rest = MODE_FLAGS.get(rest.strip(), rest.strip())  # :mode -L (helper-141: not accepted)
        if rest:
            if rest not in MODES:
                raise ValueError(f"usage: :mode {'|'.join(MODES)} (or the option: -b, -L, -v, --json)")
            gathered = self.output.gathered and rest != "lines"  # :mode lines is -L's, not -bL's
            self.output = replace(self.output, kind=rest, gathered=gathered)
        print(f"mode: {self.output.kind}")
        sys.stdout.flush()

    def cmd_raw(self, rest: str) -> None:
        if rest:
            if rest not in ("on", "off"):
                raise ValueError("usage: :raw on|off")
            self.raw = rest == "on"
        print(f"raw: {'on' if self.raw else 'off'}")
        sys.stdout.flush()

    def cmd_attach(self, rest: str) -> None:
        first = rest.split(None, 1)[0] if rest.strip() else ""
        named = [*self.console.hosts.values(), *self.console.lost.values()]  # a lost one: said so
        ranks = [*self.console.hosts, *self.console.lost]
        if first and first[0] != "@" and (any(first in (host, host.split(".")[0]) for host in named)
                                          or (first.isdigit() and int(first) in ranks)):  # :attach 2
            rest = f"@{rest.lstrip()}"  # :attach n2 top, as :attach @n2 top (clush names hosts bare)
        self.last_status = attach.run_builtin(self.console, self.targets, rest, self.tty, self.err)

    def cmd_put(self, rest: str) -> None:
        self.last_status = put_get.put_builtin(self.console, self.targets, rest, self.keys, self.err)

    def cmd_get(self, rest: str) -> None:
        self.last_status = put_get.get_builtin(self.console, self.targets, rest, self.keys, self.err)

    def cmd_lcd(self, rest: str) -> None:
        words = put_get.parse_words(rest, "usage: :lcd [DIR]")
        if len(words) > 1:
            raise ValueError("usage: :lcd [DIR] (one directory; quote a name with blanks)")
        where = os.path.expanduser(words[0] if words else "~")
        if where == "-":  # as cd -: back where :lcd was before
            if self.old_lcd is None:
                raise ValueError(":lcd: no previous local directory (:lcd - goes back after an :lcd)")
            where = self.old_lcd
        try:
            before: str | None = os.getcwd()
        except FileNotFoundError:  # removed by another program: :lcd is the way out (helper-141)
            before = None
        try:
            os.chdir(where)
        except OSError as exc:
            raise ValueError(f":lcd: {where}: {exc.strerror} (on the console's machine)") from None
        self.old_lcd = before or self.old_lcd
        print(f"local directory: {os.getcwd()}")
        sys.stdout.flush()
        self.last_status = 0

    lost_hint = ""  # after a lost server in :targets (mpish ssh: how to bring it back)
    servers = "servers"  # what :targets counts (mpish ssh: hosts)

    def target_names(self) -> str:
        return describe(self.targets, self.console.hosts)

    def server_lines(self) -> list[str]:
        """:targets' list of the live servers: their ranks per host."""
        by_host: dict[str, list[int]] = {}
        for rank, host in self.console.hosts.items():
            by_host.setdefault(host, []).append(rank)
        return [f"  {host}: @{format_ranks(ranks)}" for host, ranks in sorted(by_host.items())]

    def cmd_reconnect(self, rest: str) -> None:  # mpish ssh's: ssh_repl.py
        del rest
        raise ValueError(":reconnect is for mpish ssh: an MPI rank that was lost cannot be started "
                         "again in its job (start a new session)")

    def unreached(self) -> frozenset[int]:
        """The lost servers never reached (mpish ssh: hosts down when the console started)."""
        return frozenset(rank for rank in self.console.lost if self.console.peers[rank].lost == NOT_REACHED)

    def describe_all(self, ranks: Iterable[int]) -> str:
        """Ranks as ``@2`` (their hosts), lost ones too (console.describe names only live ones)."""
        hosts = {**self.console.lost, **self.console.hosts}
        return f"@{format_ranks(ranks)} ({fold_hosts(sorted({hosts[r] for r in ranks if r in hosts}))})"

    def cmd_quit(self, rest: str) -> None:  # handled in loop(); here for :help discoverability
        del rest
