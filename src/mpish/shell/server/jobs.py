"""A server's bash and its commands: start, end marker and status, interrupts, kills, restarts.

No messages here: :class:`Shell` tells the server's loop (:mod:`.loop`) when a command
ended (:class:`Ended`), and the loop reports it. How interrupts escalate and why bash is
stopped before the command's processes are killed: the package's doc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable

from mpish.report import Diagnostics
from mpish.transport.procfs import alive, children, holds_pipe, proc_state
from mpish.wire.message import Frozen, frozen

from .. import protocol as p
from ..scratch import SHELL_PREFIX, HeldDirectory
from .bash import (
    Bash,
    SyntaxCheck,
    command_line,
    initial_state,
    state_is_complete,
    write_command,
    write_text,
)
from .sigint import LineInterrupt, SignalLoop, job_processes
from .stdin import StdinFeed

log = Diagnostics(__name__)

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL on a timeout
JOB_SETTLE = 0.3  # seconds a job started by the last command has before the session's hang-up
ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)  # 1st, 2nd, later Ctrl-C
EXITED = "the shell exited; a new one has the state from before this command"
RESTARTED = "the command ignored SIGINT: the shell was restarted, state restored from before the command"
STUCK = ("the shell spun in its own SIGINT handler after the interrupt, a bash race: it was restarted, "
         "state restored from before the command")
KILLING_POLL = 0.02  # while killing a command, look at its processes this often
EXIT_TRAP_GRACE = 2.0  # seconds an idle bash gets at the end of the session to run its EXIT trap
SYNTAX_ERROR = 2  # bash's status for a line that does not parse


@frozen
class Ended(Frozen):
    """How a command ended, as its Done says; ``restart``: bash must be replaced after."""

    cmd_id: int
    exit: int
    signal: int
    seconds: float
    timed_out: bool
    error: str = ""
    note: str = ""
    restart: bool = False


class Command:  # a plain class, not a dataclass: nothing generated when a server starts
    cmd_id: int
    marker: str
    started: float
    deadline: float | None
    status: int | None = None
    cwd: str = ""
    interrupts: int = 0
    timed_out: bool = False
    interrupted: bool = False  # SIGINT was sent to bash and to the command's processes
    killing: bool = False  # bash is stopped and the command's processes are being killed
    last_signal: int = 0
    signalled_at: float = 0.0
    pids: set[int]  # set in __init__ (one set per command)
    chasing: LineInterrupt | None = None  # the first Ctrl-C's late children are being signalled (sigint.py)
    spin: SignalLoop | None = None  # after the first Ctrl-C: is bash caught in its SIGINT handler
    stuck: bool = False  # it was: bash is being replaced
    earlier: frozenset[int] = frozenset()  # bash's children before the command: earlier jobs, not its forks
    stdin: StdinFeed | None = None  # the console's stdin, when the Run asked for it
    ended: Ended | None = None  # it could not even start
    stderr: bytes = b""  # what it said without starting (bash's syntax error): sent before its Done

    def __init__(self, cmd_id: int, marker: str, started: float, deadline: float | None) -> None:
        self.cmd_id = cmd_id
        self.marker = marker
        self.started = started
        self.deadline = deadline
        self.pids = set()

    @property
    def end(self) -> bytes:
        """The end marker as __mpish_end writes it to stdout and stderr."""
        return b"\x1f" + self.marker.encode() + b"\x1e"

    def end_stdin(self) -> None:
        """The command ended: its stdin goes (Input still on its way is then ignored)."""
        if self.stdin is not None:
            self.stdin.close()
            self.stdin = None


Flush = Callable[[Bash, Command], None]  # forward what the pipes still hold


class Shell:
    """One rank's bash, replaced when it ends, and the command running in it."""

    def __init__(self, rank: int, size: int) -> None:
        # locked while this server lives; one left by a server killed with SIGKILL is swept
        self.scratch = HeldDirectory(SHELL_PREFIX, f"{rank}-")
        self.state_dir = self.scratch.path
        self.state = os.path.join(self.state_dir, "state")
        environ = dict(os.environ, MPISH_RANK=str(rank), MPISH_SIZE=str(size))
        write_text(self.state, initial_state(environ, os.getcwd()))
        self.cwd = os.getcwd()
        self.executable = which("bash") or "/bin/bash"
        self.syntax = SyntaxCheck(self.executable, self.state_dir)
        self.bash: Bash | None = None
        self.last_status = 0  # the previous command's exit status: its ``$?``
        self.ended_at = 0.0  # when the last command ended (monotonic): its jobs settle (hang_up)
        self.sessions: set[int] = set()  # every bash started leads its own session
        self.output_pipes: set[int] = set()  # the inodes of their output pipes (hang_up)

    def start_bash(self) -> Bash | None:
        try:
            self.bash = Bash(self.executable, self.state_dir, self.state)
            self.sessions.add(self.bash.pid)
            self.output_pipes |= {os.fstat(fd).st_ino for fd in (self.bash.out.fd, self.bash.err.fd)}
        except OSError:
            self.bash = None
        return self.bash

    def _restart(self) -> Bash | None:
        if self.bash is not None:
            self.bash.close()
        return self.start_bash()

    def start(self, run: p.Run) -> Command:
        """Write the command to bash; a command that cannot start has ``ended`` set."""
        started = time.monotonic()
        deadline = started + run.timeout if run.timeout > 0 else None
        command = Command(run.cmd_id, os.urandom(16).hex(), started, deadline)
        bash = self.bash if self.bash is not None and self.bash.proc.poll() is None else self._restart()
        if bash is None:
            command.ended = Ended(run.cmd_id, 127, 0, 0.0, False, "cannot start bash")
            return command
        command_file = os.path.join(self.state_dir, "command")
        fifo = os.path.join(self.state_dir, f"stdin.{command.marker}") if run.stdin else None
        try:
            write_command(command_file, run.command)
            error = self.syntax.error(command_file, run.command)
            if error is not None:  # bash's message and status, and nothing runs (SyntaxCheck)
                command.stderr = error
                command.ended = Ended(run.cmd_id, SYNTAX_ERROR, 0, time.monotonic() - started, False)
                return command
            if fifo is not None:
                command.stdin = StdinFeed(fifo)
        except OSError:
            command.status = -1  # check() reports it
            return command
        for stream in (bash.out, bash.err):  # what a background job wrote after the last marker stays
            stream.held, stream.ended = (stream.held if stream.ended else 0), False
        command.earlier = frozenset(children(bash.pid))  # one small read: /proc/PID/task/PID/children
        if not bash.write(command_line(command_file, command.marker, self.last_status, fifo)):
            command.status = -1  # bash is gone: check() reports it
        return command

    def finished(self, ended: Ended) -> None:
        """The command's end was reported: its status is the next ``$?``; a new bash if needed."""
        self.last_status = ended.exit
        self.ended_at = time.monotonic()
        if ended.restart:
            self.start_bash()

    # -- status pipe

    def read_status(self, command: Command | None) -> None:
        bash = self.bash
        if bash is None:
            return
        for record in bash.read_status():
            text = record.decode(errors="surrogateescape")
            if text.startswith("saved "):
                self._adopt_state(text[6:])
                continue
            if text.startswith("stdin "):
                if command is not None and command.stdin is not None and text[6:] == command.marker:
                    command.stdin.bash_opened()
                continue
            marker, _, rest = text.partition(" ")
            status, _, cwd = rest.partition(" ")
            if command is not None and marker == command.marker and status.isdigit():
                command.status = int(status)
                command.cwd = cwd

    def _adopt_state(self, marker: str) -> None:
        saved = os.path.join(self.state_dir, f"state.{marker}")
        if "/" in marker or not marker or not state_is_complete(saved):  # a name in the directory only
            return
        with contextlib.suppress(OSError):
            os.replace(saved, self.state)

    # -- the command's end

    def timed_out(self, command: Command) -> bool:
        return command.deadline is not None and time.monotonic() > command.deadline and command.status is None

    def check(self, command: Command, flush: Flush) -> Ended | None:
        """How the command ended, if it did (bash replaced as needed); else None."""
        if command.ended is not None:
            return command.ended
        if command.chasing is not None and not command.chasing.chase(command.status is not None):
            command.chasing = None
        bash = self.bash
        spin = command.spin
        if spin is not None and not command.killing and command.status is None and spin.spinning():
            self._restart_stuck(command)
        if command.killing:
            return self._check_killed(command, flush)
        if bash is not None and command.status is not None and bash.out.ended and bash.err.ended:
            return self._finished(command)
        if bash is None or command.status == -1:
            return self._bash_ended(command, flush)
        if bash.status_eof and command.status is None and bash.proc.poll() is None:
            if bash.execed():
                return None  # `exec PROGRAM`: bash is that program now, which runs until it ends
            return self._bash_ended(command, flush)  # a bash that lost its status descriptor
        if bash.proc.poll() is not None:
            self.read_status(command)
            if command.status is None:
                return self._bash_ended(command, flush)
        return None

    def _finished(self, command: Command) -> Ended:
        self.cwd = command.cwd or self.cwd
        command.end_stdin()
        code = command.status or 0
        sig = signal.SIGINT if command.interrupted and code == 128 + signal.SIGINT else 0
        if command.timed_out:  # a timeout ends the command's whole tree, background jobs too
            for pid in job_processes(command.marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        return Ended(command.cmd_id, code, sig, time.monotonic() - command.started, command.timed_out)

    def _bash_ended(self, command: Command, flush: Flush) -> Ended:
        """Bash exited during the command (``exit``, a crash): report it, start a new one."""
        bash = self.bash
        code = -signal.SIGKILL
        if bash is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                bash.proc.wait(timeout=1)
            flush(bash, command)
            code = bash.close()
        command.end_stdin()
        sig = -code if code < 0 else 0
        return Ended(command.cmd_id, 128 + sig if sig else code, sig, time.monotonic() - command.started,
                     command.timed_out, "", EXITED, restart=True)

    def _check_killed(self, command: Command, flush: Flush) -> Ended | None:
        bash = self.bash
        if bash is None:
            return None
        command.pids = {pid for pid in command.pids if alive(pid)} | job_processes(command.marker)
        if command.pids:
            for pid in command.pids:  # started since the last signal: same treatment
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, command.last_signal)
            return None
        flush(bash, command)
        bash.close()
        command.end_stdin()
        sig, note = (signal.SIGINT, STUCK) if command.stuck else (command.last_signal, RESTARTED)
        return Ended(command.cmd_id, 128 + sig, sig, time.monotonic() - command.started, command.timed_out,
                     "", note, restart=True)

    # -- interrupts

    def time_out(self, command: Command) -> None:
        """The deadline passed: interrupt the line, then escalate every KILL_GRACE seconds."""
        if not command.timed_out:
            command.timed_out = True
            self._interrupt_line(command)
        elif (time.monotonic() - command.signalled_at > KILL_GRACE
              and command.last_signal != signal.SIGKILL):
            self._kill(command, signal.SIGKILL if command.killing else signal.SIGTERM)

    def interrupt(self, command: Command) -> None:
        """Ctrl-C: the first interrupts the line, the next ones escalate (ESCALATION)."""
        if command.status is not None:
            return
        command.interrupts += 1
        if command.interrupts == 1 and not command.killing:
            self._interrupt_line(command)
        else:
            self._kill(command, ESCALATION[min(command.interrupts, len(ESCALATION)) - 1])

    def _interrupt_line(self, command: Command) -> None:
        """SIGINT to bash and to the command's processes: bash aborts the line (package doc)."""
        bash = self.bash
        if bash is None:
            return
        self.read_status(command)
        if command.status is not None:
            return  # it had just finished: nothing to interrupt
        command.interrupted = True
        command.last_signal = signal.SIGINT
        command.signalled_at = time.monotonic()
        command.chasing = LineInterrupt(bash.pid, command.marker, command.earlier)
        command.spin = SignalLoop(bash.pid)

    def _restart_stuck(self, command: Command) -> None:
        """Bash spins in its SIGINT handler (sigint.py): replaced, as after a third Ctrl-C."""
        pid = self.bash.pid if self.bash else 0
        command.interrupts = len(ESCALATION)
        self._kill(command, signal.SIGKILL)
        if command.killing:  # else its status had just arrived: it ends as it is
            command.stuck = True
            log.warning("bash %d spun in its SIGINT handler since command %d was interrupted: restarted",
                        pid, command.cmd_id)

    def _kill(self, command: Command, sig: int) -> None:
        """Stop bash, signal every process of the command (see the package doc)."""
        bash = self.bash
        if bash is None:
            return
        if not command.killing:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(bash.pid, signal.SIGSTOP)
            _wait_stopped(bash.pid)
            self.read_status(command)
            if command.status is not None:  # it had just finished: nothing to interrupt
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(bash.pid, signal.SIGCONT)
                return
            command.killing = True
        command.last_signal = sig
        command.signalled_at = time.monotonic()
        command.pids = job_processes(command.marker)
        for pid in command.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    # -- end

    def close(self, command: Command | None) -> None:
        """End of the session: the running command killed, bash closed, the sessions hung up."""
        if command is not None and self.bash is not None:
            command.interrupts = len(ESCALATION)
            self._kill(command, signal.SIGKILL)
        if command is not None:
            command.end_stdin()
        if self.bash is not None:  # idle at the end: the user's EXIT trap runs, as at ssh's end
            self.bash.close(grace=EXIT_TRAP_GRACE if command is None else 0.0)
            self.bash = None
        hang_up(self.sessions, self.ended_at + JOB_SETTLE, self.output_pipes)

    def remove(self) -> None:
        """The state directory goes, and its lock with it (``shell/scratch.py``)."""
        self.scratch.remove()


