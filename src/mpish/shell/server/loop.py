"""The shell server's loop: one thread waits on the link and on bash's pipes, and acts.

Every message from the console and every local event (output read, the command's end,
its deadline, the end of a get, the console gone) goes through the server's
conversation table (:data:`mpish.shell.conversation.SERVER`); this class only holds the
actions, each a ``_<action>`` method (put's and get's in :class:`.transfers.ServerTransfers`).
A message that the state does not allow is refused: a Run, PutStart, GetStart, TreePut or
TreeGet is answered with an error (the console waits for that answer), anything else is
dropped and logged; the session goes on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mpish.report import Diagnostics
from mpish.transport.link import Channel, Link
from mpish.transport.memory import tune_malloc
from mpish.transport.procfs import peak_rss_kib
from mpish.wire.errors import MpishError

from .. import protocol as p
from ..completion import complete_path
from ..conversation import SERVER, Event, Local, Machine, Refused, ServerState
from ..pty_session import PtyHost
from ..receive import Waiter, receive
from .bash import Bash, OutputStream
from .jobs import KILLING_POLL, Command, Ended, Shell
from .stdin import StdinFeed
from .transfers import ServerTransfers

if TYPE_CHECKING:
    from .transfer_files import Get, GetTree, Put, PutTree

log = Diagnostics(__name__)

CONSOLE_CHECK = 1.0  # seconds between looks at whether the console is alive (when idle)
# One read of a command's pipe, one record: at 512 KiB the read buffer and the sealed
# record fit a core's L2 cache (1 MiB here); reading in 1 MiB pieces took ~20% more CPU
# per byte (read, marker search, seal; the package doc).
READ_SIZE = 512 << 10


def hello_message(cwd: str) -> p.Hello:
    """The server's first message: this protocol's version, host, pid, and its shell's cwd."""
    return p.Hello(p.PROTOCOL_VERSION, os.uname().nodename, os.getpid(), cwd)


@runtime_checkable
class BufferLink(Protocol):
    """A link that lends reused record buffers (:class:`~mpish.transport.mpi.MpiLink`)."""

    def record_buffer(self, payload: int) -> bytearray: ...

    def send_buffer(self, dest: int, buffer: bytearray, size: int) -> None: ...


@runtime_checkable
class SealingChannel(Protocol):
    """A channel that seals into a given buffer (:class:`~mpish.wire.channel.SecureChannel`)."""

    def send_into(self, out: bytearray, data: memoryview, channel: int) -> int: ...


