"""Records over byte streams: one pipe pair per peer (ssh's stdin/stdout).

Theory of operation
-------------------
A :class:`PipeLink` joins this end to ONE peer over a readable and a writable file
descriptor, both non-blocking. Each record travels as one frame of
:mod:`mpish.wire.framing` (4-byte length, bounded by ``max_frame`` before anything is
reserved), cut by its :class:`~mpish.wire.framing.FrameDecoder`: a corrupt or hostile
stream costs at most one frame's worth of buffer, and is then reported as a broken
peer. Sending queues the record (``writev``, no copy), writes what the pipe takes, the rest
on later calls (:meth:`PipeLink.progress`); past :data:`MAX_QUEUED` bytes (above the shell's
credit windows) a send waits in ``poll`` for the pipe; a peer that takes nothing then is lost.

A :class:`MultiLink` is the console's side: ranks 1..N are N PipeLinks (one ssh
process per host). One ``select.poll`` object watches every peer's read end, so an
idle console costs one system call per look, whatever N. A peer whose pipe ends (EOF,
EPIPE) or sends garbage is *lost*: it is reported once through ``on_lost`` (like a dead
rank under MPI), never raised out of ``poll``/``drain``, so the other hosts go on;
sending to it raises :class:`~mpish.wire.errors.TransportBroken`.

Neither class blocks in ``poll``/``drain``; :meth:`~PipeLink.wait` sleeps in ``poll`` on the
read ends (and the caller's descriptors), so a record wakes the waiter at once. Pipes carry no
cryptography: they only ever run inside ssh (THREAT-MODEL "Over SSH"). A session's records over
ssh are :class:`PlainChannel`'s, which only :meth:`PipeLink.plain_channel` makes: an MPI link
has no such method, so no plaintext can reach MPI.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import stat
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from mpish.wire.errors import LocalProtocolError, MpishError, RemoteProtocolError, TransportBroken
from mpish.wire.events import CloseReceived, Event, Message
from mpish.wire.framing import FrameDecoder, frame_header

from .frames import READ_SIZE
from .link import Ready, Record

MALFORMED = "malformed stream"  # how `broken` starts when the peer sent what is not mpish
MAX_FRAME = 4 << 20  # a shell record: at most 1 MiB of output or a 1 MiB message, with room
PIPE_SIZE = 1 << 20  # a remote server's pipes to ssh (enlarge_pipe)
MAX_QUEUED = 32 << 20  # queued for one peer before a send waits (above any credit window, ssh's 16 MiB)
STALLED = 30.0  # seconds a peer may take nothing while a send waits (_drain_to_limit)
DRAIN_LIMIT = 64  # records per drain(), so other work is not starved
CLOSE_FLUSH = 1.0  # seconds close() spends writing what is still queued

LostCallback = Callable[[int, str], None]


def enlarge_pipe(fd: int, size: int) -> None:
    """Give the pipe ``fd`` a buffer of ``size`` bytes if the kernel allows (Linux; else as is).

    A remote server's two pipes to ssh get :data:`PIPE_SIZE`: with the default 64 KiB, sshd
    stopped every 64 KiB while the server hashed and wrote a 1 MiB chunk. Not on the console's
    side: the pipes of all of a user's processes share a soft limit (64 MiB by default), past
    which new pipes get 8 KiB, and a console has two pipes per host."""
    with contextlib.suppress(OSError, AttributeError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)


class PipeLink:
    """Whole records to and from one peer over a pair of non-blocking file descriptors."""

    def __init__(self, read_fd: int, write_fd: int, *, rank: int, size: int, peer: int,
                 max_frame: int = MAX_FRAME, pipe_size: int = 0, frames: FrameDecoder | None = None) -> None:
        """``frames``: the decoder of what is read (one that awaits a start mark, for a host's
        shipped code); by default, one that cuts frames from the first byte."""
        self.read_fd, self.write_fd = read_fd, write_fd
        self.rank, self.size, self.peer = rank, size, peer
        self.max_frame = max_frame
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
        if pipe_size:
            for fd in {read_fd, write_fd}:
                enlarge_pipe(fd, pipe_size)
        self.frames = frames or FrameDecoder(max_frame=max_frame)
        self._scratch = bytearray(READ_SIZE)
        self._out: deque[memoryview] = deque()
        self._queued = 0
        self._poller: select.poll | None = None
        self.broken = ""  # why the pipe ended ("" while it works)
        self.sent_bytes = 0
        self.received_bytes = 0

    def plain_channel(self) -> PlainChannel:
        """The channel of a session over these pipes: framing only, no cryptography (ssh's
        pipes are the secure medium). Only a pipe link makes one: never over MPI."""
        return PlainChannel(self.max_frame - PLAIN_HEADER.size)

    # -- sending

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        self._sendable(dest)
        for record in records:
            self._out.append(memoryview(frame_header(len(record), self.max_frame)))
            self._out.append(memoryview(record))
            self._queued += len(record) + 4
            self.sent_bytes += len(record) + 4
        self._drain_to_limit()

    def send_frame(self, dest: int, parts: Sequence[bytes]) -> None:
        """One frame whose payload is ``parts`` one after the other, queued as they are
        (``writev``: no copy into one buffer); they are immutable, so they can wait in the
        queue. A file's chunk goes this way (:meth:`PlainChannel.send_parts`)."""
        self._sendable(dest)
        size = sum(len(part) for part in parts)
        self._out.append(memoryview(frame_header(size, self.max_frame)))
        self._out.extend(memoryview(part) for part in parts)
        self._queued += size + 4
        self.sent_bytes += size + 4
        self._drain_to_limit()

    def _sendable(self, dest: int) -> None:
        if dest != self.peer or self.broken:
            raise TransportBroken(f"no pipe to rank {dest}" if dest != self.peer else self.broken)

    def _drain_to_limit(self) -> None:
        """Write what the pipe takes; block while more than MAX_QUEUED bytes wait. A peer that
        takes nothing for :data:`STALLED` s meanwhile (a frozen host) is broken: lost."""
        self.progress()
        stalled = time.monotonic() + STALLED
        while self._queued > MAX_QUEUED and not self.broken:
            self._wait_fd(self.write_fd, select.POLLOUT, 1.0)
            if self.progress():
                stalled = time.monotonic() + STALLED
            elif time.monotonic() >= stalled:
                self._break(f"it took nothing of {self._queued} bytes queued for {STALLED:g} s")
        if self.broken:
            raise TransportBroken(self.broken)

    def send_raw(self, data: bytes) -> None:
        """Bytes that are not a frame (the bootstrap's code), queued in order with the frames."""
        if self.broken:
            raise TransportBroken(self.broken)
        self._out.append(memoryview(data))
        self._queued += len(data)
        self.progress()

    def progress(self) -> bool:
        """Write what the pipe takes now; True if anything was written."""
        wrote = False
        while self._out and not self.broken:
            try:
                count = os.writev(self.write_fd, list(self._out)[:64])
            except BlockingIOError:
                break
            except OSError as exc:
                self._break(f"cannot write: {exc.strerror or exc}")
                break
            wrote = True
            self._queued -= count
            while count:
                head = self._out[0]
                if count >= len(head):
                    count -= len(head)
                    self._out.popleft()
                else:
                    self._out[0] = head[count:]
                    count = 0
        return wrote

    @property
    def sends_pending(self) -> int:
        return len(self._out)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (in ``poll``, no spinning) until everything queued was written."""
        deadline = time.monotonic() + timeout
        self.progress()
        while self._out and not self.broken:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._wait_fd(self.write_fd, select.POLLOUT, left)
            self.progress()
        return not self._out

    # -- receiving

    def fill(self) -> None:
        """Read what the pipe has now (bounded: one frame plus one read at most)."""
        if self.broken or self.frames.buffered >= self.max_frame:
            return
        direct = self.frames.direct_view()
        try:
            count = os.readv(self.read_fd, [direct if direct is not None else self._scratch])
        except BlockingIOError:
            return
        except OSError as exc:
            self._break(f"cannot read: {exc.strerror or exc}")
            return
        if not count:
            self._break("the pipe was closed")
            return
        if direct is not None:
            self.frames.direct_filled(count)
        else:
            self.frames.feed(memoryview(self._scratch)[:count])
        self.received_bytes += count

    def next_record(self) -> bytes | bytearray | None:
        """The next whole record already read, or None; a malformed stream breaks the link."""
        try:
            return self.frames.next_frame()
        except RemoteProtocolError as exc:
            seen = self.frames.peek(60)
            self._break(f"{MALFORMED} ({exc}); it began {seen!r}")
            self.frames = FrameDecoder(max_frame=self.max_frame)
            return None

    def poll(self) -> tuple[int, bytes | bytearray] | None:
        self.progress()
        record = self.next_record()
        if record is None and not self.broken:
            self.fill()
            record = self.next_record()
        if record is not None:
            return self.peer, record
        if self.broken:
            raise TransportBroken(self.broken)
        return None

    def drain(self) -> Iterator[tuple[int, bytes | bytearray]]:
        for _ in range(DRAIN_LIMIT):
            item = self.poll()
            if item is None:
                return
            yield item

    def wait(self, timeout: float, read_fds: Sequence[int] = (), write_fds: Sequence[int] = ()) -> Ready:
        """Sleep in ``poll`` until the peer sent something, a given descriptor is ready, or
        ``timeout``; at once if the pipe ended (call after a poll that found nothing)."""
        if self.broken:
            return _ready(read_fds, write_fds, 0.0)
        if self._out:
            self.progress()
        own = [(self.read_fd, select.POLLIN)]
        if self._out:
            own.append((self.write_fd, select.POLLOUT))
        return _wait(own, read_fds, write_fds, timeout)

    # -- internals

    def _break(self, why: str) -> None:
        if not self.broken:
            self.broken = why
            self._out.clear()
            self._queued = 0

    @staticmethod
    def _wait_fd(fd: int, events: int, timeout: float) -> None:
        _wait([(fd, events)], (), (), timeout)

    def close(self) -> None:
        """Write what is queued (for at most :data:`CLOSE_FLUSH` s), then close both ends:
        the peer reads every record written, then the end of the stream."""
        self.flush(CLOSE_FLUSH)
        self._break("the link was closed")
        for fd in {self.read_fd, self.write_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)


def _wait(own: list[tuple[int, int]], read_fds: Sequence[int], write_fds: Sequence[int],
          timeout: float) -> Ready:
    """poll() on the link's descriptors and the caller's; the caller's that are ready."""
    poller = select.poll()
    for fd, mask in own:
        poller.register(fd, mask)
    mine = {fd for fd, _ in own}
    for fd in read_fds:
        poller.register(fd, select.POLLIN | (select.POLLOUT if fd in write_fds else 0))
    for fd in write_fds:
        if fd not in read_fds:
            poller.register(fd, select.POLLOUT)
    try:
        events: list[tuple[int, int]] = poller.poll(max(0, int(timeout * 1000 + 0.999)))
    except InterruptedError:
        events = []
    readable = [fd for fd, ev in events if fd in read_fds and fd not in mine and ev & ~select.POLLOUT]
    writable = [fd for fd, ev in events if fd in write_fds and fd not in mine and ev & ~select.POLLIN]
    return readable, writable