# The shipped ssh server starts with a Shell: this stands in for shutil.which, whose modules
# (random, bz2, lzma, fnmatch...) cost ~3 ms of CPU to import on every host at every start.


def which(program: str) -> str | None:
    """The first executable ``program`` on PATH (os.defpath without one), as shutil.which."""
    for directory in os.get_exec_path():
        path = os.path.join(directory or ".", program)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def hang_up(sessions: set[int], settle_until: float = 0.0, pipes: set[int] | None = None) -> None:
    """SIGHUP (and SIGCONT) to every process left in the shells' sessions that still holds one
    of their output ``pipes`` (inodes; None: every process), as ssh's hangup ends a login's
    jobs: ``sleep 100 &`` ends with the session, ``nohup`` jobs live on, and so does a job
    whose output went elsewhere (``server > log 2>&1 &``), which ssh and clush leave running
    (without a terminal nothing hangs it up; it holds no channel ssh would wait for).

    A job started by a command that has just ended may not have reached nohup's
    ``signal(SIGHUP, SIG_IGN)`` yet (``mpish ssh -f`` hangs each host up right after its
    command: 7 of 32 ``nohup sleep &`` died under load): if any is left, the hang-up waits
    until ``settle_until`` (monotonic). Each process's session id comes from ``getsid``, one
    system call (reading every ``/proc/PID/stat`` cost ~15 times more, on every host at every
    session's end)."""
    left = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.getsid(pid) in sessions:
                left.append(pid)
        except OSError:  # gone meanwhile
            continue
    if left and (wait := settle_until - time.monotonic()) > 0:
        time.sleep(wait)
    for pid in left if pipes is None else [pid for pid in left if holds_pipe(pid, pipes)]:
        for sig in (signal.SIGHUP, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _wait_stopped(pid: int) -> None:
    """Wait (briefly) until ``pid`` is really stopped: SIGSTOP is delivered asynchronously."""
    for _ in range(1000):
        if proc_state(pid) in ("T", "t", "Z", ""):
            return
        time.sleep(0.0001)
