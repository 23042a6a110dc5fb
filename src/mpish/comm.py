"""``mpish.secure(comm)``: an authenticated, encrypted, replay-proof mpi4py communicator.

Theory of operation
-------------------
Setup (collective, :func:`secure`):

1. The user's communicator is duplicated four times: ``p2p`` (point-to-point records;
   exposed as :attr:`SecureComm.raw` for attack tests), ``p2p_bulk`` (the continuation
   records of messages larger than one record), ``coll`` and ``coll_bulk`` (the same
   for collectives). Secure traffic never mixes with the user's own raw traffic, and
   collectives never match user point-to-point messages.
2. One ``Allgather`` (buffer API) carries, per rank, whether it loaded its key, 16
   random bytes (rank 0's are the job id) and its 32-byte X25519 public key; a rank
   that could not load its key makes every rank raise. Every rank checks every key against
   its trusted set (own key + ``authorized_keys``) BEFORE any handshake. The verdicts
   are summed with one ``Allreduce``, so a rank with an untrusted key makes every rank
   raise :class:`AuthenticationError` naming its fingerprint, instead of hanging.
3. Every pair runs a Noise KK handshake, eagerly, in two ``Alltoall`` rounds of fixed
   128-byte slots (message 1 from the initiator, message 2 back). Each rank initiates
   with the half of its peers that follow it round the ring (:func:`_initiates`), so
   every round costs every rank the same CPU.
   The prologue binds protocol name and version, the job id, the ordered pair and the
   communicator (service ``"mpish.comm:<size>"``). A failed handshake anywhere is
   agreed on with one more ``Allreduce`` and raised on every rank.
4. Each pair's two transport keys are expanded per lane (``p2p``, ``coll``) with the
   suite's HKDF, and each lane has its own session id, so a record moved between the
   point-to-point and collective lanes fails both the session check and the tag.

Records (record.py): one MPI message carries exactly one record (44-byte header +
ciphertext + 16-byte tag), sent with the buffer API; the lowercase pickle-based mpi4py
calls are never used on the internal communicators. The record channel is the MPI
tag. On receipt the authenticated header must name the MPI status source as sender
and the MPI status tag as channel, so a record moved to another rank or tag is
rejected. A message of at most :data:`SINGLE_MAX` (64 KiB) bytes is one record. A
longer one is an empty first record flagged MORE (on the lane's main communicator, so
MPI matching applies to it exactly as to a raw message) followed by continuation
records of 256 KiB to 1 MiB (:func:`_chunk`) on the lane's bulk communicator, all
flagged MORE except the last. Because every first record is at most 64 KiB of payload,
an ``Irecv`` buffer always holds it: a long message into a too-small buffer is drained
(its continuation records received and authenticated, never left queued to be taken
for a later message) and then raises MPI's own ``ERR_TRUNCATE``, as raw MPI does.
First and continuation records share the (direction, tag) counter,
so the continuation of a message is the records with the next counters: a receiver
accepts on each (source, tag) only strictly increasing counters, and a continuation
record only with exactly the next one. (MPI keeps order per (source, tag,
communicator), so an honest stream is always in order; the replay window of the
Opener is a second line.) Senders pipeline large messages: ``Isend`` of record k
while record k+1 is sealed into a second preallocated buffer; receivers post the
receive of record k+1 before decrypting record k with ``open_into`` straight into the
user's buffer. No thread pool: cryptography's AEAD calls release the GIL, but with two
ranks on two cores both cores are already busy (one sealing, one opening) and MPICH
busy-polls, so sealing/opening 1 MiB records on two threads per rank made a 16 MiB
one-way transfer slower on the reference machine (8.8 -> 13.9 ms).

Small messages take a hot path: ``Send`` seals with one C call and sends the record;
``Recv`` receives into the lane's preallocated record buffer (no per-call Status,
list or buffer spec) and opens it with :meth:`Opener.open_fields`.

Irecv posts a real MPI ``Irecv`` for the first record, so MPI's matching order holds.
Before a first record from (s, t) is processed, every earlier-posted, still pending
receive whose envelope matches (s, t) is completed and processed first (MPI
guarantees it is already matched), so (s, t) counters are processed in send order.

Errors (drop-and-continue): a record that fails any check (bad tag, replay, moved,
malformed) raises :class:`AuthenticationError`, :class:`ReplayError` or
:class:`RemoteProtocolError` from the receiving call (``Recv``, ``recv``, ``Wait``,
a collective...), is counted in :attr:`SecureComm.rejected`, and is never delivered:
nothing is unpickled or written to the user's buffer before authentication. The
communicator stays usable: the genuine message, still queued in MPI, is delivered by
the next receive. A forged record met in the middle of a large message is dropped and
the rest of the message is drained to keep the stream in step; the call then raises
and the message is not delivered.

Requests: ``Isend``/``Irecv``/``isend``/``irecv`` return :class:`SecureRequest`.
mpi4py's ``MPI.Request.Waitall`` & co. accept only real MPI requests; use the module
functions :func:`Waitall`, :func:`waitall`, :func:`Testall` and :func:`Waitany` (also
as ``SecureRequest.Waitall`` ...), which take secure and raw requests alike.

Setup cost: the handshakes are eager, one KK handshake per pair. ``bench/comm.py``
prints the CPU time of one (both sides): 0.62 ms on the idle 2-core reference machine,
up to 1.3 ms when loaded. So ``secure()`` costs every rank ~0.31 ms x (size - 1) of
CPU, O(size^2) in total: ~10 ms per rank at 32 ranks, ~3 s per rank at 10,000 ranks,
plus two Alltoalls of 128-byte slots (1.3 MB sent per rank per round at 10,000). The
measured 32-rank setup (~400-460 ms on 2 cores) is mostly 32 processes sharing 2 cores:
528 handshakes x 0.62 ms = 330 ms of CPU, and MPICH ranks busy-poll in the collectives
while they wait. Lazy per-pair handshakes are not implemented on purpose: KK needs a
round trip before the first record (THREAT-MODEL: no application data in the first
handshake message), so a lazy first ``Send`` would wait for the receiver to enter a
receive call, and the legal MPI pattern "both ranks Send (eager), then both Recv" would deadlock.

Not thread-safe: like ``MPI_THREAD_SERIALIZED``, one thread at a time per
communicator. Everything of the mpi4py API that is not implemented here raises
:class:`NotImplementedError` (never silent plaintext).
"""

from __future__ import annotations

import hashlib
import pickle
import secrets
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

from .keys import Identity, fingerprint, load_identity, trusted_keys
from .wire.channel import Binding
from .wire.errors import (
    AuthenticationError,
    LocalProtocolError,
    MpishError,
    RemoteProtocolError,
    ReplayError,
)
from .wire.noise import TAGLEN, HandshakeState, HashFunctions, ProtocolName
from .wire.record import (
    FLAG_MORE,
    HEADER_SIZE,
    MAX_RECORD_PAYLOAD,
    SMALL_RECORD,
    Header,
    Opener,
    RecordType,
    Sealer,
    parse_header,
)

__all__ = ["SecureComm", "SecureRequest", "Testall", "Waitall", "Waitany", "secure", "waitall"]

