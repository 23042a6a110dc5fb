"""The shell server: one per rank, runs the console's commands with a persistent shell state.

Theory of operation
-------------------
Persistent state without a persistent shell: every command runs in its own
``bash --noprofile --norc`` started in a new session (so a new process group). The
script first sources the rank's private state file, then ``eval``s the command; an EXIT
trap dumps the shell state back (``cd`` to ``$PWD``, ``declare -p``, ``declare -f``,
``alias -p``, ``shopt -p``, ``set +o``) to a temporary file renamed over the state file.
So ``cd``, ``export``, variables, functions, aliases and options persist as in a
terminal, while a timeout or Ctrl-C can kill the whole process group without ending
the session: a command killed before its trap ran leaves the previous state in place.
bash starts with an empty environment (the state file restores it), so ``unset`` and
``export -n`` persist too. The state directory is private (mode 0700) and removed at
exit.

Waiting on MPI and on processes at once: only the main thread calls MPI. Per command,
two reader threads block in ``os.read`` on stdout and stderr and a waiter thread blocks
in ``wait()``; they put events on one queue. The main loop polls MPI (``Improbe``, never
a blocking MPI call, which would busy-wait in MPICH), handles the queue, and when both
are empty sleeps *on the queue* with the :class:`~mpish.transport.mpi.Backoff` timeout:
process output and exit wake it at once, MPI arrivals are seen within the backoff
(0 when hot, at most 10 ms when idle).

Flow control: readers take credit *before* reading (at most ``WINDOW`` = 4 MiB of output
read and not yet acknowledged by the console) and stop reading the pipe when out of
credit, so a command writing 10 GiB keeps memory bounded on both sides and loses no
byte: the writer simply blocks on the full pipe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from mpish.transport.mpi import Backoff, MpiLink
from mpish.wire.channel import SecureChannel
from mpish.wire.errors import MpishError, ProtocolError
from mpish.wire.events import CloseReceived, Message

from . import protocol as p

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL on a timeout
DETACH_AFTER = 0.5  # after the shell exited, stop waiting for EOF once output is quiet this long
ESCALATION = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)  # 1st, 2nd, later Ctrl-C
PIPE_SIZE = 1 << 20  # larger pipes: fewer, larger reads
STRIP_ENV_PREFIXES = ("PMI_", "PMIX_", "HYDI_", "HYDRA_", "MPIR_", "MPICH_INTERFACE")

# The EXIT trap writes STATE.new and CWD.new and ends STATE.new with a marker line; the
# server renames them after bash exits, only if the marker is there (no fork of mv).
STATE_COMPLETE = b"# mpish: state complete\n"
_SAVE_STATE = r"""
__mpish_save() {
  __mpish_s=$?
  builtin unset __mpish_c
  { builtin printf '%s' "$PWD" > CWD.new; builtin printf 'builtin cd -- %q\n' "$PWD"; builtin declare -p;
    builtin declare -f; builtin alias -p; builtin shopt -p; builtin set +o;
    builtin printf '# mpish: state complete\n'; } > STATE.new 2>/dev/null
  builtin unset __mpish_s
  return $__mpish_s
}
"""


def _shell_script(state: Path) -> str:
    quoted = shlex.quote(str(state))
    save = _SAVE_STATE.replace("STATE", quoted).replace("CWD", shlex.quote(str(state) + ".cwd"))
    return (
        "__mpish_c=$__MPISH_COMMAND; builtin unset __MPISH_COMMAND\n"
        f"builtin . {quoted} 2>/dev/null\n"
        f"{save}\n"
        "builtin trap __mpish_save EXIT\n"
        "builtin shopt -s expand_aliases\n"
        'builtin eval "$__mpish_c"\n'
    )


def commit_state(state: Path) -> None:
    """Adopt the state the last command's EXIT trap wrote, if it was written completely."""
    new, cwd_new = state.with_name(state.name + ".new"), state.with_name(state.name + ".cwd.new")
    try:
        with new.open("rb") as handle:
            handle.seek(max(0, new.stat().st_size - len(STATE_COMPLETE)))
            complete = handle.read() == STATE_COMPLETE
        if complete:
            os.replace(cwd_new, state.with_name(state.name + ".cwd"))
            os.replace(new, state)
    except OSError:
        pass
    for leftover in (new, cwd_new):
        with contextlib.suppress(OSError):
            leftover.unlink()


