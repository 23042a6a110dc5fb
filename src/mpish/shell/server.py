"""The shell server: one per rank, runs the console's commands in ONE long-lived bash.

Theory of operation
-------------------
One bash per rank (:mod:`mpish.shell.bash`: how it is started, how each command is
framed with a random end marker, how its pipes are read). ``cd``, ``export``,
variables, functions, aliases and options persist simply because the shell does; the
state dump written after each command is only for recovery, and runs while the console
already has the result, so it costs no latency.

Interrupts (Ctrl-C, timeout) behave as at a terminal. The first Ctrl-C (and a timeout)
sends SIGINT to bash and to every process whose environment carries the command's
``__MPISH_JOB`` marker (the whole tree, background jobs and double-forked daemons
included; jobs of earlier commands are left alone). The interactive bash aborts the
rest of the command's line, as it would at a terminal, and runs ``__mpish_end``: what
ran before the interrupted command (``export``, ``cd``) is kept, ``$?`` is 130. A
builtin loop (``while :; do :; done``) stops the same way. Only when that is not
enough (the command ignores SIGINT: a second Ctrl-C, or ``KILL_GRACE`` after a
timeout) does the server stop bash (SIGSTOP, so that it cannot go on with the rest of
the line), send SIGTERM, then SIGKILL on the next Ctrl-C or after another
``KILL_GRACE``, and once none of the command's processes is left, replace bash with a
new one started from the last state dump; the result then says so (:data:`RESTARTED`),
over MPI and ssh alike. A command that ends the shell itself (``exit``,
``exec``, ``set -e`` and a failure, ``kill $$``, a crash) is reported with bash's exit
status and the session continues the same way. Output still in the pipes is
forwarded; background jobs that still hold an old pipe lose their later output. When
the session ends, every process left in the sessions of the server's shells gets
SIGHUP, as ssh's hangup does (:func:`hang_up`).

Waiting on MPI and on pipes at once, in one thread: the main loop polls MPI
(``Improbe``, never a blocking MPI call, which would busy-wait in MPICH), then waits in
``select`` on the status pipe and the output pipes with the
:class:`~mpish.transport.mpi.Backoff` timeout: process output wakes it at once, MPI
arrivals are seen within the backoff (20 us when hot, at most 10 ms when idle, so an
idle server uses ~0% CPU). There are no threads and no queues.

Output path (the bulk of the bytes): each stream is read with ``os.readv`` into a
preallocated 1 MiB buffer and sealed straight from that buffer as raw bytes on its own
SecureChannel channel (1 = stdout, 2 = stderr; control messages are msgpack on channel
0), so a chunk is copied once by the kernel and once by the cipher. MPI keeps message
order between two ranks, so the console sees every output chunk before the command's
``Done``. A stream is read only while the server has credit: at most ``WINDOW`` = 4 MiB
read and not yet acknowledged by the console; without credit the pipe is not read and
the command blocks on a full pipe, so 10 GiB of output keep memory bounded on both
sides and lose no byte. ``get`` is read from the file in the same loop, same credit.
So is the pty of an ``:attach`` session (:mod:`mpish.shell.pty_session`): its master is
selected on with the pipes, and its output is sent raw on channel 1 within the same credit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mpish.transport.link import Link
from mpish.transport.mpi import Backoff, tune_malloc
from mpish.transport.procfs import alive, peak_rss_kib, proc_state
from mpish.wire.channel import SecureChannel
from mpish.wire.errors import MpishError, ProtocolError
from mpish.wire.events import CloseReceived, Message

from . import protocol as p
from .bash import (
    JOB_VARIABLE,
    Bash,
    OutputStream,
    command_line,
    initial_state,
    state_is_complete,
    write_command,
)
from .completion import complete_path
from .pty_session import PtyHost
from .stdin import StdinFeed
from .transfer import PartFile, destination, umask

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL on a timeout
ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)  # 1st, 2nd, later Ctrl-C
EXITED = "the shell exited; a new one has the state from before this command"
RESTARTED = "the command ignored SIGINT: the shell was restarted, state restored from before the command"
KILLING_POLL = 0.02  # while killing a command, look at its processes this often


@dataclass(eq=False)
class _Command:
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
    pids: set[int] = field(default_factory=set)
    stdin: StdinFeed | None = None  # the console's stdin, when the Run asked for it

    @property
    def end(self) -> bytes:
        """The end marker as __mpish_end writes it to stdout and stderr."""
        return b"\x1f" + self.marker.encode() + b"\x1e"


@dataclass(eq=False)
class _Put:
    xfer_id: int
    final: Path
    part: PartFile | None
    size: int
    expected: int
    mode: int
    digest: Any
    error: str = ""


@dataclass(eq=False)
class _Get:
    xfer_id: int
    path: Path
    handle: IO[bytes] | None
    error: str = ""
    size: int = 0
    interrupted: bool = False
    digest: Any = field(default_factory=hashlib.sha256)


class ShellServer:
    """Serve one console over a secure channel; returns when the console ends the session."""

    def __init__(self, link: Link, channel: SecureChannel, console: int = 0) -> None:
        self.link = link
        self.channel = channel
        self.console = console
        self.credit = p.WINDOW
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"mpish-{link.rank}-"))
        self.state = self.state_dir / "state"
        environ = dict(os.environ, MPISH_RANK=str(link.rank), MPISH_SIZE=str(link.size))
        self.state.write_text(initial_state(environ, os.getcwd()))
        self.cwd = os.getcwd()
        self.executable = shutil.which("bash") or "/bin/bash"
        self.bash: Bash | None = None
        self.command: _Command | None = None
        self.last_status = 0  # the previous command's exit status: its ``$?``
        self.puts: dict[int, _Put] = {}
        self.gets: dict[int, _Get] = {}
        self.finished = False
        self.sessions: set[int] = set()  # every bash started leads its own session
        self.console_alive: Callable[[], bool] = lambda: True  # set by launch (failure notices)
        self.ptys = PtyHost(self._send, self._send_output, self.executable, self.state)

    # -- I/O helpers

    def _send(self, message: object) -> None:
        self.link.send_all(self.console, self.channel.send(p.CODEC.encode(message)))

    def _send_output(self, data: bytes) -> None:
        self.link.send_all(self.console, self.channel.send(data, p.STDOUT))

    def hello(self) -> None:
        self._send(p.Hello(p.PROTOCOL_VERSION, socket.gethostname(), os.getpid(), self.cwd))

    def _start_bash(self) -> Bash | None:
        try:
            self.bash = Bash(self.executable, self.state_dir, self.state)
            self.sessions.add(self.bash.pid)
        except OSError:
            self.bash = None
        return self.bash

    # -- main loop

    def serve(self) -> None:
        tune_malloc()
        backoff = Backoff()
        next_console_check = 0.0
        self._start_bash()
        try:
            while not self.finished:
                busy = False
                for source, record in self.link.drain():
                    busy = True
                    if source == self.console:
                        self._on_record(record)
                    # records from any other rank are not ours: dropped unread
                busy = self._pump_gets() or busy
                delay = 0.0 if busy else backoff.next_sleep()
                if delay and time.monotonic() > next_console_check:
                    next_console_check = time.monotonic() + 1.0
                    if not self.console_alive():
                        break  # the console died (shell/mpi_session.py): end the session
                if self.command is not None and self.command.killing:
                    delay = min(delay, KILLING_POLL)
                busy = self._wait_pipes(delay) or busy
                busy = self._check_command() or busy
                used, moved = self.ptys.pump(self.credit)
                self.credit -= used
                busy = moved or busy
                if busy:
                    backoff.activity()
        finally:
            self._shutdown()

    def _wait_pipes(self, delay: float) -> bool:
        bash = self.bash
        if bash is None:
            if delay:
                time.sleep(delay)
            return False
        watched = [] if bash.status_eof else [bash.status_fd]
        if self.credit > 0:
            watched += [s.fd for s in (bash.out, bash.err) if not s.eof] + self.ptys.read_fds()
        if not watched and not (self.command is not None and self.command.stdin is not None
                                and self.command.stdin.wants_write):
            if delay:
                time.sleep(delay)
            return False
        feed = self.command.stdin if self.command is not None else None
        writing = [feed.fd] if feed is not None and feed.wants_write else []
        writing += self.ptys.write_fds()
        ready, writable, _ = select.select(watched, writing, [], delay)
        if writable and feed is not None:
            self._feed(feed)
        if not ready:
            return bool(writable)
        for stream in (bash.out, bash.err):
            if stream.fd in ready:
                self._read_output(bash, stream)
        if bash.status_fd in ready:
            self._read_status(bash)
        return True

    def _read_output(self, bash: Bash, stream: OutputStream) -> None:
        """Read what a pipe has (within credit); forward the current command's part."""
        while self.credit > 0 and not stream.eof:
            total = stream.read(self.credit)
            if total < 0:
                return
            command = self.command
            if command is None or stream.ended:
                stream.held = 0  # a background job's late output: nobody is listening
                continue
            count = stream.split(total, command.end)
            if count:
                self.credit -= count
                self.link.send_all(self.console, self.channel.send(stream.view[:count], stream.stream))
            stream.keep_tail(total)
            if stream.ended or total < len(stream.buffer) // 2:
                return  # the pipe is (nearly) empty: do not spin on EAGAIN

    def _read_status(self, bash: Bash) -> None:
        for record in bash.read_status():
            text = record.decode(errors="surrogateescape")
            if text.startswith("saved "):
                self._adopt_state(text[6:])
                continue
            if text.startswith("stdin "):
                command = self.command
                if command is not None and command.stdin is not None and text[6:] == command.marker:
                    command.stdin.bash_opened()
                continue
            marker, _, rest = text.partition(" ")
            status, _, cwd = rest.partition(" ")
            command = self.command
            if command is not None and marker == command.marker and status.isdigit():
                command.status = int(status)
                command.cwd = cwd

    def _adopt_state(self, marker: str) -> None:
        saved = self.state_dir / f"state.{marker}"
        if saved.name != f"state.{marker}" or not state_is_complete(saved):
            return
        with contextlib.suppress(OSError):
            os.replace(saved, self.state)

    def _on_record(self, record: bytes | bytearray | memoryview) -> None:
        try:
            events = self.channel.receive_record(record)
        except MpishError:
            if not self.channel.is_open and not self.channel.drop_forged:
                self.finished = True  # the channel is unusable: nothing more can be trusted
            return
        for event in events:
            if isinstance(event, Message):
                try:
                    message = p.CODEC.decode(event.data)
                except ProtocolError:
                    continue
                self._on_message(message)
            elif isinstance(event, CloseReceived):
                self.finished = True

    def _on_message(self, message: object) -> None:
        if isinstance(message, p.Run):
            self._start(message)
        elif isinstance(message, p.Credit):
            self.credit += message.nbytes
        elif isinstance(message, p.Input):
            self._input(message)
        elif isinstance(message, p.Interrupt):
            self._interrupt(message.cmd_id)
        elif isinstance(message, p.PutStart):
            self._put_start(message)
        elif isinstance(message, p.PutChunk):
            self._put_chunk(message)
        elif isinstance(message, p.PutEnd):
            self._put_end(message)
        elif isinstance(message, p.GetStart):
            self._get_start(message)
        elif isinstance(message, p.Quit):
            self.finished = True
        elif isinstance(message, p.PtyOpen):
            self.ptys.open(message, self.cwd, busy=self.command is not None)
        elif isinstance(message, p.PtyInput):
            self.ptys.input(message)
        elif isinstance(message, p.PtyResize):
            self.ptys.resize(message)
        elif isinstance(message, p.PtyClose):
            self.ptys.close(message)
        elif isinstance(message, p.Complete):
            self._send(p.Completions(message.req_id, "\0".join(complete_path(message.prefix, self.cwd))))

    # -- commands

    def _done(self, cmd_id: int, code: int, sig: int, seconds: float, timed_out: bool, error: str,
              note: str = "") -> None:
        self.last_status = code
        self._send(p.Done(cmd_id, code, sig, seconds, self.cwd, timed_out, peak_rss_kib(), error, note))

    def _start(self, run: p.Run) -> None:
        if self.command is not None or self.ptys.session is not None:
            self._done(run.cmd_id, 125, 0, 0.0, False, "a command is running")
            return
        bash = self.bash if self.bash is not None and self.bash.proc.poll() is None else self._restart()
        if bash is None:
            self._done(run.cmd_id, 127, 0, 0.0, False, "cannot start bash")
            return
        started = time.monotonic()
        deadline = started + run.timeout if run.timeout > 0 else None
        command = _Command(run.cmd_id, secrets.token_hex(16), started, deadline)
        bash.out.ended = bash.err.ended = False
        bash.out.held = bash.err.held = 0
        self.command = command
        command_file = self.state_dir / "command"
        fifo = self.state_dir / f"stdin.{command.marker}" if run.stdin else None
        try:
            write_command(command_file, run.command)
            if fifo is not None:
                command.stdin = StdinFeed(fifo)
        except OSError:
            command.status = -1  # _check_command reports it
            return
        if not bash.write(command_line(command_file, command.marker, self.last_status, fifo)):
            command.status = -1  # bash is gone: _check_command reports it

    def _input(self, message: p.Input) -> None:
        """Bytes for the command's stdin (a finished command's are ignored, uncredited:
        the console stops counting a rank's credit at its Done)."""
        command = self.command
        if command is None or command.cmd_id != message.cmd_id or command.stdin is None:
            return
        dropped = command.stdin.push(message.data)
        if message.eof:
            command.stdin.end()
        if dropped:
            self._send(p.Credit(dropped))
        self._feed(command.stdin)

    def _feed(self, feed: StdinFeed) -> None:
        try:
            done = feed.flush()
        except OSError:
            done = sum(len(c) for c in feed.pending)
            feed.close()
        if done:
            self._send(p.Credit(done))

    @staticmethod
    def _end_stdin(command: _Command) -> None:
        """The command ended: its stdin goes (Input still on its way is then ignored)."""
        if command.stdin is not None:
            command.stdin.close()
            command.stdin = None

    def _restart(self) -> Bash | None:
        if self.bash is not None:
            self.bash.close()
        return self._start_bash()

    def _check_command(self) -> bool:
        command, bash = self.command, self.bash
        if command is None:
            return False
        now = time.monotonic()
        if command.deadline is not None and now > command.deadline and command.status is None:
            if not command.timed_out:
                command.timed_out = True
                self._interrupt_line(command)
            elif now - command.signalled_at > KILL_GRACE and command.last_signal != signal.SIGKILL:
                self._kill(command, signal.SIGKILL if command.killing else signal.SIGTERM)
        if command.killing:
            return self._check_killed(command)
        if bash is not None and command.status is not None and bash.out.ended and bash.err.ended:
            return self._finished(command, now)
        if bash is None or command.status == -1 or (bash.status_eof and command.status is None):
            return self._bash_ended(command)
        if bash.proc.poll() is not None:
            self._read_status(bash)
            if command.status is None:
                return self._bash_ended(command)
        return False

    def _finished(self, command: _Command, now: float) -> bool:
        self.cwd = command.cwd or self.cwd
        self._end_stdin(command)
        self.command = None
        code = command.status or 0
        sig = signal.SIGINT if command.interrupted and code == 128 + signal.SIGINT else 0
        if command.timed_out:  # a timeout ends the command's whole tree, background jobs too
            for pid in _job_processes(command.marker):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
        self._done(command.cmd_id, code, sig, now - command.started, command.timed_out, "")
        return True

    def _bash_ended(self, command: _Command) -> bool:
        """Bash exited during the command (``exit``, a crash): report it, start a new one."""
        bash = self.bash
        code = -signal.SIGKILL
        if bash is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                bash.proc.wait(timeout=1)
            self._flush_output(bash, command)
            code = bash.close()
        self._end_stdin(command)
        self.command = None
        sig = -code if code < 0 else 0
        self._done(command.cmd_id, 128 + sig if sig else code, sig, time.monotonic() - command.started,
                   False, "", EXITED)
        self._start_bash()
        return True

    def _flush_output(self, bash: Bash, command: _Command) -> None:
        """Forward what the pipes still hold (within credit), then give up on them."""
        marker = command.end
        for stream in (bash.out, bash.err):
            while not stream.ended and not stream.eof and self.credit > 0:
                total = stream.read(self.credit)
                if total <= 0:
                    break
                count = stream.split(total, marker)
                if count:
                    self.credit -= count
                    self.link.send_all(self.console, self.channel.send(stream.view[:count], stream.stream))
                stream.keep_tail(total)

    def _interrupt(self, cmd_id: int) -> None:
        get = self.gets.get(cmd_id)
        if get is not None:
            get.interrupted = True
            return
        command = self.command
        if command is None or command.cmd_id != cmd_id or command.status is not None:
            return
        command.interrupts += 1
        if command.interrupts == 1 and not command.killing:
            self._interrupt_line(command)
        else:
            self._kill(command, ESCALATION[min(command.interrupts, len(ESCALATION)) - 1])

    def _interrupt_line(self, command: _Command) -> None:
        """SIGINT to bash and to the command's processes: bash aborts the line (module doc)."""
        bash = self.bash
        if bash is None:
            return
        self._read_status(bash)
        if command.status is not None:
            return  # it had just finished: nothing to interrupt
        command.interrupted = True
        command.last_signal = signal.SIGINT
        command.signalled_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(bash.pid, signal.SIGINT)
        for pid in _job_processes(command.marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)

    def _kill(self, command: _Command, sig: int) -> None:
        """Stop bash, signal every process of the command (see the module doc)."""
        bash = self.bash
        if bash is None:
            return
        if not command.killing:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(bash.pid, signal.SIGSTOP)
            _wait_stopped(bash.pid)
            self._read_status(bash)
            if command.status is not None:  # it had just finished: nothing to interrupt
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(bash.pid, signal.SIGCONT)
                return
            command.killing = True
        command.last_signal = sig
        command.signalled_at = time.monotonic()
        command.pids = _job_processes(command.marker)
        for pid in command.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _check_killed(self, command: _Command) -> bool:
        bash = self.bash
        if bash is None:
            return False
        command.pids = {pid for pid in command.pids if alive(pid)} | _job_processes(command.marker)
        if command.pids:
            for pid in command.pids:  # started since the last signal: same treatment
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, command.last_signal)
            return False
        self._flush_output(bash, command)
        bash.close()
        self._end_stdin(command)
        self.command = None
        sig = command.last_signal
        self._done(command.cmd_id, 128 + sig, sig, time.monotonic() - command.started, command.timed_out,
                   "", RESTARTED)
        self._start_bash()
        return True

    # -- file transfer

    def _resolve(self, path: str) -> Path:
        target = Path(os.path.expanduser(path))
        return target if target.is_absolute() else Path(self.cwd or os.getcwd()) / target

    def _put_start(self, start: p.PutStart) -> None:
        name = Path(start.name).name or "unnamed"
        final = destination(self._resolve(start.path), name, start.path.endswith(("/", "/.")))
        put = _Put(start.xfer_id, final, None, 0, start.size, start.mode, hashlib.sha256())
        try:
            put.part = PartFile(final)
        except OSError as exc:
            put.error = f"cannot write {final}: {exc.strerror}"
        self.puts[start.xfer_id] = put

    def _put_chunk(self, chunk: p.PutChunk) -> None:
        put = self.puts.get(chunk.xfer_id)
        if put is None:
            return
        if not put.error and put.part is not None:
            try:
                put.part.write(chunk.data)
            except OSError as exc:
                put.error = f"cannot write {put.final}: {exc.strerror}"
        put.digest.update(chunk.data)
        put.size += len(chunk.data)
        self._send(p.Credit(len(chunk.data)))

    def _put_end(self, end: p.PutEnd) -> None:
        put = self.puts.pop(end.xfer_id, None)
        if put is None:
            return
        digest = put.digest.digest()
        error = put.error
        if not error and end.aborted:
            error = "the transfer was aborted"
        if not error and put.size != put.expected:
            error = f"checksum mismatch for {put.final}"
        if put.part is not None:
            if error:
                put.part.discard()
            else:  # verified again on the part file's own descriptor (transfer.py)
                error = put.part.commit(end.sha256, put.expected, put.mode & ~umask())
        self._send(p.PutDone(end.xfer_id, put.size, digest, error))

    def _get_start(self, start: p.GetStart) -> None:
        path = self._resolve(start.path)
        try:
            get = _Get(start.xfer_id, path, path.open("rb"))
        except OSError as exc:
            get = _Get(start.xfer_id, path, None, f"cannot read {path}: {exc.strerror}")
        self.gets[start.xfer_id] = get

    def _pump_gets(self) -> bool:
        """Send the next chunk of each get that has credit; True if anything was done."""
        busy = False
        for get in list(self.gets.values()):
            if get.handle is not None and not get.interrupted and not get.error:
                if self.credit <= 0:
                    continue
                try:
                    data = get.handle.read(min(p.CHUNK, self.credit))
                except OSError as exc:
                    get.error = f"cannot read {get.path}: {exc.strerror}"
                    data = b""
                if data:
                    busy = True
                    get.digest.update(data)
                    get.size += len(data)
                    self.credit -= len(data)
                    self._send(p.GetChunk(get.xfer_id, data))
                    continue
            error = get.error or ("interrupted" if get.interrupted else "")
            if get.handle is not None:
                get.handle.close()
            del self.gets[get.xfer_id]
            self._send(p.GetEnd(get.xfer_id, get.size, get.digest.digest(), error))
            busy = True
        return busy

    # -- end

    def _shutdown(self) -> None:
        self.ptys.shutdown()
        command = self.command
        if command is not None and self.bash is not None:
            command.interrupts = len(ESCALATION)
            self._kill(command, signal.SIGKILL)
        if command is not None:
            self._end_stdin(command)
        if self.bash is not None:
            self.bash.close()
            self.bash = None
        hang_up(self.sessions)
        for put in self.puts.values():
            if put.part is not None:
                put.part.discard()
        for get in self.gets.values():
            if get.handle is not None:
                get.handle.close()
        with contextlib.suppress(MpishError):
            if self.channel.is_open:
                self.link.send_all(self.console, self.channel.close())
        self.link.flush(timeout=5.0)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def hang_up(sessions: set[int]) -> None:
    """SIGHUP (and SIGCONT) to every process left in the shells' sessions, as ssh's hangup
    ends a login's jobs: ``sleep 100 &`` ends with the session, ``nohup`` jobs live on."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 3 and int(fields[3]) in sessions:  # field 6 of stat: the session id
            for sig in (signal.SIGHUP, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(name), sig)


def _wait_stopped(pid: int) -> None:
    """Wait (briefly) until ``pid`` is really stopped: SIGSTOP is delivered asynchronously."""
    for _ in range(1000):
        if proc_state(pid) in ("T", "t", "Z", ""):
            return
        time.sleep(0.0001)


def _job_processes(marker: str) -> set[int]:
    """Pids of our user's live processes started by the command with this marker."""
    tag = f"{JOB_VARIABLE}={marker}".encode()
    found: set[int] = set()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if tag + b"\0" in environ and alive(int(name)):
            found.add(int(name))
    return found