def _ready(read_fds: Sequence[int], write_fds: Sequence[int], timeout: float) -> Ready:
    if not read_fds and not write_fds:
        return [], []
    return _wait([], read_fds, write_fds, timeout)


class MultiLink:
    """The console's link: rank r (1..N) is ``links[r]``, all watched by one ``poll``."""

    def __init__(self, links: dict[int, PipeLink], on_lost: LostCallback | None = None) -> None:
        self.rank = 0
        self.size = max(links, default=0) + 1
        self.links = links
        self.on_lost = on_lost
        self.lost: dict[int, str] = {}
        self._by_fd = {link.read_fd: rank for rank, link in links.items()}
        self._poller = select.poll()
        for fd in self._by_fd:
            self._poller.register(fd, select.POLLIN)
        self._turn = 0  # round robin start, so one chatty host cannot starve the others

    def add(self, rank: int, link: PipeLink) -> None:
        """Watch one more peer (hosts are connected in waves of the fan-out)."""
        self.links[rank] = link
        self._by_fd[link.read_fd] = rank
        self._poller.register(link.read_fd, select.POLLIN)
        self.size = max(self.size, rank + 1)

    def remove(self, rank: int) -> None:
        """Stop watching a peer (a lost host, before it is connected again as the same rank)."""
        link = self.links.pop(rank, None)
        if link is not None and self._by_fd.pop(link.read_fd, None) is not None:
            with contextlib.suppress(KeyError):  # a lost peer's may be gone already
                self._poller.unregister(link.read_fd)
        self.lost.pop(rank, None)

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        with self._sending(dest) as link:
            link.send_all(dest, records)

    def send_frame(self, dest: int, parts: Sequence[bytes]) -> None:
        """One frame of ``parts`` to ``dest`` (:meth:`PipeLink.send_frame`)."""
        with self._sending(dest) as link:
            link.send_frame(dest, parts)

    @contextlib.contextmanager
    def _sending(self, dest: int) -> Iterator[PipeLink]:
        """``dest``'s link; a send that breaks it has the server's end checked first."""
        link = self.links.get(dest)
        if link is None:
            raise TransportBroken(f"no shell server at rank {dest}")
        try:
            yield link
        except TransportBroken:
            self._check(dest)
            raise

    def progress(self) -> bool:
        wrote = False
        for rank, link in self.links.items():
            if link.sends_pending and rank not in self.lost:
                wrote = link.progress() or wrote
        return wrote

    @property
    def sends_pending(self) -> int:
        return sum(link.sends_pending for link in self.links.values())

    def poll(self) -> tuple[int, bytes | bytearray] | None:
        return next(self.drain(limit=1), None)

    def drain(self, limit: int = DRAIN_LIMIT) -> Iterator[tuple[int, bytes | bytearray]]:
        self.progress()
        with contextlib.suppress(InterruptedError):
            for fd, _ in self._poller.poll(0):
                rank = self._by_fd[fd]
                self.links[rank].fill()
        ranks = sorted(self.links)
        if not ranks:
            return
        self._turn = (self._turn + 1) % len(ranks)
        order = ranks[self._turn :] + ranks[: self._turn]
        given = 0
        progressed = True
        while given < limit and progressed:
            progressed = False
            for rank in order:
                if rank in self.lost:
                    continue
                record = self.links[rank].next_record()
                if record is None:
                    self._check(rank)  # lost only once every record it sent was read
                    continue
                progressed = True
                given += 1
                yield rank, record
                if given >= limit:
                    return

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        done = True
        for rank, link in self.links.items():
            if rank not in self.lost:
                done = link.flush(max(0.0, deadline - time.monotonic())) and done
        return done

    def wait(self, timeout: float, read_fds: Sequence[int] = (), write_fds: Sequence[int] = ()) -> Ready:
        """Sleep until some peer sent something, a given descriptor is ready, or ``timeout``."""
        if self.progress() or any(link.broken and rank not in self.lost for rank, link in self.links.items()):
            return _ready(read_fds, write_fds, 0.0)
        if read_fds or write_fds or self.sends_pending:
            own = [(fd, select.POLLIN) for fd, rank in self._by_fd.items() if rank not in self.lost]
            own += [(link.write_fd, select.POLLOUT) for rank, link in self.links.items()
                    if link.sends_pending and rank not in self.lost]
            return _wait(own, read_fds, write_fds, timeout)
        with contextlib.suppress(InterruptedError):
            self._poller.poll(max(0, int(timeout * 1000 + 0.999)))
        return [], []

    def close(self) -> None:
        for link in self.links.values():
            link.close()

    def _check(self, rank: int) -> None:
        link = self.links[rank]
        if link.broken and rank not in self.lost:
            self.lost[rank] = link.broken
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._poller.unregister(link.read_fd)
            if self.on_lost is not None:
                self.on_lost(rank, link.broken)