def initial_state(environ: dict[str, str], cwd: str) -> str:
    """The first state file: the server's environment (minus the MPI launcher's) and cwd."""
    lines = [f"builtin cd -- {shlex.quote(cwd)}"]
    for name, value in sorted(environ.items()):
        if not name.isidentifier() or name.startswith(STRIP_ENV_PREFIXES) or name.startswith("BASH_FUNC"):
            continue
        lines.append(f"builtin export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


class CreditGate:
    """Bulk-byte credit shared by the readers of one server (flow control, see module doc)."""

    def __init__(self, window: int) -> None:
        self._credit = window
        self._cond = threading.Condition()

    def reserve(self, most: int, job: _Job) -> int:
        """Block until some credit is free; take up to ``most``. 0 if ``job`` was detached."""
        with self._cond:
            while self._credit <= 0 and not job.detached:
                self._cond.wait()
            if job.detached:
                return 0
            taken = min(most, self._credit)
            self._credit -= taken
            return taken

    def give(self, nbytes: int) -> None:
        if nbytes > 0:
            with self._cond:
                self._credit += nbytes
                self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def exhausted(self) -> bool:
        return self._credit <= 0


@dataclass(eq=False)
class _Job:
    """A running command or get: the threads that feed the queue check ``detached``."""

    ident: int
    detached: bool = False


@dataclass(eq=False)
class _Command:
    job: _Job
    proc: subprocess.Popen[bytes]
    started: float
    deadline: float | None
    open_streams: int = 2
    exited_at: float | None = None
    last_output: float = field(default_factory=time.monotonic)
    interrupts: int = 0
    timed_out: bool = False
    killed_at: float | None = None


@dataclass(eq=False)
class _Put:
    xfer_id: int
    final: Path
    part: Path
    handle: IO[bytes]
    size: int
    expected: int
    digest: Any
    error: str = ""


class ShellServer:
    """Serve one console over a secure channel; returns when the console ends the session."""

    def __init__(self, link: MpiLink, channel: SecureChannel, console: int = 0) -> None:
        self.link = link
        self.channel = channel
        self.console = console
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.gate = CreditGate(p.WINDOW)
        self.state_dir = Path(tempfile.mkdtemp(prefix=f"mpish-{link.rank}-"))
        self.state = self.state_dir / "state"
        environ = dict(os.environ, MPISH_RANK=str(link.rank), MPISH_SIZE=str(link.size))
        self.state.write_text(initial_state(environ, os.getcwd()))
        (self.state_dir / "state.cwd").write_text(os.getcwd())
        self.script = _shell_script(self.state)
        self.bash = shutil.which("bash") or "/bin/bash"
        self.command: _Command | None = None
        self.puts: dict[int, _Put] = {}
        self.gets: dict[int, _Job] = {}
        self.finished = False

    # -- I/O helpers

    def _send(self, message: object) -> None:
        self.link.send_all(self.console, self.channel.send(p.CODEC.encode(message)))

    @property
    def cwd(self) -> str:
        try:
            return (self.state_dir / "state.cwd").read_text()
        except OSError:
            return ""

    def hello(self) -> None:
        self._send(p.Hello(p.PROTOCOL_VERSION, socket.gethostname(), os.getpid(), self.cwd))

    # -- main loop

    def serve(self) -> None:
        backoff = Backoff()
        try:
            while not self.finished:
                busy = False
                for source, record in self.link.drain():
                    busy = True
                    if source == self.console:
                        self._on_record(record)
                    # records from any other rank are not ours: dropped unread
                busy = self._drain_events() or busy
                busy = self._check_command() or busy
                if busy:
                    backoff.activity()
                    continue
                delay = backoff.next_sleep()
                if self.command is not None and self.command.killed_at is not None:
                    delay = min(delay, 0.05)
                try:
                    event = self.events.get(timeout=delay) if delay else self.events.get_nowait()
                except queue.Empty:
                    if not delay:
                        time.sleep(0)
                    continue
                self._on_event(event)
                backoff.activity()
        finally:
            self._shutdown()

    def _drain_events(self) -> bool:
        busy = False
        for _ in range(256):
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            busy = True
            self._on_event(event)
        return busy

    def _on_record(self, record: bytearray) -> None:
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
            self.gate.give(message.nbytes)
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

    # -- commands

    def _start(self, run: p.Run) -> None:
        if self.command is not None:
            self._send(p.Done(run.cmd_id, 125, 0, 0.0, self.cwd, False, _peak_rss(), "a command is running"))
            return
        try:
            proc = subprocess.Popen(
                [self.bash, "--noprofile", "--norc", "-c", self.script],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"__MPISH_COMMAND": run.command},
                cwd=self.state_dir,
                start_new_session=True,  # own process group: killpg reaches the whole tree
                close_fds=True,
            )
        except OSError as exc:
            why = f"cannot start bash: {exc}"
            self._send(p.Done(run.cmd_id, 127, 0, 0.0, self.cwd, False, _peak_rss(), why))
            return
        started = time.monotonic()
        deadline = started + run.timeout if run.timeout > 0 else None
        job = _Job(run.cmd_id)
        command = _Command(job, proc, started, deadline)
        self.command = command
        assert proc.stdout is not None and proc.stderr is not None
        for stream, pipe in ((p.STDOUT, proc.stdout), (p.STDERR, proc.stderr)):
            fd = pipe.fileno()
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
            threading.Thread(target=self._reader, args=(pipe, stream, job), daemon=True).start()
        threading.Thread(target=self._waiter, args=(proc, job), daemon=True).start()

    def _reader(self, pipe: IO[bytes], stream: int, job: _Job) -> None:
        fd = pipe.fileno()
        try:
            while True:
                allowed = self.gate.reserve(p.CHUNK, job)
                data = os.read(fd, allowed or p.CHUNK)
                if not data:
                    self.gate.give(allowed)
                    break
                if allowed:
                    self.gate.give(allowed - len(data))
                    self.events.put(("out", job, stream, data))
        except OSError:
            pass
        finally:
            pipe.close()
            self.events.put(("eof", job, stream))

    def _waiter(self, proc: subprocess.Popen[bytes], job: _Job) -> None:
        proc.wait()
        self.events.put(("exit", job))

    def _on_event(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "get":
            if isinstance(event[1], p.GetEnd):
                self.gets.pop(event[1].xfer_id, None)
            self._send(event[1])
            return
        command = self.command
        job = event[1]
        if command is None or job is not command.job:
            return  # a detached command's late event
        if kind == "out":
            command.last_output = time.monotonic()
            self._send(p.Output(job.ident, event[2], event[3]))
        elif kind == "eof":
            command.open_streams -= 1
        elif kind == "exit":
            command.exited_at = time.monotonic()
        self._check_command()

    def _check_command(self) -> bool:
        command = self.command
        if command is None:
            return False
        now = time.monotonic()
        if command.deadline is not None and now > command.deadline and command.exited_at is None:
            if not command.timed_out:
                command.timed_out = True
                command.killed_at = now
                _killpg(command.proc, signal.SIGTERM)
            elif command.killed_at is not None and now - command.killed_at > KILL_GRACE:
                _killpg(command.proc, signal.SIGKILL)
                command.killed_at = now
        if command.exited_at is None:
            return False
        if command.open_streams > 0:
            quiet = now - max(command.exited_at, command.last_output)
            if quiet < DETACH_AFTER or self.gate.exhausted or not self.events.empty():
                return False
            command.job.detached = True  # a background job holds the pipes: stop waiting
            self.gate.wake()
        commit_state(self.state)
        code = command.proc.returncode
        sig = -code if code < 0 else 0
        self.command = None
        self._send(
            p.Done(
                command.job.ident,
                128 + sig if sig else code,
                sig,
                now - command.started,
                self.cwd,
                command.timed_out,
                _peak_rss(),
                "timed out" if command.timed_out else "",
            )
        )
        return True

    def _interrupt(self, cmd_id: int) -> None:
        get = self.gets.get(cmd_id)
        if get is not None:
            get.detached = True  # the get reader stops and sends GetEnd
            self.gate.wake()
            return
        command = self.command
        if command is None or command.job.ident != cmd_id or command.exited_at is not None:
            return
        command.interrupts += 1
        _killpg(command.proc, ESCALATION[min(command.interrupts, len(ESCALATION)) - 1])

    # -- file transfer

    def _resolve(self, path: str) -> Path:
        target = Path(os.path.expanduser(path))
        return target if target.is_absolute() else Path(self.cwd or os.getcwd()) / target

    def _put_start(self, start: p.PutStart) -> None:
        import hashlib

        final = self._resolve(start.path)
        if final.is_dir():
            final = final / Path(start.path).name
        part = final.with_name(f".{final.name}.mpish-part-{os.getpid()}")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, start.mode & 0o777)
            handle = os.fdopen(fd, "wb")
            put = _Put(start.xfer_id, final, part, handle, 0, start.size, hashlib.sha256())
        except OSError as exc:
            sink = open(os.devnull, "wb")  # noqa: SIM115 - closed in _put_end
            put = _Put(start.xfer_id, final, part, sink, 0, start.size, hashlib.sha256())
            put.error = f"cannot write {final}: {exc.strerror}"
        self.puts[start.xfer_id] = put

    def _put_chunk(self, chunk: p.PutChunk) -> None:
        put = self.puts.get(chunk.xfer_id)
        if put is None:
            return
        if not put.error:
            try:
                put.handle.write(chunk.data)
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
        try:
            put.handle.close()
        except OSError as exc:
            error = error or f"cannot write {put.final}: {exc.strerror}"
        if not error and end.aborted:
            error = "the transfer was aborted"
        if not error and (digest != end.sha256 or put.size != put.expected):
            error = f"checksum mismatch for {put.final}"
        if not error:
            try:
                os.replace(put.part, put.final)
            except OSError as exc:
                error = f"cannot rename to {put.final}: {exc.strerror}"
        if error:
            with contextlib.suppress(OSError):
                put.part.unlink()
        self._send(p.PutDone(end.xfer_id, put.size, digest, error))

    def _get_start(self, start: p.GetStart) -> None:
        path = self._resolve(start.path)
        job = self.gets[start.xfer_id] = _Job(start.xfer_id)
        threading.Thread(target=self._get_reader, args=(start.xfer_id, path, job), daemon=True).start()

    def _get_reader(self, xfer_id: int, path: Path, job: _Job) -> None:
        import hashlib

        digest = hashlib.sha256()
        size = 0
        error = ""
        try:
            with path.open("rb") as handle:
                while True:
                    allowed = self.gate.reserve(p.CHUNK, job)
                    data = handle.read(allowed)
                    self.gate.give(allowed - len(data))
                    if not data:
                        break
                    digest.update(data)
                    size += len(data)
                    self.events.put(("get", p.GetChunk(xfer_id, data)))
        except OSError as exc:
            error = f"cannot read {path}: {exc.strerror}"
        if job.detached and not error:
            error = "interrupted"
        self.events.put(("get", p.GetEnd(xfer_id, size, digest.digest(), error)))

    # -- end

    def _shutdown(self) -> None:
        command = self.command
        if command is not None:
            _killpg(command.proc, signal.SIGKILL)
            command.job.detached = True
            self.gate.wake()
        for put in self.puts.values():
            with contextlib.suppress(OSError):
                put.handle.close()
                put.part.unlink()
        with contextlib.suppress(MpishError):
            if self.channel.is_open:
                self.link.send_all(self.console, self.channel.close())
        self.link.flush(timeout=5.0)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