class ShellServer(ServerTransfers):
    """Serve one console over a channel; :meth:`serve` returns when the session ends.

    ``console_alive`` is asked now and then while idle; False ends the session (the
    console died: its pid on this host, or the pipe to it broke). ``tune_memory_now``
    False (the ssh server, whose start-up is most of a ``true``'s cost) leaves glibc's malloc
    tuning (:func:`~mpish.transport.memory.tune_malloc`) until output or a transfer needs
    large buffers."""

    def __init__(self, link: Link, channel: Channel, console: int = 0,
                 console_alive: Callable[[], bool] = lambda: True, tune_memory_now: bool = True) -> None:
        self.link = link
        self.tune_memory_now = tune_memory_now  # else when bulk data first flows (output, a transfer)
        self.channel = channel
        self.console = console
        self.console_alive = console_alive
        self.credit = p.WINDOW  # bulk bytes we may send before the console returns Credit
        self.machine = Machine(SERVER, ServerState.IDLE)
        self.shell = Shell(link.rank, link.size)
        self.command: Command | None = None
        self.put: Put | PutTree | None = None
        self.get: Get | GetTree | None = None
        self.ptys = PtyHost(self._send, self._send_pty_output, self.shell.executable, self.shell.state)
        # each Interrupt's Signalled waits until what the pipes held at the signal was sent:
        # (cmd_id, pipe fd -> bytes still to read of it), in order (_send_signalled)
        self._signals: list[tuple[int, dict[int, int]]] = []
        # output sealed straight into the link's reused record buffers, where both can
        # (MPI and a SecureChannel: no allocation and zero-fill per record); else channel.send
        # (duck-typed: a bare ssh host has neither mpi4py nor cryptography to import)
        self._sealed: tuple[BufferLink, SealingChannel] | None = (
            (link, channel) if isinstance(link, BufferLink) and isinstance(channel, SealingChannel) else None)

    @property
    def cwd(self) -> str:
        return self.shell.cwd

    # -- I/O helpers

    def _send(self, message: object) -> None:
        if isinstance(message, p.Chunk):  # a file's bytes: raw on channel FILE, not msgpack
            self._send_chunk(bytes(message.data))
            return
        self.link.send_all(self.console, self.channel.send(p.CODEC.encode(message)))

    def _send_chunk(self, data: bytes) -> None:
        if self._sealed is not None:  # MPI: sealed straight into a reused record buffer
            link, channel = self._sealed
            buffer = link.record_buffer(len(data))
            size = channel.send_into(buffer, memoryview(data), p.FILE)
            link.send_buffer(self.console, buffer, size)
            return
        from ..transfer import send_chunk  # at the first transfer: not when a server starts (pathlib)

        send_chunk(self.link, self.channel, self.console, data)

    def _send_output(self, stream: OutputStream, count: int) -> None:
        self.credit -= count
        if self._sealed is not None:
            link, channel = self._sealed
            buffer = link.record_buffer(count)
            size = channel.send_into(buffer, stream.view[:count], stream.stream)
            link.send_buffer(self.console, buffer, size)
            return
        self.link.send_all(self.console, self.channel.send(stream.view[:count], stream.stream))

    def _send_pty_output(self, data: bytes) -> None:
        self.link.send_all(self.console, self.channel.send(data, p.STDOUT))

    def hello(self) -> None:
        self._send(hello_message(self.cwd))

    # -- the loop

    def serve(self) -> None:
        if self.tune_memory_now:
            tune_malloc()
        waiter = Waiter(self.link)
        next_console_check = 0.0
        self.shell.start_bash()
        try:
            while self.machine.state is not ServerState.CLOSED:
                busy = receive(self.link, self._channel_of, self._on_event, self._on_lost)
                busy = self._pump_get() or busy
                delay = 0.0 if busy else waiter.delay()
                if delay and time.monotonic() > next_console_check:
                    next_console_check = time.monotonic() + CONSOLE_CHECK
                    if not self.console_alive():  # the console died: end the session
                        self._fire(Local.CLOSE, "the console is gone")
                        break
                if self.command is not None and (self.command.killing or self.command.chasing):
                    delay = min(delay, KILLING_POLL)
                busy = self._wait_pipes(delay) or busy
                busy = self._check_command() or busy
                used, moved = self.ptys.pump(self.credit)
                self.credit -= used
                busy = moved or busy
                if busy:
                    waiter.activity()
        finally:
            self._shutdown()

    def _channel_of(self, rank: int) -> Channel | None:
        return self.channel if rank == self.console else None  # other ranks: dropped unread

    def _on_lost(self, rank: int, why: str) -> None:
        del rank
        self._fire(Local.BROKEN, why)  # the channel is unusable: nothing more can be trusted

    def _on_event(self, rank: int, event: Event, payload: object) -> None:
        del rank
        self._fire(event, payload)

    def _fire(self, event: Event, payload: object = None) -> None:
        """One event through the table; a refused one is answered or dropped."""
        try:
            self.machine.fire(event, self, payload)
        except Refused as exc:
            self._refuse(payload, str(exc))

    def _refuse(self, message: object, why: str) -> None:
        log.info("%s", why)
        if isinstance(message, p.Run):
            self._send(p.Done(message.cmd_id, 125, 0, 0.0, self.cwd, False, peak_rss_kib(), why, ""))
        elif isinstance(message, (p.PutStart, p.TreePut)):
            self._send(p.PutDone(message.xfer_id, 0, b"", why))
        elif isinstance(message, (p.GetStart, p.TreeGet)):
            self._send(p.GetEnd(message.xfer_id, 0, b"", why, 0))

    def _wait_pipes(self, delay: float) -> bool:
        bash = self.shell.bash
        if bash is None:
            self.link.wait(delay)
            return False
        watched = [] if bash.status_eof else [bash.status_fd]
        if self.credit > 0:  # a pipe past its command's end marker waits for the next command
            watched += [s.fd for s in (bash.out, bash.err) if not (s.eof or s.ended)] + self.ptys.read_fds()
        feed = self.command.stdin if self.command is not None else None
        writing = [feed.fd] if feed is not None and feed.wants_write else []
        writing += self.ptys.write_fds()
        if not watched and not writing:
            self.link.wait(delay)
            return False
        ready, writable = self.link.wait(delay, watched, writing)
        if writable and feed is not None:
            self._feed(feed)
        if not ready:
            return bool(writable)
        for stream in (bash.out, bash.err):
            if stream.fd in ready:
                self._read_output(stream)
        if bash.status_fd in ready:
            self.shell.read_status(self.command)
        return True

    def _read_output(self, stream: OutputStream) -> None:
        """Read what a pipe has (within credit); the table says whether it is forwarded."""
        while self.credit > 0 and not stream.eof:
            total, limit = self._read_once(stream)
            if total < 0:
                return
            if stream.ended or total < limit // 2:
                return  # the pipe is (nearly) empty: do not spin on EAGAIN

    def _read_once(self, stream: OutputStream) -> tuple[int, int]:
        """One read of ``stream`` (bytes in its buffer, or -1: nothing now) and its limit.

        While an Interrupt's Signalled waits for what the pipes held before the signal, a
        read takes no more than that: what the command wrote after the signal (a trap's
        words) must follow the Signalled, or the console drops it as in flight; a pipe whose
        earlier bytes are all read waits for the other's (_send_signalled)."""
        limit = min(self.credit, READ_SIZE)
        if self._signals:
            left = self._signals[0][1].get(stream.fd)
            if left is not None and left <= 0:
                return -1, limit
            limit = limit if left is None else min(limit, left)
        before = stream.held
        total = stream.read(limit)
        if total < 0:
            return total, limit
        self._fire(Local.READ, (stream, total))
        if self._signals:
            self._read_since_signal(stream, total - before)
        return total, limit

    def _flush_output(self, bash: Bash, command: Command) -> None:
        """Forward what the pipes still hold (within credit), then give up on them."""
        del command
        for _ in range(2):  # twice: a Signalled sent once the first pipe's earlier bytes were read
            for stream in (bash.out, bash.err):
                while not stream.ended and not stream.eof and self.credit > 0:
                    total, _limit = self._read_once(stream)
                    if total <= 0:
                        break

    def _check_command(self) -> bool:
        command = self.command
        if command is None:
            return False
        if self.shell.timed_out(command):
            self._fire(Local.TIMEOUT)
        ended = self.shell.check(command, self._flush_output)
        if ended is None:
            return False
        self._fire(Local.COMMAND_ENDED, ended)
        return True

    # -- actions (the names in conversation.SERVER)

    def _add_credit(self, message: p.Credit) -> None:
        self.credit += message.nbytes

    def _drop_stale(self, message: object) -> None:
        """Stdin or a Ctrl-C for a command that has just ended (they crossed its Done)."""
        del message

    def _drop_malformed(self, why: str) -> None:
        log.info("dropped: %s", why)

    def _start_command(self, run: p.Run) -> None:
        if self.ptys.session is not None:
            raise Refused("a command cannot start while a pty session runs (:attach)")
        self.command = self.shell.start(run)
        if self.command.stderr:  # it did not start (a syntax error): what bash said, then its Done
            self.credit -= len(self.command.stderr)
            self.link.send_all(self.console, self.channel.send(self.command.stderr, p.STDERR))

    def _feed_stdin(self, message: p.Input) -> None:
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

    def _interrupt_command(self, message: p.Interrupt) -> None:
        command = self.command
        if command is None or command.cmd_id != message.cmd_id:
            raise Refused(f"Interrupt of {message.cmd_id} refused: the command running is another")
        # What was sent before the Signalled is discarded (console.py), and so is what the pipes
        # hold before the signal (a pipe of `yes`: 1 MiB per stream, shown after the console had
        # said the display stopped); looked at first: a trap's output after the signal is shown
        queued = self._queued()
        self.shell.interrupt(command)
        self._signals.append((message.cmd_id, queued))
        self._send_signalled()

    def _queued(self) -> dict[int, int]:
        """Bytes in each of the command's pipes now (FIONREAD)."""
        import fcntl
        import termios

        bash, queued = self.shell.bash, {}
        for stream in (bash.out, bash.err) if bash is not None else ():
            if not (stream.eof or stream.ended):
                with contextlib.suppress(OSError):
                    queued[stream.fd] = int.from_bytes(fcntl.ioctl(stream.fd, termios.FIONREAD, bytes(4)),
                                                       sys.byteorder)
        return queued

    def _read_since_signal(self, stream: OutputStream, count: int) -> None:
        for _, queued in self._signals:
            if stream.fd in queued:
                queued[stream.fd] = 0 if stream.eof or stream.ended else queued[stream.fd] - count
        self._send_signalled()

    def _send_signalled(self, every: bool = False) -> None:
        """The Signalled of each Interrupt whose pipes' earlier bytes were all read (``every``:
        all of them, before a Done)."""
        while self._signals and (every or all(n <= 0 for n in self._signals[0][1].values())):
            self._send(p.Signalled(self._signals.pop(0)[0]))

    def _time_out(self, payload: None) -> None:
        if self.command is not None:
            self.shell.time_out(self.command)

    def _forward_output(self, read: tuple[OutputStream, int]) -> None:
        stream, total = read
        command = self.command
        if command is None or stream.ended:  # not watched then (_wait_pipes): a read elsewhere
            stream.held = 0
            return
        count = stream.split(total, command.end)
        if count:
            self._send_output(stream, count)
        stream.keep_tail(total)

    def _drop_output(self, read: tuple[OutputStream, int]) -> None:
        """Between commands only a pipe whose marker was not seen is read (_wait_pipes): the
        fresh pipes of a bash started again (every command that ends without its markers
        restarts it), which hold nothing of any command."""
        read[0].held = 0

    def _report_done(self, ended: Ended) -> None:
        self._send_signalled(every=True)  # the console wants each before the Done
        self.command = None
        self._send(p.Done(ended.cmd_id, ended.exit, ended.signal, ended.seconds, self.cwd, ended.timed_out,
                          peak_rss_kib(), ended.error, ended.note))
        self.shell.finished(ended)

    def _open_pty(self, start: p.PtyOpen) -> None:
        busy = self.machine.state is not ServerState.IDLE or self.command is not None
        self.ptys.open(start, self.cwd, busy=busy)

    def _pty_input(self, message: p.PtyInput) -> None:
        self.ptys.input(message)

    def _pty_resize(self, message: p.PtyResize) -> None:
        self.ptys.resize(message)

    def _pty_close(self, message: p.PtyClose) -> None:
        self.ptys.close(message)

    def _complete(self, message: p.Complete) -> None:
        self._send(p.Completions(message.req_id, "\0".join(complete_path(message.prefix, self.cwd))))

    def _close(self, why: object) -> None:
        log.debug("the session ends: %s", why or "the console closed it")

    # -- end

    def _shutdown(self) -> None:
        self.ptys.shutdown()
        self.shell.close(self.command)
        self._discard_transfers()
        try:
            if self.channel.is_open:
                self.link.send_all(self.console, self.channel.close())
        except MpishError:
            pass
        self.link.flush(timeout=5.0)
        self.shell.remove()
