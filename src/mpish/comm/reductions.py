"""Reductions of a secure communicator (Reduce, Allreduce, Reduce_scatter, Scan...), on collectives.py.

Same rules as collectives.py (its theory of operation): one lane, explicit sources, every
rank calls the collectives in the same order. Reductions fold the contributions in rank
order at rank 0 (right for non-commutative operations) with ``Op.Reduce_local``; an error
at rank 0 (a wrong contribution from a rank) still receives every contribution and tells
the others through the broadcast (an abort notice), so no rank waits forever and no
record is left for a later call.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

from .buffers import block_view, byte_view, typed_spec
from .collectives import _BLOCK_ERRORS, ABORT_TAG, _dumps, _in_place, _loads
from .objects import ObjectCollectives


class Reductions(ObjectCollectives):
    """The reductions of SecureComm (mixin over :class:`ObjectCollectives`)."""

    # -- reductions

    def _send_view(self, sendbuf: Any, recvbuf: Any) -> tuple[memoryview, Any]:
        """(bytes to reduce, buffer argument giving their datatype); IN_PLACE takes recvbuf's."""
        if _in_place(sendbuf):
            return memoryview(bytes(byte_view(recvbuf, writable=True))), recvbuf
        return byte_view(sendbuf, writable=False), sendbuf

    def _fold(self, send: memoryview, typed: Any, op: Any) -> bytearray | None:
        """Rank 0: the contributions of all ranks folded in rank order; others: send theirs."""
        nbytes = len(send)
        if self.rank != 0:
            self._c_send(send, 0)
            return None
        acc = bytearray(send)
        incoming = bytearray(nbytes)
        for source in range(1, self.size):
            try:
                self._c_recv_into(memoryview(incoming), source)
            except _BLOCK_ERRORS:
                self._recv_each([(k, memoryview(incoming)) for k in range(source + 1, self.size)])
                raise
            # Reduce_local(in, inout): inout = in op inout, i.e. incoming = acc op incoming.
            op.Reduce_local(typed_spec(typed, acc, nbytes), typed_spec(typed, incoming, nbytes))
            acc, incoming = incoming, acc
        return acc

    def Reduce(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM, root: int = 0) -> None:
        self._root(root)
        if sendbuf is MPI.IN_PLACE and self.rank != root:
            raise ValueError("Reduce: MPI.IN_PLACE is valid at the root only")
        send, typed = self._send_view(sendbuf, recvbuf)
        acc = self._fold(send, typed, op)
        nbytes = len(send)
        if root == 0:
            if acc is not None:
                byte_view(recvbuf, writable=True)[:nbytes] = acc
        elif self.rank == 0:
            assert acc is not None
            self._c_send(memoryview(acc), root)
        elif self.rank == root:
            self._c_recv_into(byte_view(recvbuf, writable=True)[:nbytes], 0)

    def reduce(self, sendobj: Any, op: Any = MPI.SUM, root: int = 0) -> Any:
        """Gathered at rank 0, folded there in rank order, sent on to ``root``; a failure at
        rank 0 (an operation that raised, an abort notice) reaches ``root`` as a notice."""
        self._root(root)
        result: Any = None
        try:
            gathered = self.gather(sendobj, 0)
            if self.rank == 0:
                assert gathered is not None
                result = gathered[0]
                for item in gathered[1:]:
                    result = op(result, item)
        except Exception:
            if root != 0 and self.rank == 0:
                self._coll.send(memoryview(b""), root, ABORT_TAG)
            elif root != 0 and self.rank == root:
                self._coll.recv(0, MPI.ANY_TAG, None)  # rank 0's notice: dropped
            raise
        if root != 0:
            if self.rank == 0:
                self._c_send(_dumps(result), root)
            elif self.rank == root:
                result = _loads(self._c_recv_bytes(0))
        return result if self.rank == root else None

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> None:
        try:
            send, typed = self._send_view(sendbuf, recvbuf)
            recv = byte_view(recvbuf, writable=True)[: len(send)]
            if len(recv) != len(send):
                raise ValueError(f"Allreduce: receive buffer of {len(recv)} bytes, send buffer {len(send)}")
        except Exception:
            self._fail_gather_bcast()
            raise
        try:
            acc = self._fold(send, typed, op)
        except _BLOCK_ERRORS:
            self._abort(self._tree(0)[1], [])
            raise
        if acc is not None:
            recv[:] = acc
        self._bcast_view(recv, 0)

    def allreduce(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        try:
            result = self.reduce(sendobj, op, 0)
        except Exception:
            self._abort_bcast(0)  # the broadcast that follows still hears of it
            raise
        return self.bcast(result, 0)

    def Reduce_scatter_block(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> None:
        if _in_place(sendbuf):
            whole, block = block_view(recvbuf, self.size, writable=True)
            total = bytearray(len(whole))
            self.Allreduce(_typed(recvbuf, bytes(whole)), _typed(recvbuf, total), op)
            whole[:block] = total[self.rank * block : (self.rank + 1) * block]
            return
        recv = byte_view(recvbuf, writable=True)
        send = byte_view(sendbuf, writable=False)
        block = len(send) // self.size
        total = bytearray(len(send))
        self.Allreduce(_typed(sendbuf, bytes(send)), _typed(sendbuf, total), op)
        recv[:block] = total[self.rank * block : (self.rank + 1) * block]

    def Reduce_scatter(self, sendbuf: Any, recvbuf: Any, recvcounts: Any = None, op: Any = MPI.SUM) -> None:
        source = recvbuf if _in_place(sendbuf) else sendbuf
        send = byte_view(source, writable=False)
        itemsize = typed_spec(source, b"", 0)[2].Get_size()
        if recvcounts is None:  # as mpi4py: each rank's receive buffer gives its count
            if _in_place(sendbuf):
                recv_count = len(send) // itemsize // self.size
            else:
                recv_count = len(byte_view(recvbuf, writable=True)) // itemsize
            counts = [int(c) for c in self.allgather(recv_count)]
        else:
            counts = [int(c) for c in recvcounts]
        total = bytearray(len(send))
        self.Allreduce(_typed(source, bytes(send)), _typed(source, total), op)
        start = sum(counts[: self.rank]) * itemsize
        mine = counts[self.rank] * itemsize
        byte_view(recvbuf, writable=True)[:mine] = total[start : start + mine]

    def _scan(self, sendbuf: Any, recvbuf: Any, op: Any, *, inclusive: bool) -> None:
        send, typed = self._send_view(sendbuf, recvbuf)
        nbytes = len(send)
        recv = byte_view(recvbuf, writable=True)[:nbytes]
        partial = bytearray(send)  # the prefix up to and including this rank
        if self.rank > 0:
            before = bytearray(nbytes)
            self._c_recv_into(memoryview(before), self.rank - 1)
            if not inclusive:
                recv[:] = before
            op.Reduce_local(typed_spec(typed, before, nbytes), typed_spec(typed, partial, nbytes))
        if inclusive:
            recv[:] = partial
        if self.rank + 1 < self.size:
            self._c_send(memoryview(partial), self.rank + 1)

    def Scan(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> None:
        self._scan(sendbuf, recvbuf, op, inclusive=True)

    def Exscan(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> None:
        self._scan(sendbuf, recvbuf, op, inclusive=False)

    def scan(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        return self._chain(sendobj, op)[1]

    def exscan(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        return self._chain(sendobj, op)[0]

    def _chain(self, sendobj: Any, op: Any) -> tuple[Any, Any]:
        """(the fold of the ranks before this one, that fold with this rank's object), along
        the chain of ranks; a failure here goes on down the chain as an abort notice."""
        rank, before, partial, data = self.rank, None, sendobj, None
        try:
            if rank > 0:
                before = _loads(self._c_recv_bytes(rank - 1))
                partial = op(before, sendobj)
            if rank + 1 < self.size:
                data = _dumps(partial)
        except Exception:
            if rank + 1 < self.size:
                self._coll.send(memoryview(b""), rank + 1, ABORT_TAG)
            raise
        if data is not None:
            self._c_send(data, rank + 1)
        return before, partial


def _datatype(buf: Any) -> Any:
    return typed_spec(buf, b"", 0)[2]


def _typed(buf: Any, storage: Any) -> list[Any]:
    """``[storage, datatype]`` with the datatype of buffer argument ``buf``."""
    return [storage, _datatype(buf)]
