"""The record engine: messages as authenticated records over a pair of MPI communicators.

Theory of operation
-------------------
A lane is a main communicator (first records; MPI matching applies to them exactly as to
raw messages) and a bulk communicator (continuation records, bulk.py), with one Sealer
and one Opener per peer, made on first use from the communicator's secret (secret.py).
Receives posted by the user and the progress they need are posted.py's.

Forged traffic (THREAT-MODEL "a forged record may be dropped and counted"): a record
that fails any check (bad tag, replay, moved, malformed, oversized) is dropped before
anything is written to the user's memory, counted in ``rejected`` (and logged, and
passed to the optional ``on_reject`` callback), and the call goes on waiting for the
genuine message. In strict mode the call raises the error instead. Nothing is
unpickled or delivered before authentication. Single records are opened into a fresh
plaintext and copied; continuation records: bulk.py.

A forged message longer than any record is dropped whole. MPICH truncates it safely
into the record buffer (ERR_TRUNCATE); Open MPI 5 writes it past the buffer, so there
(:data:`MATCH_FIRST`) blocking receives, probes and continuation records match a message
(Mprobe) before receiving it, and one too long is received without truncation, into one
reused scratch chunk, and dropped (``transport.mpi.discard``). A user's posted ``Irecv``
is a real MPI receive into a first-record buffer still: under Open MPI a forged message
longer than that, matched by it, is truncated by Open MPI (open).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from ..transport.mpi import discard, probed_size
from ..wire.errors import RemoteProtocolError, ReplayError
from ..wire.record import (
    FLAG_ABORT,
    FLAG_CONTINUATION,
    FLAG_MORE,
    FLAG_SYNC,
    HEADER_SIZE,
    SMALL_RECORD,
)
from ..wire.shared import SharedOpener, SharedSealer
from .buffers import matches, mpi_error, mpi_truncate
from .bulk import LongMessages, WholeMessage
from .limits import (
    ABORT_TAG,
    FIRST_MAX,
    MATCH_FIRST,
    RECORD_ERRORS,
    RECORD_MAX,
    SINGLE_MAX,
    Deferring,
    Early,
    Envelope,
    Result,
    Stats,
    deliver_early,
)
from .peers import as_int, valid_tag
from .posted import _ACTIVE, PerPeer, PostedReceives, PostedRecv, detach, progress, wait_all
from .secret import CommSecret
from .synchronous import Acks, acknowledge, owed

__all__ = [
    "FIRST_MAX",
    "RECORD_MAX",
    "SINGLE_MAX",
    "_ACTIVE",
    "Deferring",
    "Early",
    "Lane",
    "PostedRecv",
    "Stats",
    "deliver_early",
    "progress",
    "wait_all",
]

_CHANNEL = struct.Struct(">I")  # the channel field of a record header (record.py's layout):
_CHANNEL_OFFSET = HEADER_SIZE - 16  # channel (4 bytes), counter (8) and length (4) end the header
_FLAGS_OFFSET = 2  # version, type, then the flags byte
_PROC_NULL = MPI.PROC_NULL
_FORGET_AT = 1024  # Lane._last's size at which it first drops what it no longer needs
_BODIES = 256  # views of the record buffer's body kept per lane, one per record size


class _Bodies(dict[int, memoryview]):
    """``rx[HEADER_SIZE:count]`` as a view, per count: made once (a slice per record costs
    about as much as a quarter of a 1 KiB record's decryption)."""

    def __init__(self, rx: bytearray) -> None:
        super().__init__()
        self._view = memoryview(rx)

    def __missing__(self, count: int) -> memoryview:
        body = self._view[HEADER_SIZE:count]
        if len(self) < _BODIES:
            self[count] = body
        return body


class Lane(PostedReceives, LongMessages):
    """Records over one pair of internal communicators (main + bulk), one Sealer/Opener per peer."""

    held = 0  # started collectives with steps left on this lane (nonblocking.py): Free waits for them

    def __init__(
        self, comm: Any, bulk: Any, keys: CommSecret, label: bytes, stats: Stats | Deferring
    ) -> None:
        self.comm = comm
        self.bulk = bulk
        self.rank = comm.Get_rank()
        self.size: int = comm.Get_remote_size() if comm.Is_inter() else comm.Get_size()  # the peers
        # Per peer, made on first use (secret.py): setup costs nothing per peer.
        self.sealers: PerPeer[SharedSealer] = PerPeer(lambda peer: keys.sealer(label, peer))
        self.openers: PerPeer[SharedOpener] = PerPeer(lambda peer: keys.opener(label, peer))
        self.stats = stats
        # Buffers: only the first-record one now; the others on first use (setup stays cheap).
        self._tx: bytearray | None = None  # one-record messages of SMALL_RECORD..SINGLE_MAX bytes
        self._pool: list[bytearray] = []  # RECORD_MAX buffers of blocking long sends
        self._rx = bytearray(FIRST_MAX)  # first records (a longer message is forged: truncated, dropped)
        self._bulk_rx: list[bytearray] | None = None  # continuation records (bulk.py)
        self._scratch = bytearray(0)  # their plaintext before it is copied to the user (bulk.py)
        self._status = MPI.Status()
        self._last: dict[Envelope, int] = {}  # (source, tag) -> last counter processed
        self._forget_at = _FORGET_AT  # its size at which the counters no longer needed go
        # Prebound methods for the small-message hot path (one lookup per peer, not per call).
        self.seal_small: PerPeer[Callable[..., bytes | bytearray]] = PerPeer(
            lambda p: self.sealers[p].seal_data
        )
        self._open_small: PerPeer[Callable[..., tuple[int, int, int, int, bytes]]] = PerPeer(
            lambda p: self.openers[p].open_fields
        )
        self._open_next: PerPeer[Callable[..., tuple[int, bytes] | None]] = PerPeer(
            lambda p: self.openers[p].open_next
        )
        self._bodies = _Bodies(self._rx)
        self.mpi_send = comm.Send
        self._mpi_recv = comm.Recv
        self._count = self._status.Get_count
        self._source = self._status.Get_source
        self._tag = self._status.Get_tag
        self.posted: list[PostedRecv] = []
        self.early: list[Early] = []
        self.acks: Acks | None = None  # the point-to-point lane's synchronous sends (synchronous.py)
        self.long_to: set[int] = set()  # peers sent a message of several records (ending.py)
        self.long_from: set[int] = set()  # peers that sent us one: they may wait on our MPI

    def free(self) -> None:
        """MPI's Comm_free: operations under way still complete. A posted receive takes its
        records from these communicators, so they are freed once none is left (posted.py)."""
        self.freeing = True
        if self.acks is not None:
            self.acks.free()
        if self.posted or self.held:
            return
        _ACTIVE.discard(self)
        for comm in (self.comm, self.bulk):
            if comm != MPI.COMM_NULL:
                comm.Free()

    def hold(self, more: int) -> None:
        """A started collective takes this lane (+1) or is done with it (-1): as MPI's, an
        operation under way completes after Comm.Free, which then frees the lane."""
        self.held += more
        if self.freeing and not self.held:
            self.free()

    # -- sending

    def sealer_for(self, dest: int, tag: int) -> SharedSealer | None:
        """The sealer of ``dest``; None for MPI.PROC_NULL (nothing is sent).

        Checked explicitly: a negative rank must never select another peer's key through
        Python's negative indexing, and a bad tag is MPI's ERR_TAG, not a sealing error.
        """
        if tag < 0:
            raise mpi_error(MPI.ERR_TAG, f"tag {tag} (MPI's are 0 to MPI.TAG_UB)")
        if 0 <= dest < self.size:
            return self.sealers[dest]
        if dest == MPI.PROC_NULL:
            valid_tag(tag, receive=False)
            return None
        raise mpi_error(MPI.ERR_RANK, f"rank {dest}, in a communicator of {self.size}")

    def send(self, data: memoryview, dest: int, tag: int) -> None:
        """Blocking send of one message (one or more records)."""
        dest, tag = as_int(dest), as_int(tag)  # np.int64 tags, float ranks: as mpi4py reads them
        sealer = self.sealer_for(dest, tag)
        if sealer is None:
            return
        size = len(data)
        if size <= SINGLE_MAX and _ACTIVE:
            # Polled, never blocked in MPI (posted.py); in its own buffer: the poll may let
            # another thread's send run meanwhile (handles.py: threads).
            wait_all([self.comm.Isend([sealer.seal(data, channel=tag), MPI.BYTE], dest, tag)])
            return
        if size < SMALL_RECORD:  # one C call to seal, no copy into a buffer
            self.mpi_send(sealer.seal(data, channel=tag), dest, tag)
            return
        if size <= SINGLE_MAX:
            if self._tx is None:
                self._tx = bytearray(FIRST_MAX)
            n = sealer.seal_into(self._tx, data, channel=tag)
            self.comm.Send([self._tx, n, MPI.BYTE], dest, tag)
            return
        self.send_long(sealer, data, dest, tag)

    def isend(
        self, data: memoryview, dest: int, tag: int, *, synchronous: bool = False, abort: bool = False
    ) -> tuple[list[Any], list[Any]]:
        """Nonblocking send: every record sealed now into its own buffer, all posted.

        ``synchronous``: the first record is flagged SYNC (its receive acknowledges it: synchronous.py).
        ``abort``: an empty record flagged ABORT, a collective's abort notice (:meth:`process`)."""
        dest, tag = as_int(dest), as_int(tag)
        sealer = self.sealer_for(dest, tag)
        if sealer is None:
            return [], []
        if len(data) <= SINGLE_MAX:
            flags = (FLAG_SYNC if synchronous else 0) | (FLAG_ABORT if abort else 0)
            record = sealer.seal(data, channel=tag, flags=flags)
            return [self.comm.Isend([record, MPI.BYTE], dest, tag)], [record]
        return self.post_long(sealer, data, dest, tag, pooled=False, synchronous=synchronous)

    def exchange(self, data: memoryview, dest: int, tag: int, receive: Callable[[], None]) -> None:
        """Sendrecv: ``data`` sealed and posted to ``dest`` as plain MPI sends, ``receive()`` run,
        then the sends waited for. A secure Isend (a request of ours pending) made the receive
        poll: a Sendrecv of 1 KiB took 3x a whole ping-pong (helper-118: 29x raw)."""
        requests, records = self.isend(data, dest, tag)  # (isend reads dest and tag as mpi4py does)
        try:
            receive()
        except BaseException:
            detach(requests, records)  # the records live on until MPI is done with them
            raise
        wait_all(requests)

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

        The hot path (no posted receive, no probed message, MPICH): straight into the
        record buffer, opened there if it is the next small record in order
        (Opener.open_next), else processed as the general loop does.
        """
        if source.__class__ is not int or tag.__class__ is not int:  # np.int64, a float: as mpi4py
            source, tag = as_int(source), as_int(tag)
        if self.early or _ACTIVE or MATCH_FIRST or source == _PROC_NULL:
            return self._recv_loop(source, tag, sink)
        rx, mpi_recv, count_of = self._rx, self._mpi_recv, self._count  # (shared.py's _pack_head)
        try:
            mpi_recv(rx, source, tag, self._status)
        except MPI.Exception as exc:
            self._oversized(exc)
            return self._recv_loop(source, tag, sink)
        count = count_of()
        s = source if source >= 0 else self._source()  # MPI matched the source and tag asked for
        t = tag if tag >= 0 else self._tag()
        try:
            opened = self._open_next[s](rx, count, t, self._bodies[count])
            if opened is None:
                return self.process(
                    rx[:count] if count < SMALL_RECORD else memoryview(rx)[:count], s, t, sink
                )
        except RECORD_ERRORS as exc:
            self.stats.reject(exc)
            return self._recv_loop(source, tag, sink)
        # No order check against _last: open_next took only the counter after the highest
        # accepted, and _last holds only counters the opener accepted (wire/shared.py).
        n, plain = opened
        last = self._last
        last[(s, t)] = n
        if len(last) > self._forget_at:
            self._forget_old()
        if sink is None:
            return s, t, len(plain), plain
        size = len(plain)
        try:
            sink[:size] = plain  # a shorter sink: its slice is shorter, refused before any copy
        except ValueError:
            if size <= len(sink):
                raise
            message = f"message of {size} bytes from rank {s}, receive buffer of {len(sink)}"
            raise mpi_truncate(message) from None
        return s, t, size, None

    def _recv_loop(self, source: int, tag: int, sink: memoryview | None) -> Result:
        """:meth:`recv`'s general path: until a message authenticated (or PROC_NULL)."""
        if source == MPI.PROC_NULL:
            valid_tag(tag, receive=True)
            return MPI.PROC_NULL, MPI.ANY_TAG, 0, None
        while True:
            if self.early:
                early = self.take_early(source, tag)
                if early is not None:
                    return deliver_early(early, sink)
            record: memoryview | bytearray
            if _ACTIVE:
                got = self._poll_first(source, tag, sink)
                if got is not None:
                    return got
                continue
            if MATCH_FIRST:
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
        count = probed_size(status)
        if 0 <= count <= limit:
            return message
        discard(message, count)
        error = RemoteProtocolError(f"a message of {count} bytes, larger than any record, was dropped")
        self.stats.reject(error)
        return None

    def process(
        self,
        record: memoryview | bytearray,
        source: int,
        tag: int,
        sink: memoryview | None,
        probing: bool = False,
    ) -> Result:
        """Authenticate a first record from (source, tag), then its continuation records.

        A synchronous message is acknowledged here, unless a probe (``probing``) took it.

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
        # Likewise a continuation record (bulk.py) moved here from the bulk communicator is
        # refused unopened: its flag is authenticated, and opening it would burn the counter
        # of its message's genuine records.
        if len(record) > _FLAGS_OFFSET and record[_FLAGS_OFFSET] & FLAG_CONTINUATION:
            raise RemoteProtocolError(
                f"continuation record from rank {source} tag {tag} where a first record is due (moved record)"
            )
        # (open_fields authenticates the whole header, so the channel is now tag's.)
        _, flags, _, counter, plain = self._open_small[source](record)
        if counter <= last.get(key, -1):
            raise ReplayError(f"record {counter} from rank {source} on tag {tag} is a replay or out of order")
        last[key] = counter
        if len(last) > self._forget_at:
            self._forget_old()
        if flags:  # synchronous, an abort notice, or the first record of a message of several records
            if flags & FLAG_ABORT:  # a collective's abort notice: ABORT_TAG, its body never in the sink
                return source, ABORT_TAG, len(plain), plain
            if flags & FLAG_SYNC and not probing:
                acknowledge(self, source, tag, counter)
            if flags & FLAG_MORE:
                try:
                    return self._long(plain, source, tag, sink)
                except WholeMessage as whole:  # the receive raises, the next one gets the message
                    self.early.append(Early(source, tag, whole.data, owed(self, record, source, tag)
                                            if probing else None))  # (after any taken out of MPI before it)
                    raise whole.error from None
        return _deliver(source, tag, plain, sink)

    def _forget_old(self) -> None:
        """Drop the last counters of tags that no genuine record can overtake any more: below
        their peer's floor (wire/shared.py), less one (a long message's next record may be
        due at the floor). So ``_last`` holds only tags with records in flight, not a tag per
        step of a program whose tags count its steps."""
        last, openers = self._last, self.openers
        for key in [key for key, n in last.items() if n + 1 < openers[key[0]].floor()]:
            del last[key]
        self._forget_at = max(_FORGET_AT, 2 * len(last))

    def probe(self, source: int, tag: int, *, block: bool) -> Early | None:
        """The next matching authenticated message, taken out of MPI and kept for the receive.

        Probing authenticates (so a forged message is never reported, whatever size it
        claims): the message is received and kept in ``early``, where receives look first.
        """
        source, tag = as_int(source), as_int(tag)
        for early in self.early:
            if matches(source, tag, early.source, early.tag):
                return early
        status = MPI.Status()
        if _ACTIVE:  # starts MPI made of persistent receives noticed (posted) before this looks
            progress()
        taken: tuple[bytearray, int, int, int] | None = None  # a message a spare slot had taken (posted.py)
        while True:
            fresh = taken is None
            if taken is not None:
                (buf, s, t, order), taken = taken, None
                self.flush_posted(s, t, order)  # the slots before the spare's matched messages before its
            else:
                if block and not _ACTIVE:
                    message = self.comm.Mprobe(source, tag, status)
                else:
                    while (message := self.comm.Improbe(source, tag, status)) is None:
                        progress()  # an Iprobe too, as MPI's: a sender may wait on a posted receive
                        if not block:
                            return None
                s, t = status.Get_source(), status.Get_tag()
                if self._within(message, status, FIRST_MAX) is None:
                    continue
                buf = bytearray(status.Get_count(MPI.BYTE))
                message.Recv([buf, MPI.BYTE])
                self.flush_posted(s, t, None)  # (not for a spare's: receives posted after it may wait)
            robbed = self.owed_probed(s, t)
            if robbed:  # a posted receive robbed by a forged record is owed it (posted.py)
                try:
                    taken = self.give_probed(robbed, memoryview(buf), s, t)
                except RECORD_ERRORS as exc:
                    self.stats.reject(exc)
                continue
            kept = self.keep(buf, s, t)
            if kept is not None and (fresh or matches(source, tag, s, t)):
                return kept
            # (a spare's message of another envelope: kept for the receive that takes it)

    def keep(self, record: memoryview | bytearray, source: int, tag: int) -> Early | None:
        """A first record taken out of MPI: its message authenticated, received and kept in
        ``early``; None if it was forged (dropped and counted; strict mode raises)."""
        try:
            _, reported, _, data = self.process(record, source, tag, None, probing=True)
        except RECORD_ERRORS as exc:
            self.stats.reject(exc)
            return None
        assert data is not None
        # (owed: the receive of a synchronous one acknowledges it)
        early = Early(source, tag, data, owed(self, record, source, tag), reported == ABORT_TAG)
        self.early.append(early)
        return early


def _deliver(source: int, tag: int, plain: Any, sink: memoryview | None) -> Result:
    """An authenticated one-record message: into ``sink`` (MPI's truncation error if it does
    not fit), or returned as the object when there is no sink."""
    n = len(plain)
    if sink is None:
        return source, tag, n, plain
    if n > len(sink):
        raise mpi_truncate(f"message of {n} bytes from rank {source}, receive buffer of {len(sink)}")
    sink[:n] = plain
    return source, tag, n, None