PROTOCOL = "Noise_KK_25519_AESGCM_SHA256"
SERVICE = "mpish.comm"
RECORD_MAX = HEADER_SIZE + MAX_RECORD_PAYLOAD + TAGLEN
SINGLE_MAX = 64 * 1024  # a message of at most this many bytes is one record
# Larger messages: an empty first record flagged MORE, then records of _chunk(size) bytes
# (a quarter MiB up to 2 MiB, then growing to the 1 MiB cap), so that sealing, the MPI
# transfer and opening overlap while per-record costs stay small.
BULK_CHUNK = 256 * 1024


def _chunk(size: int) -> int:
    return min(MAX_RECORD_PAYLOAD, max(BULK_CHUNK, size // 8))


_CHANNEL = struct.Struct(">I")  # the channel field of a record header (record.py's layout):
_CHANNEL_OFFSET = HEADER_SIZE - 16  # channel (4 bytes), counter (8) and length (4) end the header
_SETUP_SLOT = 1 + 16 + 32  # per rank in the first Allgather: loaded flag, random bytes, public key
HANDSHAKE_SLOT = 128  # bytes per pair in the handshake Alltoall (a KK message record is 92)
COLL_TAG = 1  # the one tag of collective traffic (collectives are called in the same order)
_RECORD_ERRORS = (AuthenticationError, ReplayError, RemoteProtocolError)
_FORMAT_PREFIX = "@=<>!"
_LANE_LABELS = (b"p2p", b"coll")

Envelope = tuple[int, int]  # (source, tag) of a received message


def _plain_buffer_types() -> frozenset[type]:
    """Types whose objects are always a whole buffer (never a list spec, IN_PLACE or BOTTOM)."""
    types: set[type] = {bytes, bytearray, memoryview}
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is optional
        pass
    else:
        types.add(numpy.ndarray)
    return frozenset(types)


_PLAIN_BUFFERS = _plain_buffer_types()


def _mpi_truncate(message: str) -> Exception:
    """MPI's own truncation error, as mpi4py raises it for a too-small receive buffer."""
    exc: Exception = MPI.Exception(MPI.ERR_TRUNCATE)
    exc.args = (*exc.args, message)
    return exc


def _byte_view(buf: Any, *, writable: bool) -> memoryview:
    """A flat byte view of an mpi4py buffer argument: ``buf``, ``[buf, dt]`` or ``[buf, n, dt]``."""
    kind: type = buf.__class__
    if kind in _PLAIN_BUFFERS:  # the hot path: bytes, bytearray, memoryview, numpy array
        view = memoryview(buf)
        if view.c_contiguous and not (writable and view.readonly):
            return view if view.ndim == 1 and view.format == "B" else view.cast("B")
    count: int | None = None
    datatype: Any = None
    if isinstance(buf, (list, tuple)):
        if len(buf) == 2:
            buf, datatype = buf
        elif len(buf) == 3:
            buf, count, datatype = buf
        else:
            raise NotImplementedError(
                "mpish.secure supports buffers as buf, [buf, dtype] or [buf, count, dtype]"
            )
    if buf is None or buf is MPI.IN_PLACE or buf is MPI.BOTTOM:
        raise NotImplementedError("mpish.secure does not support MPI.IN_PLACE / MPI.BOTTOM / None buffers")
    view = memoryview(buf)
    if not view.c_contiguous:
        raise NotImplementedError("mpish.secure needs C-contiguous buffers")
    if writable and view.readonly:
        raise ValueError("the receive buffer is read-only")
    flat = view.cast("B") if (view.format != "B" or view.ndim != 1) else view
    if datatype is not None and count is not None:
        if isinstance(datatype, str):
            datatype = MPI._typedict[datatype.lstrip(_FORMAT_PREFIX)]
        size = datatype.Get_size()
        _, extent = datatype.Get_extent()
        if extent != size:
            raise NotImplementedError("mpish.secure supports contiguous basic datatypes only")
        if count * size > len(flat):
            raise ValueError("buffer count exceeds the buffer size")
        flat = flat[: count * size]
    return flat


def _typed_spec(buf: Any, storage: Any, nbytes: int) -> list[Any]:
    """``[storage, count, datatype]`` with the datatype of buffer argument ``buf`` (for Reduce_local)."""
    datatype: Any
    if isinstance(buf, (list, tuple)):
        datatype = buf[-1]
        if isinstance(datatype, str):
            datatype = MPI._typedict[datatype.lstrip(_FORMAT_PREFIX)]
    else:
        fmt = memoryview(buf).format.lstrip(_FORMAT_PREFIX)
        datatype = MPI._typedict.get(fmt)
        if datatype is None:
            raise NotImplementedError(f"mpish.secure cannot reduce buffers of format {fmt!r}")
    size = datatype.Get_size()
    return [storage, nbytes // size, datatype]


def _set_status(status: Any, source: int, tag: int, nbytes: int) -> None:
    if status is not None:
        status.Set_source(source)
        status.Set_tag(tag)
        status.Set_error(MPI.SUCCESS)
        status.Set_elements(MPI.BYTE, nbytes)


def _matches(want_source: int, want_tag: int, source: int, tag: int) -> bool:
    return (want_source == MPI.ANY_SOURCE or want_source == source) and (
        want_tag == MPI.ANY_TAG or want_tag == tag
    )


@dataclass
class _Stats:
    rejected: int = 0  # records that failed a check and were dropped


class _PostedRecv:
    """An Irecv posted on a lane: the MPI request of its first record and what became of it."""

    __slots__ = ("buf", "done", "error", "obj", "request", "result", "sink", "source", "tag")

    def __init__(self, source: int, tag: int, sink: memoryview | None, size: int) -> None:
        self.source = source
        self.tag = tag
        self.sink = sink  # user buffer, or None for a pickled object
        self.buf = bytearray(size)
        self.request: Any = None
        self.done = False
        self.result: tuple[int, int, int] | None = None  # (source, tag, nbytes)
        self.obj: bytes | bytearray | None = None
        self.error: BaseException | None = None


@dataclass
class _Early:
    """A message already taken out of MPI (by a probe of a multi-record message)."""

    source: int
    tag: int
    data: bytes | bytearray


class _Lane:
    """Records over one pair of internal communicators (main + bulk), one Sealer/Opener per peer."""

    def __init__(
        self, comm: Any, bulk: Any, sealers: list[Sealer], openers: list[Opener], stats: _Stats
    ) -> None:
        self.comm = comm
        self.bulk = bulk
        self.rank = comm.Get_rank()
        self.sealers = sealers
        self.openers = openers
        self.stats = stats
        self._tx = bytearray(HEADER_SIZE + SINGLE_MAX + TAGLEN)  # one-record messages
        self._pipe: list[bytearray] | None = None  # two RECORD_MAX buffers, allocated on first use
        self._rx = bytearray(RECORD_MAX)
        self._rxv = memoryview(self._rx)
        self._rx2: bytearray | None = None  # second buffer for continuation records
        self._status = MPI.Status()
        self._last: dict[Envelope, int] = {}  # (source, tag) -> last counter processed
        # Prebound methods for the small-message hot path (one lookup at setup, not per call).
        self.seal_small = [sealer.seal for sealer in sealers]
        self._open_small = [opener.open_fields for opener in openers]
        self.mpi_send = comm.Send
        self._mpi_recv = comm.Recv
        self._count = self._status.Get_count
        self._source = self._status.Get_source
        self._tag = self._status.Get_tag
        self.posted: list[_PostedRecv] = []
        self.early: list[_Early] = []

    def free(self) -> None:
        for comm in (self.comm, self.bulk):
            if comm != MPI.COMM_NULL:
                comm.Free()

    # -- sending

    def _sealer_for(self, dest: int) -> Sealer | None:
        """The sealer of ``dest``; None for MPI.PROC_NULL (nothing is sent).

        Checked explicitly: a negative rank must never select another peer's key through
        Python's negative indexing.
        """
        if 0 <= dest < len(self.sealers):
            return self.sealers[dest]
        if dest == MPI.PROC_NULL:
            return None
        raise MPI.Exception(MPI.ERR_RANK)

    def send(self, data: memoryview, dest: int, tag: int) -> None:
        """Blocking send of one message (one or more records)."""
        sealer = self._sealer_for(dest)
        if sealer is None:
            return
        size = len(data)
        if size < SMALL_RECORD:  # one C call to seal, no copy into a buffer
            self.mpi_send(sealer.seal(data, channel=tag), dest, tag)
            return
        if size <= SINGLE_MAX:
            n = sealer.seal_into(self._tx, data, channel=tag)
            self.comm.Send([self._tx, n, MPI.BYTE], dest, tag)
            return
        # The empty first record goes through MPI matching like a raw message; the
        # continuation records follow on the bulk communicator, record k on the wire
        # while record k+1 is sealed into the other buffer.
        self.comm.Send(sealer.seal(b"", channel=tag, flags=FLAG_MORE), dest, tag)
        if self._pipe is None:
            self._pipe = [bytearray(RECORD_MAX) for _ in range(2)]
        pipe = self._pipe
        requests: list[Any] = [None, None]
        bulk_isend = self.bulk.Isend
        chunk = _chunk(size)
        for index, start in enumerate(range(0, size, chunk)):
            end = min(start + chunk, size)
            slot = index & 1
            if requests[slot] is not None:
                requests[slot].Wait()
            n = sealer.seal_into(
                pipe[slot], data[start:end], channel=tag, flags=FLAG_MORE if end < size else 0
            )
            requests[slot] = bulk_isend([pipe[slot], n, MPI.BYTE], dest, tag)
        MPI.Request.Waitall([r for r in requests if r is not None])

    def isend(self, data: memoryview, dest: int, tag: int) -> tuple[list[Any], list[bytes | bytearray]]:
        """Nonblocking send: every record sealed now into its own buffer, all posted."""
        sealer = self._sealer_for(dest)
        if sealer is None:
            return [], []
        size = len(data)
        if size <= SINGLE_MAX:
            record = sealer.seal(data, channel=tag)
            return [self.comm.Isend([record, MPI.BYTE], dest, tag)], [record]
        first = sealer.seal(b"", channel=tag, flags=FLAG_MORE)  # same layout as send()
        requests: list[Any] = [self.comm.Isend([first, MPI.BYTE], dest, tag)]
        buffers: list[bytes | bytearray] = [first]
        chunk = _chunk(size)
        for start in range(0, size, chunk):
            end = min(start + chunk, size)
            record = sealer.seal(data[start:end], channel=tag, flags=FLAG_MORE if end < size else 0)
            requests.append(self.bulk.Isend([record, MPI.BYTE], dest, tag))
            buffers.append(record)
        return requests, buffers

    # -- receiving

    def take_early(self, source: int, tag: int) -> _Early | None:
        for index, early in enumerate(self.early):
            if _matches(source, tag, early.source, early.tag):
                return self.early.pop(index)
        return None

    def recv(
        self, source: int, tag: int, sink: memoryview | None
    ) -> tuple[int, int, int, bytes | bytearray | None]:
        """Blocking receive of one message into ``sink`` (or as bytes when None).

        Returns (source, tag, nbytes, data-if-sink-is-None); from MPI.PROC_NULL at once
        (PROC_NULL, ANY_TAG, 0, None), as MPI does.
        """
        if source == MPI.PROC_NULL:
            return MPI.PROC_NULL, MPI.ANY_TAG, 0, None
        if self.early:
            early = self.take_early(source, tag)
            if early is not None:
                return self._deliver_early(early, sink)
        # Straight into the preallocated record buffer: no Status, list or buffer spec per call.
        self._mpi_recv(self._rx, source, tag, self._status)
        s, t, count = self._source(), self._tag(), self._count()
        if count < SMALL_RECORD:
            # A copy of a small record costs less than a memoryview slice (whose header
            # comparisons in open_fields are slow), and it survives flush_posted below.
            small = self._rx[:count]
            if self.posted:
                self.flush_posted(s, t, len(self.posted))
            return self._process_small(small, s, t, sink)
        record = self._rxv[:count]
        if self.posted:  # completing earlier receives may reuse the lane's buffers: keep a copy
            record = memoryview(bytes(record))
            self.flush_posted(s, t, len(self.posted))
        return self.process(record, s, t, sink)

    def _deliver_early(
        self, early: _Early, sink: memoryview | None
    ) -> tuple[int, int, int, bytes | bytearray | None]:
        n = len(early.data)
        if sink is None:
            return early.source, early.tag, n, early.data
        if n > len(sink):
            raise _mpi_truncate(f"message of {n} bytes, receive buffer of {len(sink)}")
        sink[:n] = early.data
        return early.source, early.tag, n, None

    def post(self, source: int, tag: int, sink: memoryview | None) -> _PostedRecv:
        """Irecv of a first record (a real MPI Irecv, so MPI's matching order holds)."""
        # Room for the whole first record of any message that fits ``sink``: a one-record
        # message (at most SINGLE_MAX bytes) or the empty first record of a longer one. A
        # longer message into a too-small buffer is then drained before the truncation
        # error, instead of leaving its continuation records queued.
        capacity = SINGLE_MAX if sink is None else min(len(sink), SINGLE_MAX)
        if source == MPI.PROC_NULL:  # completes at once, empty, as in MPI
            posted = _PostedRecv(source, tag, sink, 0)
            posted.result, posted.done = (MPI.PROC_NULL, MPI.ANY_TAG, 0), True
            return posted
        posted = _PostedRecv(source, tag, sink, HEADER_SIZE + capacity + TAGLEN)
        early = self.take_early(source, tag)
        if early is not None:
            self._finish_early(posted, early)
            return posted
        posted.request = self.comm.Irecv([posted.buf, MPI.BYTE], source, tag)
        self.posted.append(posted)
        return posted

    def _finish_early(self, posted: _PostedRecv, early: _Early) -> None:
        try:
            s, t, n, data = self._deliver_early(early, posted.sink)
            posted.result, posted.obj = (s, t, n), data
        except Exception as exc:
            posted.error = exc
        posted.done = True

    def complete(self, posted: _PostedRecv, *, block: bool) -> bool:
        """Complete ``posted`` if its first record arrived (or wait for it when ``block``)."""
        if posted.done:
            return True
        status = self._status  # read at once: flush_posted below reuses it
        try:
            if block:
                posted.request.Wait(status)
            elif not posted.request.Test(status):
                return False
        except MPI.Exception as exc:
            self.posted.remove(posted)
            posted.error, posted.done = exc, True
            return True
        s, t, count = self._source(), self._tag(), self._count()
        self.flush_posted(s, t, self.posted.index(posted))
        self.posted.remove(posted)
        try:
            _, _, n, data = self.process(memoryview(posted.buf)[:count], s, t, posted.sink)
            posted.result, posted.obj = (s, t, n), data
        except Exception as exc:
            posted.error = exc
        posted.buf = bytearray()
        posted.done = True
        return True

    def flush_posted(self, source: int, tag: int, before: int) -> None:
        """Complete earlier-posted receives whose envelope matches (source, tag).

        MPI matched them before the message from (source, tag) just received, so waiting
        on them cannot block, and processing them first keeps counters in send order.
        """
        for posted in list(self.posted[:before]):
            if not posted.done and _matches(posted.source, posted.tag, source, tag):
                self.complete(posted, block=True)

    def process(
        self, record: memoryview, source: int, tag: int, sink: memoryview | None
    ) -> tuple[int, int, int, bytes | bytearray | None]:
        """Authenticate a first record from (source, tag), then its continuation records."""
        key = (source, tag)
        if len(record) < SMALL_RECORD:
            return self._process_small(record, source, tag, sink)
        try:
            header = self._check(record, source, tag)
            if header.counter <= self._last.get(key, -1):
                raise ReplayError(
                    f"record {header.counter} from rank {source} on tag {tag} is a replay or out of order"
                )
            opener = self.openers[source]
            size = header.length - TAGLEN
            data: bytes | bytearray | None = None
            if sink is not None and size <= len(sink):
                header, n = opener.open_into(record, sink)
            else:
                header, plain = opener.open(record)
                n = len(plain)
                data = bytearray(plain) if header.flags & FLAG_MORE else plain
        except _RECORD_ERRORS:
            self.stats.rejected += 1
            raise
        self._last[key] = header.counter
        truncated = sink is not None and data is not None
        if header.flags & FLAG_MORE:
            n, data, truncated = self._continuation(source, tag, sink, n, data, truncated)
        if truncated:
            assert sink is not None
            raise _mpi_truncate(
                f"message from rank {source} tag {tag} exceeds the receive buffer of {len(sink)}"
            )
        return source, tag, n, data

    def _process_small(
        self, record: memoryview | bytearray, source: int, tag: int, sink: memoryview | None
    ) -> tuple[int, int, int, bytes | bytearray | None]:
        """The hot path for a record under SMALL_RECORD bytes: open it whole, then check it.

        ``open_fields`` checks session, sender and receiver (the Opener is chosen by the MPI
        source) and the tag before anything is released; the channel is checked here before
        opening (on the header the tag then covers), counter order and flags after.
        """
        key = (source, tag)
        last = self._last
        try:
            # The channel field is compared with the MPI tag BEFORE the record is opened:
            # opening a moved copy would mark its counter as received on its own channel,
            # and the original, arriving there later, would be rejected as a replay.
            if len(record) >= HEADER_SIZE and _CHANNEL.unpack_from(record, _CHANNEL_OFFSET)[0] != tag:
                channel = _CHANNEL.unpack_from(record, _CHANNEL_OFFSET)[0]
                raise RemoteProtocolError(
                    f"record for tag {channel} arrived with MPI tag {tag} (moved record)"
                )
            # (open_fields authenticates the whole header, so the channel is now tag's.)
            _, flags, _, counter, plain = self._open_small[source](record)
            if counter <= last.get(key, -1):
                raise ReplayError(
                    f"record {counter} from rank {source} on tag {tag} is a replay or out of order"
                )
        except _RECORD_ERRORS:
            self.stats.rejected += 1
            raise
        last[key] = counter
        if flags:  # the first record of a message of several records
            return self._long(plain, source, tag, sink)
        n = len(plain)
        if sink is None:
            return source, tag, n, plain
        if n > len(sink):
            raise _mpi_truncate(f"message of {n} bytes from rank {source}, receive buffer of {len(sink)}")
        sink[:n] = plain
        return source, tag, n, None

    def _long(
        self, first: bytes, source: int, tag: int, sink: memoryview | None
    ) -> tuple[int, int, int, bytes | bytearray | None]:
        """The rest of a message whose (authenticated) first record ``first`` was flagged MORE."""
        n = len(first)
        data: bytearray | None = None
        truncated = False
        if sink is None:
            data = bytearray(first)
        elif n <= len(sink):
            sink[:n] = first
        else:
            truncated, data = True, bytearray()
        n, out, truncated = self._continuation(source, tag, sink, n, data, truncated)
        if truncated:
            assert sink is not None
            raise _mpi_truncate(
                f"message of {n} bytes from rank {source} tag {tag} exceeds the receive buffer of {len(sink)}"
            )
        return source, tag, n, out

    def _check(self, record: memoryview, source: int, tag: int) -> Header:
        header = parse_header(record)
        if header.type is not RecordType.DATA:
            raise RemoteProtocolError(f"unexpected {header.type.name} record")
        if header.channel != tag:
            raise RemoteProtocolError(
                f"record for tag {header.channel} arrived with MPI tag {tag} (moved record)"
            )
        if header.sender != source:
            raise RemoteProtocolError(
                f"record from rank {header.sender} arrived from MPI rank {source} (moved record)"
            )
        return header

    def _continuation(
        self,
        source: int,
        tag: int,
        sink: memoryview | None,
        n: int,
        data: bytes | bytearray | None,
        truncated: bool,
    ) -> tuple[int, bytes | bytearray | None, bool]:
        """Receive the continuation records of a message from the bulk communicator."""
        key = (source, tag)
        status = self._status
        error: MpishError | None = None
        more = True
        if self._rx2 is None:
            self._rx2 = bytearray(RECORD_MAX)
        buffers = (self._rx, self._rx2)
        which = 0
        pending = self.bulk.Irecv([buffers[0], MPI.BYTE], source, tag)
        while more:
            if pending is None:
                pending = self.bulk.Irecv([buffers[which], MPI.BYTE], source, tag)
            pending.Wait(status)
            record = memoryview(buffers[which])[: status.Get_count(MPI.BYTE)]
            pending = None
            # Post the receive of the next record before decrypting this one, so the sender's
            # transfer overlaps our decryption. Only when this record (unauthenticated) says
            # MORE: the flag is covered by the tag, so if it lies the record is rejected and
            # we still need a record, which the posted receive then gets.
            if len(record) > 2 and record[2] & FLAG_MORE:
                which ^= 1
                pending = self.bulk.Irecv([buffers[which], MPI.BYTE], source, tag)
            else:
                which ^= 1
            try:
                header = self._check(record, source, tag)
                last = self._last[key]
                if header.counter <= last:
                    raise ReplayError(f"continuation record {header.counter} from rank {source} is a replay")
                opener = self.openers[source]
                size = header.length - TAGLEN
                if header.counter != last + 1:
                    # Authenticate before believing it: a forged one is just dropped.
                    header, _ = opener.open(record)
                    self._last[key] = header.counter
                    more = bool(header.flags & FLAG_MORE)
                    error = RemoteProtocolError(
                        f"a record of a message from rank {source} tag {tag} is missing (moved or dropped)"
                    )
                    continue
                if data is None and sink is not None and n + size <= len(sink):
                    header, got = opener.open_into(record, sink[n:])
                else:
                    header, plain = opener.open(record)
                    got = len(plain)
                    if data is None:
                        truncated = True
                        data = bytearray()
                    elif sink is None:  # (a truncated message is drained, not kept)
                        assert isinstance(data, bytearray)
                        data += plain
            except _RECORD_ERRORS as exc:
                self.stats.rejected += 1
                error = error or exc
                continue
            self._last[key] = header.counter
            n += got
            more = bool(header.flags & FLAG_MORE)
        if error is not None:
            raise error
        if sink is not None:
            data = None
        return n, data, truncated

    def probe(self, source: int, tag: int, *, block: bool) -> tuple[int, int, int] | None:
        """(source, tag, nbytes) of the next matching message without receiving it."""
        for early in self.early:
            if _matches(source, tag, early.source, early.tag):
                return early.source, early.tag, len(early.data)
        status = MPI.Status()
        if block:
            self.comm.Probe(source, tag, status)
        elif not self.comm.Iprobe(source, tag, status):
            return None
        s, t = status.Get_source(), status.Get_tag()
        count = status.Get_count(MPI.BYTE)
        if count != HEADER_SIZE + TAGLEN:  # a one-record message: its size is known unread
            return s, t, max(count - HEADER_SIZE - TAGLEN, 0)
        # An empty record may be the first of several: take the message out of MPI (in
        # order) to learn its size; receives look at these early messages first.
        message = MPI.Status()
        self.comm.Recv([self._rx, MPI.BYTE], s, t, message)
        record = memoryview(bytes(self._rxv[: message.Get_count(MPI.BYTE)]))
        self.flush_posted(s, t, len(self.posted))
        _, _, _, data = self.process(record, s, t, None)
        assert data is not None
        self.early.append(_Early(s, t, data))
        return s, t, len(data)


class SecureRequest:
    """A request of a secure communicator (the subset of ``MPI.Request`` mpish supports)."""

    def __init__(
        self,
        lane: _Lane,
        *,
        sends: list[Any] | None = None,
        buffers: list[bytes | bytearray] | None = None,
        posted: _PostedRecv | None = None,
        is_object: bool = False,
    ) -> None:
        self._lane = lane
        self._sends = sends or []
        self._buffers = buffers  # keep the records alive until the sends complete
        self._posted = posted
        self._is_object = is_object
        self._done = False

    def _finish(self, status: Any) -> None:
        posted = self._posted
        if posted is None:
            _set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            self._buffers = None
            self._done = True
            return
        self._done = True
        if posted.error is not None:
            raise posted.error
        assert posted.result is not None
        _set_status(status, *posted.result)

    def Wait(self, status: Any = None) -> bool:
        if self._posted is not None:
            self._lane.complete(self._posted, block=True)
        elif self._sends:
            MPI.Request.Waitall(self._sends)
        self._finish(status)
        return True

    def Test(self, status: Any = None) -> bool:
        if self._posted is not None:
            if not self._lane.complete(self._posted, block=False):
                return False
        elif self._sends and not MPI.Request.Testall(self._sends):
            return False
        self._finish(status)
        return True

    def wait(self, status: Any = None) -> Any:
        self.Wait(status)
        return self._value()

    def test(self, status: Any = None) -> tuple[bool, Any]:
        if not self.Test(status):
            return False, None
        return True, self._value()

    def _value(self) -> Any:
        if self._posted is None or not self._is_object:
            return None
        obj = self._posted.obj
        if obj is None:  # a receive from MPI.PROC_NULL
            return None
        return pickle.loads(obj)  # noqa: S301 - authenticated bytes from a peer holding an authorized key

    # The class-level forms, as in mpi4py (MPI.Request.Waitall): the module functions below.

    @staticmethod
    def Waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
        return Waitall(requests, statuses)

    @staticmethod
    def waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[Any]:
        return waitall(requests, statuses)

    @staticmethod
    def Testall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
        return Testall(requests, statuses)

    @staticmethod
    def Waitany(requests: Sequence[Any], status: Any = None) -> int:
        return Waitany(requests, status)

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"SecureRequest.{name} is not supported by mpish.secure")


# -- completing lists of requests ---------------------------------------------------
# mpi4py's MPI.Request.Waitall and friends need real MPI requests, so they reject
# SecureRequest objects. These accept SecureRequest and MPI.Request alike (a list may mix
# secure requests with requests of ``comm.raw`` or of other communicators).

AnyRequest = Any  # SecureRequest or MPI.Request


def _status_at(statuses: list[Any] | None, index: int) -> Any:
    return statuses[index] if statuses is not None else None


def Waitall(requests: Sequence[AnyRequest], statuses: list[Any] | None = None) -> bool:
    """Wait for every request (in order; completing them in order cannot deadlock)."""
    for index, request in enumerate(requests):
        request.Wait(_status_at(statuses, index))
    return True


def waitall(requests: Sequence[AnyRequest], statuses: list[Any] | None = None) -> list[Any]:
    """Wait for every request; return the received objects (None for sends)."""
    return [request.wait(_status_at(statuses, index)) for index, request in enumerate(requests)]


def Testall(requests: Sequence[AnyRequest], statuses: list[Any] | None = None) -> bool:
    """Test every request (each one is tested, as MPI progresses all of them); all done?"""
    return all([request.Test(_status_at(statuses, index)) for index, request in enumerate(requests)])


def Waitany(requests: Sequence[AnyRequest], status: Any = None) -> int:
    """Index of a completed request, polling them in turn until one completes."""
    if not requests:
        return MPI.UNDEFINED
    while True:
        for index, request in enumerate(requests):
            if request.Test(status):
                return index


def _derive(hashes: HashFunctions, key: bytes, label: bytes) -> bytes:
    return hashes.hkdf(key, b"mpish.comm key " + label, 1)[0][:32]


def _session(job: bytes, label: bytes) -> bytes:
    return hashlib.sha256(b"mpish.comm session " + job + b"|" + label).digest()[:16]


class SecureComm:
    """An authenticated, encrypted intracommunicator with mpi4py's methods (see module doc).

    Build one with :func:`secure`.
    """

    def __init__(
        self,
        comms: tuple[Any, Any, Any, Any],
        job: bytes,
        pair_keys: list[tuple[bytes, bytes]],
        protocol: ProtocolName,
    ) -> None:
        p2p, p2p_bulk, coll, coll_bulk = comms
        self._comms = comms
        self._job = job
        self._pair_keys = pair_keys  # peer -> (send key, receive key) of this communicator
        self._protocol = protocol
        self._derived = 0  # Dup/Split calls so far (equal on every rank: they are collective)
        self._stats = _Stats()
        self.rank: int = p2p.Get_rank()
        self.size: int = p2p.Get_size()
        lanes = []
        for label, (main, bulk) in zip(_LANE_LABELS, ((p2p, p2p_bulk), (coll, coll_bulk)), strict=True):
            session = _session(job, label)
            sealers, openers = [], []
            for peer, (send_key, receive_key) in enumerate(pair_keys):
                cipher, hashes = protocol.cipher, protocol.hash
                sealers.append(
                    Sealer(cipher, hashes, _derive(hashes, send_key, label), session, self.rank, peer)
                )
                openers.append(
                    Opener(cipher, hashes, _derive(hashes, receive_key, label), session, peer, self.rank)
                )
            lanes.append(_Lane(main, bulk, sealers, openers, self._stats))
        self._p2p, self._coll = lanes

    # -- introspection

    @property
    def raw(self) -> Any:
        """The internal duplicate that carries the point-to-point records (for tests and attacks)."""
        return self._comms[0]

    @property
    def rejected(self) -> int:
        """Records rejected so far (forged, replayed, moved, malformed)."""
        return self._stats.rejected

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def Abort(self, errorcode: int = 0) -> None:
        self._comms[0].Abort(errorcode)

    def Is_inter(self) -> bool:
        return False

    def Is_intra(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(
            f"{name} is not supported by mpish.secure (only authenticated operations are offered; "
            "use comm.raw explicitly for unprotected traffic)"
        )

    # -- point to point: buffers

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        data = _byte_view(buf, writable=False)
        lane = self._p2p
        if len(data) < SMALL_RECORD and 0 <= dest < self.size:  # hot path: one seal, one MPI call
            lane.mpi_send(lane.seal_small[dest](data, channel=tag), dest, tag)
        else:
            lane.send(data, dest, tag)

    def Recv(
        self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> None:
        s, t, n, _ = self._p2p.recv(source, tag, _byte_view(buf, writable=True))
        if status is not None:
            _set_status(status, s, t, n)

    def Isend(self, buf: Any, dest: int, tag: int = 0) -> SecureRequest:
        requests, buffers = self._p2p.isend(_byte_view(buf, writable=False), dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers)

    def Irecv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> SecureRequest:
        return SecureRequest(self._p2p, posted=self._p2p.post(source, tag, _byte_view(buf, writable=True)))

    def Sendrecv(
        self,
        sendbuf: Any,
        dest: int,
        sendtag: int = 0,
        recvbuf: Any = None,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
        status: Any = None,
    ) -> None:
        request = self.Isend(sendbuf, dest, sendtag)
        self.Recv(recvbuf, source, recvtag, status)
        request.Wait()

    def Probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        found = self._p2p.probe(source, tag, block=True)
        assert found is not None
        _set_status(status, *found)
        return True

    def Iprobe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        found = self._p2p.probe(source, tag, block=False)
        if found is None:
            return False
        _set_status(status, *found)
        return True

    # -- point to point: objects (pickled only after the record authenticated)

    def send(self, obj: Any, dest: int, tag: int = 0) -> None:
        self._p2p.send(memoryview(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)), dest, tag)

    def recv(
        self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> Any:
        s, t, n, data = self._p2p.recv(source, tag, None)
        _set_status(status, s, t, n)
        if data is None:  # from MPI.PROC_NULL
            return None
        return pickle.loads(data)  # noqa: S301 - authenticated bytes from a peer holding an authorized key

    def isend(self, obj: Any, dest: int, tag: int = 0) -> SecureRequest:
        data = memoryview(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))
        requests, buffers = self._p2p.isend(data, dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers)

    def irecv(self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> SecureRequest:
        return SecureRequest(self._p2p, posted=self._p2p.post(source, tag, None), is_object=True)

    def sendrecv(
        self,
        sendobj: Any,
        dest: int,
        sendtag: int = 0,
        recvbuf: Any = None,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
        status: Any = None,
    ) -> Any:
        request = self.isend(sendobj, dest, sendtag)
        obj = self.recv(None, source, recvtag, status)
        request.Wait()
        return obj

    def probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        return self.Probe(source, tag, status)

    def iprobe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        return self.Iprobe(source, tag, status)

    # -- collectives: on the coll lane, linear or binomial, always with explicit sources

    def _c_send(self, data: memoryview, dest: int) -> None:
        self._coll.send(data, dest, COLL_TAG)

    def _c_recv_into(self, sink: memoryview, source: int) -> None:
        _, _, n, _ = self._coll.recv(source, COLL_TAG, sink)
        if n != len(sink):
            raise RemoteProtocolError(
                f"collective block of {n} bytes from rank {source}, expected {len(sink)}"
            )

    def _c_recv_bytes(self, source: int) -> bytes | bytearray:
        _, _, _, data = self._coll.recv(source, COLL_TAG, None)
        assert data is not None
        return data

    def _tree(self, root: int) -> tuple[int | None, list[int]]:
        """(parent, children) of this rank in the binomial tree rooted at ``root`` (MPICH's)."""
        size, rel = self.size, (self.rank - root) % self.size
        parent: int | None = None
        mask = 1
        while mask < size:
            if rel & mask:
                parent = (rel - mask + root) % size
                break
            mask <<= 1
        children = []
        mask >>= 1
        while mask > 0:
            if rel + mask < size:
                children.append((rel + mask + root) % size)
            mask >>= 1
        return parent, children

    def _bcast_bytes(self, data: bytes | bytearray | None, root: int) -> bytes | bytearray:
        parent, children = self._tree(root)
        if parent is not None:
            data = self._c_recv_bytes(parent)
        assert data is not None
        view = memoryview(data)
        for child in children:
            self._c_send(view, child)
        return data

    def Barrier(self) -> None:
        empty = memoryview(b"")
        if self.rank == 0:
            for source in range(1, self.size):
                self._c_recv_into(memoryview(bytearray()), source)
        else:
            self._c_send(empty, 0)
        self._bcast_bytes(b"" if self.rank == 0 else None, 0)

    def barrier(self) -> None:
        self.Barrier()

    def Bcast(self, buf: Any, root: int = 0) -> None:
        view = _byte_view(buf, writable=self.rank != root)
        parent, children = self._tree(root)
        if parent is not None:
            self._c_recv_into(view, parent)
        for child in children:
            self._c_send(view, child)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL) if self.rank == root else None
        if self.size == 1:
            return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))  # noqa: S301 - own object
        out = self._bcast_bytes(data, root)
        return pickle.loads(out)  # noqa: S301 - authenticated bytes from a peer holding an authorized key

    def Gather(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> None:
        send = _byte_view(sendbuf, writable=False)
        if self.rank != root:
            self._c_send(send, root)
            return
        recv = _byte_view(recvbuf, writable=True)
        block = len(send)
        if len(recv) < block * self.size:
            raise ValueError("Gather: receive buffer too small")
        for source in range(self.size):
            target = recv[source * block : (source + 1) * block]
            if source == root:
                target[:] = send
            else:
                self._c_recv_into(target, source)

    def gather(self, sendobj: Any, root: int = 0) -> list[Any] | None:
        if self.rank != root:
            self._c_send(memoryview(pickle.dumps(sendobj, pickle.HIGHEST_PROTOCOL)), root)
            return None
        out: list[Any] = []
        for source in range(self.size):
            data = (
                pickle.dumps(sendobj, pickle.HIGHEST_PROTOCOL)
                if source == root
                else self._c_recv_bytes(source)
            )
            out.append(pickle.loads(data))  # noqa: S301 - authenticated bytes from a peer holding an authorized key
        return out

    def Scatter(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> None:
        recv = _byte_view(recvbuf, writable=True)
        if self.rank != root:
            self._c_recv_into(recv, root)
            return
        send = _byte_view(sendbuf, writable=False)
        block = len(recv)
        if len(send) < block * self.size:
            raise ValueError("Scatter: send buffer too small")
        for dest in range(self.size):
            chunk = send[dest * block : (dest + 1) * block]
            if dest == root:
                recv[:] = chunk
            else:
                self._c_send(chunk, dest)

    def scatter(self, sendobj: Any, root: int = 0) -> Any:
        if self.rank != root:
            return pickle.loads(self._c_recv_bytes(root))  # noqa: S301 - authenticated, authorized peer
        items = list(sendobj)
        if len(items) != self.size:
            raise ValueError(f"scatter: expected {self.size} items, got {len(items)}")
        mine: Any = None
        for dest, item in enumerate(items):
            data = pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
            if dest == root:
                mine = pickle.loads(data)  # noqa: S301 - own object
            else:
                self._c_send(memoryview(data), dest)
        return mine

    def Allgather(self, sendbuf: Any, recvbuf: Any) -> None:
        self.Gather(sendbuf, recvbuf, 0)
        self.Bcast(recvbuf, 0)

    def allgather(self, sendobj: Any) -> list[Any]:
        gathered = self.gather(sendobj, 0)
        result: list[Any] = self.bcast(gathered, 0)
        return result

    def Alltoall(self, sendbuf: Any, recvbuf: Any) -> None:
        send = _byte_view(sendbuf, writable=False)
        recv = _byte_view(recvbuf, writable=True)
        size, rank = self.size, self.rank
        block = len(send) // size
        if len(recv) < block * size:
            raise ValueError("Alltoall: receive buffer too small")
        recv[rank * block : (rank + 1) * block] = send[rank * block : (rank + 1) * block]
        for step in range(1, size):
            dest, source = (rank + step) % size, (rank - step) % size
            requests, _buffers = self._coll.isend(send[dest * block : (dest + 1) * block], dest, COLL_TAG)
            self._c_recv_into(recv[source * block : (source + 1) * block], source)
            MPI.Request.Waitall(requests)

    def alltoall(self, sendobj: Any) -> list[Any]:
        items = list(sendobj)
        size, rank = self.size, self.rank
        if len(items) != size:
            raise ValueError(f"alltoall: expected {size} items, got {len(items)}")
        out: list[Any] = [None] * size
        out[rank] = pickle.loads(pickle.dumps(items[rank], pickle.HIGHEST_PROTOCOL))  # noqa: S301 - own
        for step in range(1, size):
            dest, source = (rank + step) % size, (rank - step) % size
            data = memoryview(pickle.dumps(items[dest], pickle.HIGHEST_PROTOCOL))
            requests, _buffers = self._coll.isend(data, dest, COLL_TAG)
            out[source] = pickle.loads(self._c_recv_bytes(source))  # noqa: S301 - authenticated peer
            MPI.Request.Waitall(requests)
        return out

    def Reduce(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM, root: int = 0) -> None:
        """Linear: rank 0 folds the contributions in rank order (right for non-commutative ops)."""
        send = _byte_view(sendbuf, writable=False)
        nbytes = len(send)
        if self.rank != 0:
            self._c_send(send, 0)
            if self.rank == root:
                self._c_recv_into(_byte_view(recvbuf, writable=True)[:nbytes], 0)
            return
        acc = bytearray(send)
        incoming = bytearray(nbytes)
        for source in range(1, self.size):
            self._c_recv_into(memoryview(incoming), source)
            # Reduce_local(in, inout): inout = in op inout, i.e. incoming = acc op incoming.
            op.Reduce_local(_typed_spec(sendbuf, acc, nbytes), _typed_spec(sendbuf, incoming, nbytes))
            acc, incoming = incoming, acc
        if root == 0:
            _byte_view(recvbuf, writable=True)[:nbytes] = acc
        else:
            self._c_send(memoryview(acc), root)

    def reduce(self, sendobj: Any, op: Any = MPI.SUM, root: int = 0) -> Any:
        gathered = self.gather(sendobj, 0)
        result: Any = None
        if self.rank == 0:
            assert gathered is not None
            result = gathered[0]
            for item in gathered[1:]:
                result = op(result, item)
        if root != 0:
            if self.rank == 0:
                self._c_send(memoryview(pickle.dumps(result, pickle.HIGHEST_PROTOCOL)), root)
            elif self.rank == root:
                result = pickle.loads(self._c_recv_bytes(0))  # noqa: S301 - authenticated peer
        return result if self.rank == root else None

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> None:
        self.Reduce(sendbuf, recvbuf, op, 0)
        self.Bcast(recvbuf, 0)

    def allreduce(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        return self.bcast(self.reduce(sendobj, op, 0), 0)

    # -- new communicators (collective): keys derived from this one's, no new handshake

    def _derive_comm(self, comms: tuple[Any, Any, Any, Any], peers: list[int], label: bytes) -> SecureComm:
        self._derived += 1
        job = hashlib.sha256(
            b"mpish.comm derive " + self._job + label + self._derived.to_bytes(8, "big")
        ).digest()[:16]
        hashes = self._protocol.hash
        keys = [
            (
                _derive(hashes, self._pair_keys[p][0], b"child " + job),
                _derive(hashes, self._pair_keys[p][1], b"child " + job),
            )
            for p in peers
        ]
        return SecureComm(comms, job, keys, self._protocol)

    def Dup(self) -> SecureComm:
        comms = tuple(c.Dup() for c in self._comms)
        return self._derive_comm(comms, list(range(self.size)), b"dup")

    def Split(self, color: int = 0, key: int = 0) -> Any:
        comms = tuple(c.Split(color, key) for c in self._comms)
        if comms[0] == MPI.COMM_NULL:
            self._derived += 1  # stay in step with the ranks that got a communicator
            return MPI.COMM_NULL
        group, parent = comms[0].Get_group(), self._comms[0].Get_group()
        peers = list(MPI.Group.Translate_ranks(group, list(range(comms[0].Get_size())), parent))
        group.Free()
        parent.Free()
        return self._derive_comm(comms, peers, b"split" + struct.pack(">q", color))

    def Free(self) -> None:
        for lane in (self._p2p, self._coll):
            lane.free()


# -- setup -----------------------------------------------------------------------


def _agree(comm: Any, ok: bool) -> int:
    """Number of ranks for which ``ok`` is false (collective)."""
    mine, total = array("i", [0 if ok else 1]), array("i", [0])
    comm.Allreduce([mine, MPI.INT], [total, MPI.INT], op=MPI.SUM)
    return total[0]


def _handshake_slot(header: Header, body: bytes) -> bytes:
    record = header.pack() + body
    if len(record) > HANDSHAKE_SLOT:
        raise LocalProtocolError("handshake message larger than its slot")
    return record.ljust(HANDSHAKE_SLOT, b"\0")


def _read_slot(slot: memoryview, job: bytes, sender: int, receiver: int, index: int) -> bytes:
    header = parse_header(slot)
    if header.type is not RecordType.HANDSHAKE or header.counter != index:
        raise AuthenticationError(f"bad handshake message from rank {sender}")
    if (header.session, header.sender, header.receiver) != (job, sender, receiver):
        raise AuthenticationError(f"handshake message from rank {sender} is bound to another job or pair")
    if HEADER_SIZE + header.length > HANDSHAKE_SLOT:
        raise AuthenticationError(f"oversize handshake message from rank {sender}")
    return bytes(slot[HEADER_SIZE : HEADER_SIZE + header.length])


def _initiates(rank: int, peer: int, size: int) -> bool:
    """Whether ``rank`` initiates the handshake with ``peer``: each rank initiates with the
    half of its peers that follow it round the ring, so every round of ``_handshakes``
    costs every rank about the same CPU (no rank computes while the others spin)."""
    distance = (peer - rank) % size
    return 2 * distance < size or (2 * distance == size and rank < peer)


def _handshakes(
    comm: Any, job: bytes, identity: Identity, keys: list[bytes], protocol: ProtocolName, service: str
) -> list[tuple[bytes, bytes]]:
    """Run the KK handshake with every rank (two Alltoall rounds); return per-peer transport keys."""
    rank, size = comm.Get_rank(), comm.Get_size()
    initiated = [peer for peer in range(size) if peer != rank and _initiates(rank, peer, size)]
    answered = [peer for peer in range(size) if peer != rank and not _initiates(rank, peer, size)]
    name = protocol.name
    states: dict[int, HandshakeState] = {}
    errors: list[str] = []
    pair_keys: list[tuple[bytes, bytes]] = [(b"", b"")] * size

    def state(initiator: int, responder: int) -> HandshakeState:
        prologue = Binding(job, initiator, responder, service).prologue(name)
        peer = responder if initiator == rank else initiator
        return HandshakeState(
            protocol, initiator=initiator == rank, prologue=prologue, s=identity.private, rs=keys[peer]
        )

    # This rank with itself: both sides here.
    me_i = state(rank, rank)
    me_r = HandshakeState(
        protocol,
        initiator=False,
        prologue=Binding(job, rank, rank, service).prologue(name),
        s=identity.private,
        rs=keys[rank],
    )
    me_r.read_message(me_i.write_message(b""))
    me_i.read_message(me_r.write_message(b""))
    pair_keys[rank] = me_i.transport_keys()[0], me_r.transport_keys()[1]

    out, incoming = bytearray(size * HANDSHAKE_SLOT), bytearray(size * HANDSHAKE_SLOT)
    view = memoryview(incoming)
    for peer in initiated:  # round 1: we initiate
        try:
            states[peer] = state(rank, peer)
            body = states[peer].write_message(b"")
            header = Header(RecordType.HANDSHAKE, 0, job, rank, peer, 0, 0, len(body))
            out[peer * HANDSHAKE_SLOT : (peer + 1) * HANDSHAKE_SLOT] = _handshake_slot(header, body)
        except MpishError as exc:
            errors.append(f"rank {peer}: {exc}")
    comm.Alltoall([out, MPI.BYTE], [incoming, MPI.BYTE])
    out = bytearray(size * HANDSHAKE_SLOT)
    for peer in answered:  # round 2: we answer
        try:
            hs = state(peer, rank)
            hs.read_message(_read_slot(view[peer * HANDSHAKE_SLOT :], job, peer, rank, 0))
            body = hs.write_message(b"")
            header = Header(RecordType.HANDSHAKE, 0, job, rank, peer, 0, 1, len(body))
            out[peer * HANDSHAKE_SLOT : (peer + 1) * HANDSHAKE_SLOT] = _handshake_slot(header, body)
            pair_keys[peer] = hs.transport_keys()
        except MpishError as exc:
            errors.append(f"rank {peer}: {exc}")
    comm.Alltoall([out, MPI.BYTE], [incoming, MPI.BYTE])
    for peer in initiated:
        try:
            if peer not in states:
                continue
            states[peer].read_message(_read_slot(view[peer * HANDSHAKE_SLOT :], job, peer, rank, 1))
            pair_keys[peer] = states[peer].transport_keys()
        except MpishError as exc:
            errors.append(f"rank {peer}: {exc}")
    failed = _agree(comm, not errors)
    if failed:
        detail = "; ".join(errors) if errors else "this rank's handshakes succeeded"
        raise AuthenticationError(f"secure(): the handshake failed on {failed} rank(s) ({detail})")
    return pair_keys


def secure(
    comm: Any,
    *,
    home: str | None = None,
    identity: Identity | None = None,
    trusted: frozenset[bytes] | set[bytes] | None = None,
    protocol: str = PROTOCOL,
) -> SecureComm:
    """Wrap an mpi4py intracommunicator in an authenticated, encrypted one (collective).

    Keys come from the user's mpish identity (``home``, else ``$MPISH_HOME``, else
    ``~/.mpish``); the trusted peers are the own key plus ``authorized_keys``.
    """
    if comm.Is_inter():
        raise NotImplementedError("mpish.secure wraps intracommunicators only")
    p2p = comm.Dup()
    rank, size = p2p.Get_rank(), p2p.Get_size()
    # Identity: a rank that cannot load its key makes every rank fail, instead of hanging.
    local_error: BaseException | None = None
    try:
        if identity is None:
            identity = load_identity(home)
        if trusted is None:
            trusted = trusted_keys(identity, home)
    except MpishError as exc:
        local_error = exc
    # One Allgather carries, per rank: a "key loaded" flag, 16 random bytes (rank 0's are
    # the job id) and the public key (one collective instead of Allreduce, Bcast, Allgather).
    mine = bytearray(_SETUP_SLOT)
    if local_error is None:
        assert identity is not None
        mine[0] = 1
        mine[1:17] = secrets.token_bytes(16) if rank == 0 else bytes(16)
        mine[17:] = identity.public
    everyone = bytearray(_SETUP_SLOT * size)
    p2p.Allgather([mine, MPI.BYTE], [everyone, MPI.BYTE])
    failed = sum(1 for r in range(size) if everyone[r * _SETUP_SLOT] != 1)
    if failed:
        p2p.Free()
        if local_error is not None:
            raise local_error
        raise AuthenticationError(f"secure(): {failed} rank(s) could not load their mpish identity")
    assert identity is not None and trusted is not None
    job = everyone[1:17]
    keys = [bytes(everyone[r * _SETUP_SLOT + 17 : (r + 1) * _SETUP_SLOT]) for r in range(size)]

    # Trust check BEFORE any handshake; the verdicts are summed so every rank agrees.
    verdict = array("i", [0 if key in trusted else 1 for key in keys])
    refused = array("i", [0] * size)
    p2p.Allreduce([verdict, MPI.INT], [refused, MPI.INT], op=MPI.SUM)
    if any(refused):
        p2p.Free()
        lines = [
            f"rank {r} ({fingerprint(keys[r])}) is not trusted by {refused[r]} of {size} rank(s)"
            for r in range(size)
            if refused[r]
        ]
        mine_refused = [r for r in range(size) if verdict[r]]
        local = (
            f"; this rank (rank {rank}) does not trust rank(s) {mine_refused}: add their public keys to "
            "authorized_keys"
            if mine_refused
            else ""
        )
        raise AuthenticationError("secure(): untrusted mpish key: " + "; ".join(lines) + local)

    name = ProtocolName.parse(protocol)
    service = f"{SERVICE}:{size}"
    try:
        pair_keys = _handshakes(p2p, bytes(job), identity, keys, name, service)
    except BaseException:
        p2p.Free()
        raise
    comms = (p2p, comm.Dup(), comm.Dup(), comm.Dup())
    return SecureComm(comms, bytes(job), pair_keys, name)