def pipe_links(pairs: Sequence[tuple[int, int]], size: int) -> dict[int, PipeLink]:
    """Ranks 1..N over (read fd, write fd) pairs, as seen from the console (rank 0)."""
    return {rank: PipeLink(r, w, rank=0, size=size, peer=rank) for rank, (r, w) in enumerate(pairs, 1)}


# --- the records of a session over pipes ---------------------------------------------
PLAIN_HEADER = struct.Struct(">BI")  # kind, channel
PLAIN_DATA, PLAIN_CLOSE = 0, 1


def closed_channel() -> PlainChannel:
    """Closed from the start: an ssh host never reached (its peer is sent nothing)."""
    return PlainChannel(0, closed=True)


class PlainChannel:
    """The :class:`~mpish.transport.link.Channel` of a shell session inside ssh: a message
    is one record, ``kind channel data``; a close record ends the sender's side.

    Same interface and the same end-of-session rules as
    :class:`~mpish.wire.channel.SecureChannel`, without its cryptography: ssh authenticates
    the peer and protects the pipes. A malformed record makes it unusable, as a failed
    record does a SecureChannel on a byte stream. Made only by
    :meth:`PipeLink.plain_channel`.
    """

    drop_forged = False
    remote_static: bytes | None = None  # no keys: ssh authenticated the peer

    def __init__(self, max_message: int, closed: bool = False) -> None:
        self.max_message = max_message
        self._close_sent = closed
        self._close_received = False
        self._error = ""

    @property
    def is_open(self) -> bool:
        return not self._close_sent and not self._error

    def initiate(self) -> list[bytes | bytearray]:
        return []  # nothing to agree on: ssh did the authentication

    def records_to_send(self) -> list[bytes | bytearray]:
        return []

    def _check_usable(self) -> None:
        if self._error:
            raise LocalProtocolError(f"the channel is unusable after an earlier error: {self._error}")

    def send(self, data: bytes | bytearray | memoryview, channel: int = 0) -> list[bytes | bytearray]:
        self._check_usable()
        if self._close_sent:
            raise LocalProtocolError("cannot send data after the close")
        if len(data) > self.max_message:
            raise LocalProtocolError(f"message of {len(data)} bytes exceeds max_message {self.max_message}")
        return [PLAIN_HEADER.pack(PLAIN_DATA, channel) + data]

    def send_parts(self, data: bytes, channel: int) -> list[bytes]:
        """The one record of ``data`` as its parts (header, data), for
        :meth:`PipeLink.send_frame`: bulk bytes are not copied behind a header."""
        self._check_usable()
        if self._close_sent:
            raise LocalProtocolError("cannot send data after the close")
        if len(data) > self.max_message:
            raise LocalProtocolError(f"message of {len(data)} bytes exceeds max_message {self.max_message}")
        return [PLAIN_HEADER.pack(PLAIN_DATA, channel), data]

    def close(self) -> list[bytes | bytearray]:
        self._check_usable()
        if self._close_sent:
            raise LocalProtocolError("cannot close twice")
        self._close_sent = True
        return [PLAIN_HEADER.pack(PLAIN_CLOSE, 0)]

    def receive_record(self, record: Record) -> list[Event]:
        self._check_usable()
        try:
            if len(record) < PLAIN_HEADER.size:
                raise RemoteProtocolError(f"record of {len(record)} bytes is shorter than its header")
            if self._close_received:
                raise RemoteProtocolError("record after the peer's close")
            kind, channel = PLAIN_HEADER.unpack_from(record)
            if kind == PLAIN_DATA:
                return [Message(channel, memoryview(record)[PLAIN_HEADER.size :])]  # no copy
            if kind == PLAIN_CLOSE and len(record) == PLAIN_HEADER.size:
                self._close_received = True
                return [CloseReceived()]
            raise RemoteProtocolError(f"malformed record (kind {kind})")
        except MpishError as exc:
            self._error = str(exc)
            raise
