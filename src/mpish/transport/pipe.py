"""Records over byte streams: one pipe pair per peer (ssh's stdin/stdout, or the agent's).

Theory of operation
-------------------
A :class:`PipeLink` joins this end to ONE peer over a readable and a writable file
descriptor, both non-blocking. Records (SecureChannel records: a 44-byte header whose
length field gives the body size) are cut out of the byte stream by their own header:
:func:`mpish.wire.record.parse_header` bounds the length before anything is reserved,
so a corrupt or hostile stream costs at most one record's worth of buffer, and is then
reported as a broken peer. Sending queues the records and writes what the pipe takes;
the rest goes out on later calls (:meth:`PipeLink.progress`). The queue is bounded:
beyond :data:`MAX_QUEUED` bytes a send waits (``poll``, no spinning) until the pipe
takes some. The shell protocol's credit window keeps it far below that in practice.

A :class:`MultiLink` is the console's side: ranks 1..N are N PipeLinks (one ssh
process per host). One ``select.poll`` object watches every peer's read end, so an
idle console costs one system call per look, whatever N. A peer whose pipe ends (EOF,
EPIPE) or sends garbage is *lost*: it is reported once through ``on_lost`` (like a dead
rank under MPI), never raised out of ``poll``/``drain``, so the other hosts go on;
sending to it raises :class:`~mpish.wire.errors.TransportBroken`.

Neither class ever blocks in ``poll``/``drain``: the callers (console, shell server)
wait with the same backoff as on MPI.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from mpish.wire.errors import MpishError, TransportBroken
from mpish.wire.record import HEADER_SIZE, MAX_RECORD_PAYLOAD, parse_header

READ_SIZE = 256 * 1024
MAX_RECORD = HEADER_SIZE + MAX_RECORD_PAYLOAD + 64  # header + body + AEAD tag, with slack
MAX_QUEUED = 16 << 20  # bytes queued for one peer before a send waits for the pipe
DRAIN_LIMIT = 64  # records per drain(), so other work is not starved

LostCallback = Callable[[int, str], None]


class PipeLink:
    """Whole records to and from one peer over a pair of non-blocking file descriptors."""

    def __init__(self, read_fd: int, write_fd: int, *, rank: int, size: int, peer: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.rank = rank
        self.size = size
        self.peer = peer
        for fd in (read_fd, write_fd):
            os.set_blocking(fd, False)
        self._in = bytearray()
        self._start = 0  # first unparsed byte of _in
        self._out: deque[memoryview] = deque()
        self._queued = 0
        self.broken = ""  # why the pipe ended ("" while it works)
        self.sent_bytes = 0
        self.received_bytes = 0

    # -- sending

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        if dest != self.peer:
            raise TransportBroken(f"no pipe to rank {dest}")
        if self.broken:
            raise TransportBroken(self.broken)
        for record in records:
            self._out.append(memoryview(record))
            self._queued += len(record)
            self.sent_bytes += len(record)
        self.progress()
        while self._queued > MAX_QUEUED and not self.broken:
            self._wait(self.write_fd, select.POLLOUT, 1.0)
            self.progress()
        if self.broken:
            raise TransportBroken(self.broken)

    def send_raw(self, data: bytes) -> None:
        """Bytes that are not a record (the bootstrap), queued in order with the records."""
        records: list[bytes | bytearray] = [data]
        self.send_all(self.peer, records)

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
            self._wait(self.write_fd, select.POLLOUT, left)
            self.progress()
        return not self._out

    # -- receiving

    def fill(self) -> None:
        """Read what the pipe has now (bounded: one record plus one read at most)."""
        if self.broken or len(self._in) - self._start >= MAX_RECORD:
            return
        if self._start and self._start == len(self._in):
            self._in.clear()
            self._start = 0
        elif self._start > READ_SIZE:
            del self._in[: self._start]
            self._start = 0
        try:
            data = os.read(self.read_fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._break(f"cannot read: {exc.strerror or exc}")
            return
        if not data:
            self._break("the pipe was closed")
            return
        self._in += data
        self.received_bytes += len(data)

    def next_record(self) -> bytes | None:
        """The next whole record already read, or None; a malformed header breaks the link."""
        available = len(self._in) - self._start
        if available < HEADER_SIZE:
            return None
        try:
            header = parse_header(bytes(self._in[self._start : self._start + HEADER_SIZE]))
        except MpishError as exc:
            self._break(f"malformed stream: {exc}")
            self._in.clear()
            self._start = 0
            return None
        total = HEADER_SIZE + header.length
        if available < total:
            return None
        record = bytes(self._in[self._start : self._start + total])
        self._start += total
        return record

    def poll(self) -> tuple[int, bytes] | None:
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

    def drain(self) -> Iterator[tuple[int, bytes]]:
        for _ in range(DRAIN_LIMIT):
            item = self.poll()
            if item is None:
                return
            yield item

    def wait_readable(self, timeout: float) -> None:
        """Sleep until the peer sent something (or ``timeout``): for callers with nothing else to do."""
        if self.next_record() is None and not self.broken:
            self._wait(self.read_fd, select.POLLIN, timeout)

    # -- internals

    def _break(self, why: str) -> None:
        if not self.broken:
            self.broken = why
            self._out.clear()
            self._queued = 0

    @staticmethod
    def _wait(fd: int, events: int, timeout: float) -> None:
        poller = select.poll()
        poller.register(fd, events)
        with contextlib.suppress(InterruptedError):
            poller.poll(max(0, int(timeout * 1000)))

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)


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

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        link = self.links.get(dest)
        if link is None:
            raise TransportBroken(f"no shell server at rank {dest}")
        try:
            link.send_all(dest, records)
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

    def poll(self) -> tuple[int, bytes] | None:
        return next(self.drain(limit=1), None)

    def drain(self, limit: int = DRAIN_LIMIT) -> Iterator[tuple[int, bytes]]:
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
                if record is not None:
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

    def wait(self, timeout: float) -> None:
        """Sleep until some peer sent something (or ``timeout``)."""
        with contextlib.suppress(InterruptedError):
            self._poller.poll(max(0, int(timeout * 1000)))

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
