"""Messages longer than one record: the first record announces the length, continuation records follow.

Theory of operation
-------------------
A message of at most :data:`SINGLE_MAX` bytes is one record. A longer one is a first
record flagged MORE whose 8-byte payload is the message length, on the lane's main
communicator (so MPI matching applies to it as to a raw message), followed by
continuation records of ``_chunk(length)`` bytes on the bulk communicator, all flagged
CONTINUATION, and MORE except the last. The flags are in the authenticated header, so
a record's role cannot be changed in transit: a continuation record moved to the main
communicator is refused there unopened (lane.py's ``process``), and a first record moved
to the bulk one is refused by the drain, so neither burns a counter of the genuine
message (THREAT-MODEL attack 5). First and continuation records share the (direction, tag)
counter, so a receiver accepts on each (source, tag) only increasing counters, and a
continuation record only with exactly the next counter and exactly the expected length.
A sender with posted receives (posted.py's ``_ACTIVE``), and every nonblocking send,
posts every record (``Isend``) before it blocks on anything (posted.py's progress
argument). A blocking send with no posted receive anywhere in the process seals into a
ring of :data:`_RING` record buffers instead, waiting in MPI for record k to be received
before it seals record k + _RING into its buffer: it then waits only on its own
receiver draining this message, as a raw rendezvous send waits on its receive, and it
never drains anything itself, so no two such senders can each wait, nested in a drain,
for the other (the exchange of check_irecv_send_wait, where both ranks have a posted
Irecv, takes the post-everything path). A receiver keeps up to :data:`_DEPTH`
continuation receives posted.
A record is opened only after its header (length, counter, flags) matched what the
authenticated first record announced, and is decrypted into the lane's scratch buffer
(256 KiB, in cache); the plaintext is copied into the user's buffer only after the tag
verified, so a forged record's bytes never reach user memory, even during the call.
Decrypting straight into the receive buffer (and wiping the place when the tag fails)
was tried on 2026-12-05 and reverted the same day: it saved the copy (+12% bandwidth at
1 MiB, +24% at 16 MiB), but an attacker who knows a genuine record's plaintext can flip
its ciphertext so the unverified CTR output is text of its choosing, and that text then
sat in the user's memory until the wipe. A security review made it stay: a Python signal
handler raising (a SIGALRM timeout, Ctrl-C) between the failed tag and the wipe left
``FORGED!!`` in the buffer after the call (30 of 200 tries); a buffer that is a shared file
mapping (numpy.memmap) kept it in the file when the process was killed mid-receive (7 of
15). The scratch buffer is private, and it is gone with the call.

Speed (MPICH shared memory, 2026-12-04). Per 256 KiB record, quiet: seal and open
about 11 us each (24 GB/s), MPI's copy at the raw rate 13-18 us. MPICH moves a message
of 8 KiB or more with CMA (process_vm_readv), done by the receiving process, so the
receiving core does MPI's copy, the open and the copy to the user one after the other
for every record, while the sender's core only seals. bench/comm.py measures that
serial sum in the same run and prints it as the bandwidth no secure transfer over MPI
can beat (``bw_cap_*``; an upper bound: its open and copy run in a warm cache). With
quiet raw rates (14.6 and 20 GB/s) it is about 0.55 and 0.46 of raw, below the 0.6
target; without MPI's copy it would be above 0.8. 16 MiB ran worse than 1 MiB because a
blocking send sealed into 64 fresh record buffers: 16 MiB of ciphertext written out of
cache and read back by the receiver's copy, on top of the two 16 MiB user buffers in
a 32 MiB L3 (hence the ring).

A shared-memory window (``Win.Allocate_shared``) that the sender seals into and the
receiver opens from would remove MPI's copy, but not safely as such: AES-GCM
implementations may read a ciphertext block twice (once for GHASH, once for CTR), so a
process able to write the window while the receiver decrypts could have a tag verify
over one ciphertext while other bytes are decrypted: unchecked (malleable) plaintext
would be accepted. It is sound only if nothing but the sender can write the window (an
MPI that maps it for this uid alone, where a writer could ptrace the ranks anyway), or
if the receiver first copies the ciphertext out, which is the copy it was to remove.
The other way past the cap, tried and not taken (2026-12-04, comm-bw): a helper thread
opening record k (decrypt_into releases the GIL: measured, a sleeping thread wakes in
0.07 ms while another decrypts 256 KiB records in a loop) while the lane's thread is in
MPI receiving record k + 1. Jobs ran in arrival order on one thread, so the same records
were accepted and rejected. It needs a core the ping-pong does not leave: MPICH's waiting
rank spins, so two threads of the receiving rank opened at 0.99 x one thread's rate
(bench/comm.py's ``open_threads_x2``), the receiver's CPU stayed equal to the wall time,
and side by side (load 2-5) it lost to this sequential drain at 16 MiB (ratio 0.15-0.21
against 0.21-0.35), also with the sender yielding or sleeping in its waits. On nodes with
a spare core per rank it may pay; the copy to the user must then also leave the GIL
(a memoryview copy holds it).
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from ..wire.errors import RemoteProtocolError, ReplayError
from ..wire.noise import TAGLEN
from ..wire.record import (
    FLAG_CONTINUATION,
    FLAG_MORE,
    FLAG_SYNC,
    HEADER,
    HEADER_SIZE,
    MAX_RECORD_PAYLOAD,
    RecordType,
    Sealer,
)
from .buffers import mpi_truncate
from .limits import MATCH_FIRST, RECORD_ERRORS, Deferring, Envelope, Result, Stats
from .posted import _ACTIVE, PerPeer, wait_all

if TYPE_CHECKING:
    from ..wire.shared import SharedOpener

BULK_CHUNK = 256 * 1024  # continuation record payload: a record and its plaintext stay in L2
_POOL = 64  # record buffers kept per lane for blocking sends that post every record (16 MiB)
_RING = 8  # records in flight of a blocking send that may wait on them (2 MiB, stays in L3)
_DEPTH = 4  # continuation records a receiver has posted (Irecv) at once
_TOTAL = struct.Struct(">Q")  # payload of the first record of a long message: its length
assert BULK_CHUNK <= MAX_RECORD_PAYLOAD
_RECORD = HEADER_SIZE + BULK_CHUNK + TAGLEN  # the largest continuation record
_CONTINUED = FLAG_CONTINUATION | FLAG_MORE  # the flags of a continuation record but the last


def _chunk(size: int) -> int:
    """Continuation record size, the same for every message: measured (bench/comm.py,
    2026-12-04) 1 MiB records gained nothing over 256 KiB ones on MPICH's shared memory,
    whose per-message cost is fixed, while a 256 KiB record and the plaintext decrypted
    from it both fit the L2 cache before the plaintext is copied to the user."""
    return BULK_CHUNK


class WholeMessage(Exception):
    """Strict mode: ``error``, a rejected record met while a genuine long message was being
    received, which arrived whole: ``data`` (lane.py keeps it for the next receive)."""

    def __init__(self, error: BaseException, data: bytes | bytearray) -> None:
        super().__init__(str(error))
        self.error, self.data = error, data


class LongMessages:
    """The Lane's methods for messages of several records (a mixin: the state is the Lane's)."""

    comm: Any
    bulk: Any
    stats: Stats | Deferring
    openers: PerPeer[SharedOpener]
    _pool: list[bytearray]
    _bulk_rx: list[bytearray] | None
    _scratch: bytearray
    _status: Any
    _last: dict[Envelope, int]
    long_to: set[int]
    long_from: set[int]

    if TYPE_CHECKING:

        def _oversized(self, exc: Any) -> None: ...

        def _matched(self, comm: Any, source: int, tag: int, limit: int) -> Any: ...

    def send_long(self, sealer: Sealer, data: memoryview, dest: int, tag: int) -> None:
        """Blocking send of a long message, its records sealed into a ring of :data:`_RING`
        buffers reused as MPI completes them (module doc: why, and why only without posted
        receives); with posted receives, every record is posted before anything blocks."""
        if _ACTIVE:
            requests, _ = self.post_long(sealer, data, dest, tag, pooled=True)
            # In flight: a send that runs during wait_all's polls (another thread's:
            # handles.py) seals into buffers of its own, not into these.
            pool, self._pool = self._pool, []
            try:
                wait_all(requests)
            finally:
                self._pool = pool
            return
        size = len(data)
        self.long_to.add(dest)
        first = sealer.seal(_TOTAL.pack(size), channel=tag, flags=FLAG_MORE)
        head = self.comm.Isend([first, MPI.BYTE], dest, tag)
        pool = self._pool
        while len(pool) < _RING:
            pool.append(bytearray(_RECORD))
        ring: list[Any] = [None] * _RING
        chunk = _chunk(size)
        bulk_isend = self.bulk.Isend
        for index, start in enumerate(range(0, size, chunk)):
            slot = index % _RING
            if ring[slot] is not None:
                ring[slot].Wait()  # the receiver has this record: its buffer is free again
            end = min(start + chunk, size)
            out = pool[slot]
            flags = _CONTINUED if end < size else FLAG_CONTINUATION
            n = sealer.seal_into(out, data[start:end], channel=tag, flags=flags)
            ring[slot] = bulk_isend([out, n, MPI.BYTE], dest, tag)
        MPI.Request.Waitall([head, *(r for r in ring if r is not None)])

    def post_long(
        self,
        sealer: Sealer,
        data: memoryview,
        dest: int,
        tag: int,
        *,
        pooled: bool,
        synchronous: bool = False,
    ) -> tuple[list[Any], list[Any]]:
        """Seal and post every record of a long message (the first one, then the bulk ones).

        Sealing record k+1 overlaps the transfer of record k; nothing here blocks, so a
        receiver that got the first record can always drain the rest (module doc).
        """
        size = len(data)
        self.long_to.add(dest)
        flags = FLAG_MORE | FLAG_SYNC if synchronous else FLAG_MORE  # SYNC: acknowledged (synchronous.py)
        first = sealer.seal(_TOTAL.pack(size), channel=tag, flags=flags)
        requests: list[Any] = [self.comm.Isend([first, MPI.BYTE], dest, tag)]
        buffers: list[Any] = [first]
        chunk = _chunk(size)
        bulk_isend = self.bulk.Isend
        pool = self._pool
        for index, start in enumerate(range(0, size, chunk)):
            end = min(start + chunk, size)
            if pooled and index < _POOL:
                if index == len(pool):
                    pool.append(bytearray(_RECORD))
                out = pool[index]
            else:
                out = bytearray(HEADER_SIZE + end - start + TAGLEN)
            flags = _CONTINUED if end < size else FLAG_CONTINUATION
            n = sealer.seal_into(out, data[start:end], channel=tag, flags=flags)
            requests.append(bulk_isend([out, n, MPI.BYTE], dest, tag))
            buffers.append(out)
        return requests, buffers

    def _long(self, first: bytes, source: int, tag: int, sink: memoryview | None) -> Result:
        """The rest of a message whose (authenticated) first record ``first`` was flagged MORE."""
        if len(first) != _TOTAL.size:
            raise RemoteProtocolError(f"malformed first record from rank {source}")  # authentic: a bug there
        total = _TOTAL.unpack(first)[0]
        self.long_from.add(source)
        data: bytearray | None = None
        fits = sink is not None and total <= len(sink)
        target: memoryview | None = sink if fits else None  # too long: drained, then ERR_TRUNCATE
        if sink is None or (not fits and getattr(self.stats, "strict", False)):
            # (strict: kept whole, should a forged record inside it raise instead: it lost the message)
            data = bytearray(total)  # the length comes from an authenticated, authorized peer
            target = memoryview(data)
        kept = self._drain(source, tag, target, total)
        if kept is not None:  # strict mode: the error now, the genuine message to the next receive
            assert target is not None
            raise WholeMessage(kept, data if data is not None else bytes(target[:total]))
        if not fits and sink is not None:
            raise mpi_truncate(
                f"message of {total} bytes from rank {source} tag {tag} exceeds the receive buffer of "
                f"{len(sink or b'')}"
            )
        return source, tag, total, data

    def _drain(self, source: int, tag: int, target: memoryview | None, total: int) -> BaseException | None:
        """Receive, check and open the continuation records of a message of ``total`` bytes;
        the first rejected record's error in strict mode (raised by the caller once the whole
        message is here: raised where it was found, it left the message's other records in
        MPI for ever, its sender's Send and the next receive waiting: helper-137).

        Up to :data:`_DEPTH` receives are posted at once (MPI moves record k+1 while k is
        decrypted), never more than the records still due, so none is left to take a
        later message's records. A rejected record frees its receive for the genuine one.
        """
        kept: BaseException | None = None
        chunk = _chunk(total)
        records = -(-total // chunk)
        if self._bulk_rx is None:
            self._bulk_rx = [bytearray(_RECORD) for _ in range(_DEPTH)]
            self._scratch = bytearray(BULK_CHUNK)
        status = self._status
        free = list(self._bulk_rx)
        inflight: deque[tuple[Any, bytearray]] = deque()
        offset, index = 0, 0
        try:
            while index < records:
                if MATCH_FIRST:  # one record at a time, each matched before it is received
                    try:
                        message = self._matched(self.bulk, source, tag, _RECORD)
                    except RECORD_ERRORS as error:  # strict: an oversized message, dropped whole
                        kept, message = kept or error, None
                    if message is None:
                        continue
                    buf = free[0]
                    message.Recv([buf, MPI.BYTE], status)
                else:
                    while free and len(inflight) < records - index:
                        buf = free.pop()
                        inflight.append((self.bulk.Irecv([buf, MPI.BYTE], source, tag), buf))
                    request, buf = inflight.popleft()
                    try:
                        request.Wait(status)
                    except MPI.Exception as exc:
                        free.append(buf)
                        try:
                            self._oversized(exc)
                        except RECORD_ERRORS as error:  # strict: an oversized message, dropped whole
                            kept = kept or error
                        continue
                record = memoryview(buf)[: status.Get_count(MPI.BYTE)]
                size = min(chunk, total - offset)
                try:
                    self._open_continuation(
                        record,
                        source,
                        tag,
                        size,
                        index + 1 < records,
                        None if target is None else target[offset : offset + size],
                    )
                except RECORD_ERRORS as exc:
                    try:
                        self.stats.reject(exc)
                    except RECORD_ERRORS as error:  # strict
                        kept = kept or error
                    continue
                finally:
                    if not MATCH_FIRST:
                        free.append(buf)
                index += 1
                offset += size
        finally:
            for request, _ in inflight:  # only when leaving by an error (MPI's, a signal handler's)
                request.Cancel()
                request.Wait()
        return kept

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
        if rtype != RecordType.DATA or channel != tag or flags != (_CONTINUED if more else FLAG_CONTINUATION):
            what = "a first record" if not flags & FLAG_CONTINUATION else "an unexpected record"
            raise RemoteProtocolError(f"{what} from rank {source} tag {tag} where a continuation is due")
        if counter != self._last.get(key, -2) + 1:  # (-2: its first record is not known)
            raise ReplayError(f"continuation record {counter} from rank {source} is a replay or out of order")
        # Decrypted into the lane's scratch (in cache) and copied to the user's memory only
        # after the tag verified: a forged record's bytes never reach ``out``.
        self.openers[source].open_into(record, self._scratch)
        if out is not None:  # None: draining a truncated message, nothing is kept
            out[:] = memoryview(self._scratch)[:size]
        self._last[key] = counter
