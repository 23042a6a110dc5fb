"""Messages longer than one record: the first record announces the length, continuation records follow.

Theory of operation
-------------------
A message of at most :data:`SINGLE_MAX` bytes is one record. A longer one is a first
record flagged MORE whose 8-byte payload is the message length, on the lane's main
communicator (so MPI matching applies to it as to a raw message), followed by
continuation records of ``_chunk(length)`` bytes on the bulk communicator, all flagged
MORE except the last. First and continuation records share the (direction, tag)
counter, so a receiver accepts on each (source, tag) only increasing counters, and a
continuation record only with exactly the next counter and exactly the expected length.
A sender posts every record (``Isend``) before it blocks on anything (posted.py's
progress argument). Continuation records are decrypted in place only after their
header (length, counter, flags) matched what the authenticated first record announced,
into the bytes that the genuine record overwrites.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from ..wire.errors import RemoteProtocolError, ReplayError
from ..wire.noise import TAGLEN
from ..wire.record import FLAG_MORE, HEADER, HEADER_SIZE, MAX_RECORD_PAYLOAD, RecordType, Sealer
from .buffers import mpi_truncate
from .limits import MATCH_FIRST, RECORD_ERRORS, RECORD_MAX, Envelope, Result, Stats
from .posted import PerPeer

if TYPE_CHECKING:
    from ..wire.record import Opener

BULK_CHUNK = 256 * 1024
_POOL = 32  # record buffers kept per lane for blocking sends (32 MiB at most)
_TOTAL = struct.Struct(">Q")  # payload of the first record of a long message: its length


def _chunk(size: int) -> int:
    """Continuation record size: a quarter MiB up to 2 MiB messages, then up to the 1 MiB cap."""
    return min(MAX_RECORD_PAYLOAD, max(BULK_CHUNK, size // 8))


class LongMessages:
    """The Lane's methods for messages of several records (a mixin: the state is the Lane's)."""

    comm: Any
    bulk: Any
    stats: Stats
    openers: PerPeer[Opener]
    _pool: list[bytearray]
    _bulk_rx: tuple[bytearray, bytearray] | None
    _status: Any
    _last: dict[Envelope, int]

    if TYPE_CHECKING:

        def _oversized(self, exc: Any) -> None: ...

        def _matched(self, comm: Any, source: int, tag: int, limit: int) -> Any: ...

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
        first = sealer.seal(_TOTAL.pack(size), channel=tag, flags=FLAG_MORE)
        isend = self.comm.Issend if synchronous else self.comm.Isend  # Ssend: complete once matched
        requests: list[Any] = [isend([first, MPI.BYTE], dest, tag)]
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
