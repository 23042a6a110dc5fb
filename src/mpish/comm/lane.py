"""The record engine: messages as authenticated records over a pair of MPI communicators.

Theory of operation
-------------------
A lane is a main communicator (first records; MPI matching applies to them exactly as to
raw messages) and a bulk communicator (continuation records), with one Sealer and one
Opener per peer. A message of at most :data:`SINGLE_MAX` bytes is one record. A longer
one is a first record flagged MORE whose 8-byte payload is the message length, followed
by continuation records of ``_chunk(length)`` bytes on the bulk communicator, all
flagged MORE except the last. First and continuation records share the (direction,
tag) counter, so a receiver accepts on each (source, tag) only increasing counters, and
a continuation record only with exactly the next one and exactly the expected length.

Progress (MPI's guarantee: every program that completes on the raw communicator
completes here). A sender posts every record of a message (``Isend``) before it blocks
on anything, so once a receiver has its first record, the continuation records are
all on their way and draining them cannot wait on the sender. Receives of first
records are real MPI receives (``Irecv``), posted when the user posts them. Lanes with
posted receives are listed in :data:`_ACTIVE`; every blocking call (Send, Recv, Wait,
Probe, collectives) of any secure communicator polls instead of blocking while that
list is not empty, and completes any posted receive whose first record arrived,
draining its continuation records: so a sender waiting for them never waits on a
receiver that is blocked elsewhere. Without posted receives the calls block in MPI.

Forged traffic (THREAT-MODEL "a forged record may be dropped and counted"): a record
that fails any check (bad tag, replay, moved, malformed, oversized) is dropped before
anything is written to the user's memory, counted in ``rejected`` (and logged, and
passed to the optional ``on_reject`` callback), and the call goes on waiting for the
genuine message. In strict mode the call raises the error instead. Nothing is
unpickled or delivered before authentication. Single records are opened into a fresh
plaintext and copied; continuation records are decrypted in place only after their
header (length, counter, flags) matched what the message's authenticated first record
announced, into the bytes that the genuine record overwrites.

A forged message longer than any record is dropped whole. MPICH truncates it safely
into the record buffer (ERR_TRUNCATE); Open MPI 5 may crash doing so, so there
(:data:`MATCH_FIRST`) blocking receives, probes and continuation records match a message
(Mprobe) before receiving it, and one too long is received whole and dropped
(``transport.mpi.discard``). A user's posted ``Irecv`` is a real MPI receive into a
first-record buffer still: under Open MPI a forged message longer than that, matched
by it, is truncated by Open MPI (open).

A forged first record consumed by a posted ``Irecv`` makes mpish post that receive
again: if several receives with overlapping envelopes are pending, the genuine messages
may then complete them in another order than MPI would have matched them.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mpi4py import MPI

from ..transport.mpi import discard
from ..wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from ..wire.noise import TAGLEN
from ..wire.record import (
    FLAG_MORE,
    HEADER,
    HEADER_SIZE,
    MAX_RECORD_PAYLOAD,
    SMALL_RECORD,
    Opener,
    RecordType,
    Sealer,
)
from .buffers import matches, mpi_error, mpi_truncate
from .secret import CommSecret

log = logging.getLogger("mpish.comm")

RECORD_MAX = HEADER_SIZE + MAX_RECORD_PAYLOAD + TAGLEN
SINGLE_MAX = 64 * 1024  # a message of at most this many bytes is one record
FIRST_MAX = HEADER_SIZE + SINGLE_MAX + TAGLEN  # the largest first record
BULK_CHUNK = 256 * 1024
_POOL = 32  # record buffers kept per lane for blocking sends (32 MiB at most)
_TOTAL = struct.Struct(">Q")  # payload of the first record of a long message: its length
_CHANNEL = struct.Struct(">I")  # the channel field of a record header (record.py's layout):
_CHANNEL_OFFSET = HEADER_SIZE - 16  # channel (4 bytes), counter (8) and length (4) end the header
RECORD_ERRORS = (AuthenticationError, ReplayError, RemoteProtocolError)
# Open MPI 5 corrupts its heap or crashes when it truncates a large message (btl/sm), and
# does not report a truncated receive from the process itself: there every blocking
# receive matches the message first (Mprobe) and drops one larger than any record whole.
# A receive posted by the user (Irecv) is a real MPI receive still (module doc).
MATCH_FIRST = MPI.Get_library_version().startswith("Open MPI")

T = TypeVar("T")
Envelope = tuple[int, int]  # (source, tag) of a received message
Result = tuple[int, int, int, bytes | bytearray | None]  # source, tag, nbytes, data (if no sink)


def _chunk(size: int) -> int:
    """Continuation record size: a quarter MiB up to 2 MiB messages, then up to the 1 MiB cap."""
    return min(MAX_RECORD_PAYLOAD, max(BULK_CHUNK, size // 8))


@dataclass
class Stats:
    """What a communicator (and those derived from it) saw of forged traffic."""

    rejected: int = 0  # records that failed a check and were dropped
    strict: bool = False  # raise on a rejected record instead of dropping it
    on_reject: Callable[[BaseException], None] | None = field(default=None, repr=False)

    def reject(self, exc: BaseException) -> None:
        """Count a rejected record; raise it in strict mode."""
        self.rejected += 1
        log.warning("mpish.secure: dropped a record: %s", exc)
        if self.on_reject is not None:
            self.on_reject(exc)
        if self.strict:
            raise exc


_ACTIVE: set[Lane] = set()  # lanes with posted receives, progressed by every blocking call


def progress() -> None:
    """Complete every posted receive (of any secure communicator) whose first record arrived."""
    for lane in list(_ACTIVE):
        lane.progress()


def wait_all(requests: list[Any]) -> None:
    """Wait for MPI requests, progressing posted receives meanwhile (see module doc)."""
    if not _ACTIVE:
        MPI.Request.Waitall(requests)
        return
    while not MPI.Request.Testall(requests):
        progress()


class PerPeer(dict[int, T]):
    """Per-peer objects made on first use by ``make(peer)`` (indexed like a list by rank)."""

    def __init__(self, make: Callable[[int], T]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, peer: int) -> T:
        value = self[peer] = self._make(peer)
        return value


class PostedRecv:
    """An Irecv posted on a lane: the MPI request of its first record and what became of it."""

    __slots__ = ("buf", "done", "error", "obj", "request", "result", "sink", "source", "tag")

    def __init__(self, source: int, tag: int, sink: memoryview | None) -> None:
        self.source = source
        self.tag = tag
        self.sink = sink  # user buffer, or None for a pickled object
        self.buf = bytearray(0)
        self.request: Any = None
        self.done = False
        self.result: tuple[int, int, int] | None = None  # (source, tag, nbytes)
        self.obj: bytes | bytearray | None = None
        self.error: BaseException | None = None


@dataclass
class Early:
    """A message already taken out of MPI and authenticated (by a probe)."""

    source: int
    tag: int
    data: bytes | bytearray


class Lane:
    """Records over one pair of internal communicators (main + bulk), one Sealer/Opener per peer."""

    def __init__(self, comm: Any, bulk: Any, keys: CommSecret, label: bytes, stats: Stats) -> None:
        self.comm = comm
        self.bulk = bulk
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        # Per peer, made on first use (secret.py): setup costs nothing per peer.
        self.sealers: PerPeer[Sealer] = PerPeer(lambda peer: keys.sealer(label, peer))
        self.openers: PerPeer[Opener] = PerPeer(lambda peer: keys.opener(label, peer))
        self.stats = stats
        # Buffers: only the first-record one now; the others on first use (setup stays cheap).
        self._tx: bytearray | None = None  # one-record messages of SMALL_RECORD..SINGLE_MAX bytes
        self._pool: list[bytearray] = []  # RECORD_MAX buffers of blocking long sends
        self._rx = bytearray(FIRST_MAX)  # first records (a longer message is forged: truncated, dropped)
        self._bulk_rx: tuple[bytearray, bytearray] | None = None  # continuation records
        self._spare: list[bytearray] = []  # FIRST_MAX buffers of finished posted receives
        self._status = MPI.Status()
        self._last: dict[Envelope, int] = {}  # (source, tag) -> last counter processed
        # Prebound methods for the small-message hot path (one lookup per peer, not per call).
        self.seal_small: PerPeer[Callable[..., bytes | bytearray]] = PerPeer(lambda p: self.sealers[p].seal)
        self._open_small: PerPeer[Callable[..., tuple[int, int, int, int, bytes]]] = PerPeer(
            lambda p: self.openers[p].open_fields
        )
        self.mpi_send = comm.Send
        self._mpi_recv = comm.Recv
        self._count = self._status.Get_count
        self._source = self._status.Get_source
        self._tag = self._status.Get_tag
        self.posted: list[PostedRecv] = []
        self.early: list[Early] = []

    def free(self) -> None:
        _ACTIVE.discard(self)
        for comm in (self.comm, self.bulk):
            if comm != MPI.COMM_NULL:
                comm.Free()

    # -- sending

    def sealer_for(self, dest: int, tag: int) -> Sealer | None:
        """The sealer of ``dest``; None for MPI.PROC_NULL (nothing is sent).

        Checked explicitly: a negative rank must never select another peer's key through
        Python's negative indexing, and a bad tag is MPI's ERR_TAG, not a sealing error.
        """
        if tag < 0:
            raise mpi_error(MPI.ERR_TAG, f"invalid tag {tag}")
        if 0 <= dest < self.size:
            return self.sealers[dest]
        if dest == MPI.PROC_NULL:
            return None
        raise mpi_error(MPI.ERR_RANK, f"invalid rank {dest}")

    def send(self, data: memoryview, dest: int, tag: int) -> None:
        """Blocking send of one message (one or more records)."""
        sealer = self.sealer_for(dest, tag)
        if sealer is None:
            return
        size = len(data)
        if size < SMALL_RECORD:  # one C call to seal, no copy into a buffer
            self.mpi_send(sealer.seal(data, channel=tag), dest, tag)
            return
        if size <= SINGLE_MAX:
            if self._tx is None:
                self._tx = bytearray(FIRST_MAX)
            n = sealer.seal_into(self._tx, data, channel=tag)
            if _ACTIVE:
                wait_all([self.comm.Isend([self._tx, n, MPI.BYTE], dest, tag)])
            else:
                self.comm.Send([self._tx, n, MPI.BYTE], dest, tag)
            return
        requests, _ = self.post_long(sealer, data, dest, tag, pooled=True)
        wait_all(requests)

    def isend(self, data: memoryview, dest: int, tag: int) -> tuple[list[Any], list[Any]]:
        """Nonblocking send: every record sealed now into its own buffer, all posted."""
        sealer = self.sealer_for(dest, tag)
        if sealer is None:
            return [], []
        if len(data) <= SINGLE_MAX:
            record = sealer.seal(data, channel=tag)
            return [self.comm.Isend([record, MPI.BYTE], dest, tag)], [record]
        return self.post_long(sealer, data, dest, tag, pooled=False)

    def post_long(
        self, sealer: Sealer, data: memoryview, dest: int, tag: int, *, pooled: bool
    ) -> tuple[list[Any], list[Any]]:
        """Seal and post every record of a long message (the first one, then the bulk ones).

        Sealing record k+1 overlaps the transfer of record k; nothing here blocks, so a
        receiver that got the first record can always drain the rest (module doc).
        """
        size = len(data)
        first = sealer.seal(_TOTAL.pack(size), channel=tag, flags=FLAG_MORE)
        requests: list[Any] = [self.comm.Isend([first, MPI.BYTE], dest, tag)]
        buffers: list[Any] = [first]
        chunk = _chunk(size)
        bulk_isend = self.bulk.Isend
        pool = self._pool
        for index, start in enumerate(range(0, size, chunk)):
            end = min(start + chunk, size)
            if pooled and index < _POOL:
                if index == len(pool):
                    pool.append(bytearray(RECORD_MAX))
                out = pool[index]
            else:
                out = bytearray(HEADER_SIZE + end - start + TAGLEN)
            n = sealer.seal_into(out, data[start:end], channel=tag, flags=FLAG_MORE if end < size else 0)
            requests.append(bulk_isend([out, n, MPI.BYTE], dest, tag))
            buffers.append(out)
        return requests, buffers

    # -- receiving

    def take_early(self, source: int, tag: int) -> Early | None:
        for index, early in enumerate(self.early):
            if matches(source, tag, early.source, early.tag):
                return self.early.pop(index)
        return None

    def recv(self, source: int, tag: int, sink: memoryview | None) -> Result:
        """Blocking receive of one authenticated message into ``sink`` (or as bytes when None).

        Returns (source, tag, nbytes, data-if-sink-is-None); from MPI.PROC_NULL at once
        (PROC_NULL, ANY_TAG, 0, None), as MPI does. Rejected records are dropped (module doc).
        """
        if source == MPI.PROC_NULL:
            return MPI.PROC_NULL, MPI.ANY_TAG, 0, None
        while True:
            if self.early:
                early = self.take_early(source, tag)
                if early is not None:
                    return deliver_early(early, sink)
            record: memoryview | bytearray
            if _ACTIVE:
                record, s, t = self._poll_first(source, tag)
            elif MATCH_FIRST:
                message = self._matched(self.comm, source, tag, FIRST_MAX)
                if message is None:
                    continue
                message.Recv([self._rx, MPI.BYTE], self._status)
                s, t = self._source(), self._tag()
                record = memoryview(self._rx)[: self._count()]
            else:
                # Straight into the preallocated record buffer: no Status or buffer spec per call.
                try:
                    self._mpi_recv(self._rx, source, tag, self._status)
                except MPI.Exception as exc:
                    self._oversized(exc)
                    continue
                s, t, count = self._source(), self._tag(), self._count()
                # A copy of a small record costs less than a memoryview slice (whose header
                # comparisons in open_fields are slow); a larger one is opened in place.
                record = self._rx[:count] if count < SMALL_RECORD else memoryview(self._rx)[:count]
            try:
                return self.process(record, s, t, sink)
            except RECORD_ERRORS as exc:
                self.stats.reject(exc)

    def _oversized(self, exc: Any) -> None:
        """An MPI receive of a record failed: a message larger than any record is dropped."""
        if exc.Get_error_class() != MPI.ERR_TRUNCATE:
            raise exc
        self.stats.reject(RemoteProtocolError("a message larger than any record was dropped"))

    def _matched(self, comm: Any, source: int, tag: int, limit: int) -> Any:
        """The next matching message (MPI.Message), or None if it was longer than ``limit``:
        that one is received whole, dropped and counted, never truncated by MPI."""
        message = comm.Mprobe(source, tag, self._status)
        return self._within(message, self._status, limit)

    def _within(self, message: Any, status: Any, limit: int) -> Any:
        count = status.Get_count(MPI.BYTE)
        if count <= limit:
            return message
        discard(message, count)
        error = RemoteProtocolError(f"a message of {count} bytes, larger than any record, was dropped")
        self.stats.reject(error)
        return None

    def _poll_first(self, source: int, tag: int) -> tuple[memoryview, int, int]:
        """Receive a first record while progressing posted receives (they come first)."""
        buf = self._spare.pop() if self._spare else bytearray(FIRST_MAX)
        status = MPI.Status()
        while MATCH_FIRST:
            message = self.comm.Improbe(source, tag, status)
            if message is None:
                progress()
            elif self._within(message, status, FIRST_MAX) is not None:
                message.Recv([buf, MPI.BYTE], status)
                break
        while not MATCH_FIRST:
            request = self.comm.Irecv([buf, MPI.BYTE], source, tag)
            try:
                while not request.Test(status):
                    progress()
            except MPI.Exception as exc:
                self._oversized(exc)
                continue
            break
        s, t = status.Get_source(), status.Get_tag()
        self.flush_posted(s, t, len(self.posted))
        return memoryview(buf)[: status.Get_count(MPI.BYTE)], s, t

    def post(self, source: int, tag: int, sink: memoryview | None) -> PostedRecv:
        """Irecv of a first record (a real MPI Irecv, so MPI's matching order holds)."""
        posted = PostedRecv(source, tag, sink)
        if source == MPI.PROC_NULL:  # completes at once, empty, as in MPI
            posted.result, posted.done = (MPI.PROC_NULL, MPI.ANY_TAG, 0), True
            return posted
        early = self.take_early(source, tag)
        if early is not None:
            try:
                s, t, n, data = deliver_early(early, sink)
                posted.result, posted.obj = (s, t, n), data
            except Exception as exc:
                posted.error = exc
            posted.done = True
            return posted
        # Room for any first record: a genuine message too long for ``sink`` is received
        # whole, authenticated and drained, then reported as MPI's ERR_TRUNCATE; an MPI
        # truncation of this receive is always a forged message.
        posted.buf = self._spare.pop() if self._spare else bytearray(FIRST_MAX)
        posted.request = self.comm.Irecv([posted.buf, MPI.BYTE], source, tag)
        self.posted.append(posted)
        _ACTIVE.add(self)
        return posted

    def complete(self, posted: PostedRecv, *, block: bool, once: bool = False) -> bool:
        """Complete ``posted`` if its first record arrived (or wait for it when ``block``).

        ``once``: stop after one record was processed even if it was rejected (flush).
        """
        status = MPI.Status()
        while not posted.done:
            request = posted.request
            if request is None:  # its first record is being processed further up the stack
                return False
            try:
                if once or (block and len(self.posted) == 1 and len(_ACTIVE) == 1):
                    request.Wait(status)  # matched already (flush), or nothing else to progress
                elif not request.Test(status):
                    if not block:
                        return False
                    progress()
                    continue
            except MPI.Exception as exc:
                try:
                    self._oversized(exc)
                except BaseException as error:  # strict mode, or another MPI error
                    self._finish(posted, error)
                    return True
                posted.request = self.comm.Irecv([posted.buf, MPI.BYTE], posted.source, posted.tag)
                if once:
                    return False
                continue
            posted.request = None
            self._first_arrived(posted, status)
            if once:
                break
        return posted.done

    def _first_arrived(self, posted: PostedRecv, status: Any) -> None:
        s, t, count = status.Get_source(), status.Get_tag(), status.Get_count(MPI.BYTE)
        self.flush_posted(s, t, self.posted.index(posted))
        try:
            _, _, n, data = self.process(memoryview(posted.buf)[:count], s, t, posted.sink)
        except RECORD_ERRORS as exc:
            try:
                self.stats.reject(exc)
            except BaseException as error:
                self._finish(posted, error)
                return
            # Dropped: wait for the genuine message (posted again, now last in MPI's queue).
            self.posted.remove(posted)
            self.posted.append(posted)
            posted.request = self.comm.Irecv([posted.buf, MPI.BYTE], posted.source, posted.tag)
            return
        except Exception as exc:
            self._finish(posted, exc)
            return
        posted.result, posted.obj = (s, t, n), data
        self._finish(posted, None)

    def _finish(self, posted: PostedRecv, error: BaseException | None) -> None:
        posted.error, posted.done = error, True
        if posted in self.posted:
            self.posted.remove(posted)
        if not self.posted:
            _ACTIVE.discard(self)
        if len(posted.buf) == FIRST_MAX and len(self._spare) < 8:
            self._spare.append(posted.buf)
        posted.buf = bytearray(0)

    def flush_posted(self, source: int, tag: int, before: int) -> None:
        """Complete earlier-posted receives whose envelope matches (source, tag).

        MPI matched them before the message from (source, tag) just received, so waiting
        on them cannot block, and processing them first keeps counters in send order.
        """
        for posted in list(self.posted[:before]):
            if not posted.done and matches(posted.source, posted.tag, source, tag):
                self.complete(posted, block=True, once=True)

    def progress(self) -> None:
        for posted in list(self.posted):
            if not posted.done:
                self.complete(posted, block=False)

    def process(
        self, record: memoryview | bytearray, source: int, tag: int, sink: memoryview | None
    ) -> Result:
        """Authenticate a first record from (source, tag), then its continuation records.

        ``open_fields`` checks session, sender and receiver (the Opener is chosen by the MPI
        source) and the tag before anything is released; the channel is checked here before
        opening, counter order and flags after.
        """
        key = (source, tag)
        last = self._last
        # The channel field is compared with the MPI tag BEFORE the record is opened:
        # opening a moved copy would mark its counter as received on its own channel,
        # and the original, arriving there later, would be rejected as a replay.
        if len(record) >= HEADER_SIZE and _CHANNEL.unpack_from(record, _CHANNEL_OFFSET)[0] != tag:
            channel = _CHANNEL.unpack_from(record, _CHANNEL_OFFSET)[0]
            raise RemoteProtocolError(f"record for tag {channel} arrived with MPI tag {tag} (moved record)")
        if len(record) > FIRST_MAX:
            raise RemoteProtocolError(f"first record of {len(record)} bytes, more than any first record")
        # (open_fields authenticates the whole header, so the channel is now tag's.)
        _, flags, _, counter, plain = self._open_small[source](record)
        if counter <= last.get(key, -1):
            raise ReplayError(f"record {counter} from rank {source} on tag {tag} is a replay or out of order")
        last[key] = counter
        if flags:  # the first record of a message of several records
            return self._long(plain, source, tag, sink)
        n = len(plain)
        if sink is None:
            return source, tag, n, plain
        if n > len(sink):
            raise mpi_truncate(f"message of {n} bytes from rank {source}, receive buffer of {len(sink)}")
        sink[:n] = plain
        return source, tag, n, None

    def _long(self, first: bytes, source: int, tag: int, sink: memoryview | None) -> Result:
        """The rest of a message whose (authenticated) first record ``first`` was flagged MORE."""
        if len(first) != _TOTAL.size:
            raise RemoteProtocolError(f"malformed first record from rank {source}")  # authentic: a bug there
        total = _TOTAL.unpack(first)[0]
        data: bytearray | None = None
        if sink is None:
            data = bytearray(total)  # the length comes from an authenticated, authorized peer
            target: memoryview | None = memoryview(data)
        else:
            target = sink if total <= len(sink) else None  # too long: drained, then ERR_TRUNCATE
        self._drain(source, tag, target, total)
        if target is None:
            raise mpi_truncate(
                f"message of {total} bytes from rank {source} tag {tag} exceeds the receive buffer of "
                f"{len(sink or b'')}"
            )
        return source, tag, total, data

    def _drain(self, source: int, tag: int, target: memoryview | None, total: int) -> None:
        """Receive, check and open the continuation records of a message of ``total`` bytes."""
        chunk = _chunk(total)
        records = -(-total // chunk)
        if self._bulk_rx is None:
            self._bulk_rx = (bytearray(RECORD_MAX), bytearray(RECORD_MAX))
        buffers = self._bulk_rx
        status = self._status
        which, offset, index = 0, 0, 0
        pending: Any = None if MATCH_FIRST else self.bulk.Irecv([buffers[0], MPI.BYTE], source, tag)
        while index < records:
            if MATCH_FIRST:  # one record at a time, each matched before it is received
                message = self._matched(self.bulk, source, tag, RECORD_MAX)
                if message is None:
                    continue
                message.Recv([buffers[which], MPI.BYTE], status)
            else:
                try:
                    pending.Wait(status)
                except MPI.Exception as exc:
                    self._oversized(exc)
                    pending = self.bulk.Irecv([buffers[which], MPI.BYTE], source, tag)
                    continue
            current = which
            record = memoryview(buffers[current])[: status.Get_count(MPI.BYTE)]
            # Post the receive of the next record before opening this one, so the sender's
            # transfer overlaps our decryption.
            which ^= 1
            pending = (
                self.bulk.Irecv([buffers[which], MPI.BYTE], source, tag)
                if index + 1 < records and not MATCH_FIRST
                else None
            )
            size = min(chunk, total - offset)
            try:
                self._open_continuation(
                    record,
                    source,
                    tag,
                    size,
                    index + 1 < records,
                    None if target is None else target[offset:],
                )
            except RECORD_ERRORS as exc:
                self.stats.reject(exc)
                if pending is None and not MATCH_FIRST:  # the genuine last record is still to come
                    which = current
                    pending = self.bulk.Irecv([buffers[which], MPI.BYTE], source, tag)
                continue
            index += 1
            offset += size

    def _open_continuation(
        self, record: memoryview, source: int, tag: int, size: int, more: bool, out: memoryview | None
    ) -> None:
        if len(record) != HEADER_SIZE + size + TAGLEN:
            raise RemoteProtocolError(
                f"continuation record of {len(record)} bytes from rank {source}, expected "
                f"{HEADER_SIZE + size + TAGLEN}"
            )
        _, rtype, flags, _, _, _, _, channel, counter, _ = HEADER.unpack_from(record)
        key = (source, tag)
        if rtype != RecordType.DATA or channel != tag or flags != (FLAG_MORE if more else 0):
            raise RemoteProtocolError(f"unexpected continuation record from rank {source} tag {tag}")
        if counter != self._last[key] + 1:
            raise ReplayError(f"continuation record {counter} from rank {source} is a replay or out of order")
        opener = self.openers[source]
        if out is None:  # draining a truncated message: authenticate, keep nothing
            opener.open(record)
        else:
            opener.open_into(record, out)
        self._last[key] = counter

    def probe(self, source: int, tag: int, *, block: bool) -> Early | None:
        """The next matching authenticated message, taken out of MPI and kept for the receive.

        Probing authenticates (so a forged message is never reported, whatever size it
        claims): the message is received and kept in ``early``, where receives look first.
        """
        for early in self.early:
            if matches(source, tag, early.source, early.tag):
                return early
        status = MPI.Status()
        while True:
            if block and not _ACTIVE:
                message = self.comm.Mprobe(source, tag, status)
            else:
                while (message := self.comm.Improbe(source, tag, status)) is None:
                    if not block:
                        return None
                    progress()
            s, t = status.Get_source(), status.Get_tag()
            if self._within(message, status, FIRST_MAX) is None:
                continue
            buf = bytearray(status.Get_count(MPI.BYTE))
            message.Recv([buf, MPI.BYTE])
            self.flush_posted(s, t, len(self.posted))
            try:
                _, _, _, data = self.process(buf, s, t, None)
            except RECORD_ERRORS as exc:
                self.stats.reject(exc)
                continue
            assert data is not None
            early = Early(s, t, data)
            self.early.append(early)
            return early


def deliver_early(early: Early, sink: memoryview | None) -> Result:
    n = len(early.data)
    if sink is None:
        return early.source, early.tag, n, early.data
    if n > len(sink):
        raise mpi_truncate(f"message of {n} bytes, receive buffer of {len(sink)}")
    sink[:n] = early.data
    return early.source, early.tag, n, None
