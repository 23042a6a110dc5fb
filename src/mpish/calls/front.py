"""The agent's front process: it sends the calls' output and outlives the process that runs
them, so that a call which ends that process loses none of its output and is reported for
what ended it.

Theory of operation
-------------------
``python -m mpish.calls.agent`` forks once, before it reads anything. The child is the agent
proper: it reads the calls on ssh's stdin, runs them and writes its frames (results,
failures) to ssh's stdout. The parent, the *front*, holds the read ends of the pipes behind
the calls' descriptors 1 and 2 and sends what appears there as Output frames on the same
stdout, as the bytes come.

Two writers share one stream through :class:`Turn`, a POSIX record lock on a private file:
a frame is written whole while its writer holds the lock, and the front reads the pipes only
while it holds it, so no output is ever held outside the lock. Before a result the child
takes the lock and reads the pipes empty itself: everything the call wrote is then sent
before its result. A POSIX lock belongs to its process and ends with it, so a writer that
dies cannot leave the other waiting.

A call that ends its process (``os._exit``, a C library's ``abort()``, a segmentation
fault, the OOM killer) used to take the thread that sent its output with it, and what it
had written last was lost (the end of ``print(...); os._exit(3)``'s line, 3 runs in 10).
The front outlives the child (it learns of the death through SIGCHLD): it reads the pipes
empty, writes on ssh's stderr how the child ended (:data:`~mpish.transport.ssh.ENDED_MARK`:
an exit status, or the signal's name) and exits with the same status, 128+N for signal N as
a shell reports it (ssh reports a remote killed by a signal as 255, its own failure). The
client's :class:`~mpish.calls.errors.AgentDied` quotes that line. A child killed in the
middle of a frame left the stream cut, and a frame appended there would be read as part of
the cut one: the child's :class:`~mpish.transport.frames.FrameStream` keeps a byte in
memory shared with the front (``mid_frame``) that is 1 while a frame is being written, and
the front then sends nothing more.

The calls run in a process group of the child's own: a signal a call sends to its group
(``kill 0``, a batch system's cleanup) reaches the child and what it started, not the front.

The front runs no call and reads nothing from the client. When the client goes away during
a call, the child kills its process group, itself included (``agent.end_call_processes``),
and the front, having reaped it, exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import mmap
import os
import select
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import NoReturn

from mpish.calls.messages import MAX_FRAME, Output, encode
from mpish.transport.frames import FrameStream
from mpish.transport.ssh import ENDED_MARK

OUTPUT_READ = 65536
TURN_READS = 16  # reads of a pipe per turn (more than it holds): a flood leaves the child its turns
SAFETY_POLL_MS = 5000  # SIGCHLD wakes the front; this only bounds a missed wakeup


class Turn:
    """Whose turn it is to write on the shared stream: a POSIX record lock, per process."""

    def __init__(self) -> None:
        try:
            self._fd = os.memfd_create("mpish-turn")  # close-on-exec: not the calls' business
        except (AttributeError, OSError):  # not Linux, or glibc before 2.27: a local file system
            shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (NFS may refuse locks)
            with tempfile.TemporaryFile(dir=shm) as anonymous:
                self._fd = os.dup(anonymous.fileno())
        os.set_inheritable(self._fd, False)
        self._threads = threading.Lock()  # a POSIX lock is the process's: threads take this first

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._threads:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)


MID_FRAME, CLEAN_END = 0, 1  # the shared bytes: a frame is being written; the child ends as planned


def shared_flag() -> mmap.mmap:
    """Bytes of memory that a parent and the child it forks both see (MID_FRAME, CLEAN_END)."""
    return mmap.mmap(-1, 2)  # anonymous and MAP_SHARED: one page for both after the fork


def send_pipes(pipes: dict[int, str], stream: FrameStream, reads: int | None = None) -> list[int]:
    """Send what the output pipes hold now, without waiting (at most ``reads`` reads of each);
    the pipes that reached EOF."""
    ended = []
    for fd, name in pipes.items():
        for _ in itertools.repeat(None) if reads is None else range(reads):
            try:
                data = os.read(fd, OUTPUT_READ)
            except BlockingIOError:
                break
            if not data:
                ended.append(fd)
                break
            stream.send(encode(Output(name, data)))
    return ended


def describe_end(code: int) -> str:
    """How a process ended, from ``os.waitstatus_to_exitcode``'s value."""
    if code >= 0:
        return f"exit status {code}"
    number = -code
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    hint = " (kill -9, or the out-of-memory killer)" if number == signal.SIGKILL else ""
    return f"killed by {name} (signal {number}){hint}"


class Front:
    """The parent after the fork: pump the output pipes until the child ends."""

    def __init__(self, child: int, out: int, pipes: dict[int, str], turn: Turn, mid_frame: mmap.mmap) -> None:
        self.child = child
        self.pipes = dict(pipes)
        self.turn = turn
        self.mid_frame = mid_frame
        self._nothing = os.open(os.devnull, os.O_RDONLY)  # the stream's unused read side
        self.stream = FrameStream(self._nothing, out, max_frame=MAX_FRAME)
        self.code: int | None = None  # the child's end (os.waitstatus_to_exitcode)
        wake_read, wake_write = os.pipe()
        for fd in (wake_read, wake_write, *self.pipes):
            os.set_blocking(fd, False)
        self._wake = wake_read
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        self.poller = select.poll()
        for fd in (wake_read, *self.pipes):
            self.poller.register(fd, select.POLLIN)

    def reaped(self) -> bool:
        if self.code is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.child, os.WNOHANG)
                if pid and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
                    self.code = os.waitstatus_to_exitcode(status)
        return self.code is not None

    def wait(self) -> None:
        while self.code is None:
            try:
                _, status = os.waitpid(self.child, 0)
            except ChildProcessError:
                self.code = 1  # cannot be known
                return
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                self.code = os.waitstatus_to_exitcode(status)

    def pump(self, reads: int | None = TURN_READS) -> None:
        with self.turn.held():
            for fd in send_pipes(self.pipes, self.stream, reads):
                self.poller.unregister(fd)
                del self.pipes[fd]

    def run(self) -> int:
        """Until the child ends; then what it left in the pipes. The child's end."""
        with contextlib.suppress(Exception):  # a broken ssh pipe: the client is gone; wait on
            while not self.reaped():
                ready = [fd for fd, _ in self.poller.poll(SAFETY_POLL_MS)]
                if self._wake in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake, 512)
                if any(fd in self.pipes for fd in ready):
                    self.pump()
            if not self.mid_frame[MID_FRAME]:  # the stream ended between two frames: append to it
                self.pump()  # what they hold (a full pipe takes TURN_READS reads), not a flood's rest
        self.wait()  # if the loop above ended on an error
        assert self.code is not None
        return self.code


def run_front(child: int, out: int, pipes: dict[int, str], turn: Turn, mid_frame: mmap.mmap,
              diagnostics: int) -> NoReturn:
    """The parent's life after the fork: pump, then exit as the child did (saying how, unless
    the child ended as planned: at the client's EOF, or after a fatal error it reported)."""
    for sig in (signal.SIGINT, signal.SIGQUIT):  # a terminal's, or the session's: the child decides
        signal.signal(sig, signal.SIG_IGN)
    code = Front(child, out, pipes, turn, mid_frame).run()
    if not mid_frame[CLEAN_END]:
        with contextlib.suppress(OSError):
            os.write(diagnostics, f"{ENDED_MARK}{describe_end(code)}\n".encode())
    os._exit(128 - code if code < 0 else code)
