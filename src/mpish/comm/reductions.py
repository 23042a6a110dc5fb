"""Reductions of a secure communicator (Reduce, Allreduce, Reduce_scatter, Scan...), on collectives.py.

Same rules as collectives.py (its theory of operation): one lane, explicit sources, every
rank calls the collectives in the same order. Reductions fold the contributions in rank
order (right for non-commutative operations) with ``Op.Reduce_local``, in log2 of the size
steps, where a linear fold at rank 0 received the size's count of records one after the
other. Reduce folds up the binomial tree rooted at rank 0 (:meth:`Reductions._fold`: each
rank's subtree holds the ranks right after it, so its children's partial results are folded
after its own, nearest first), then rank 0 sends the result on to the root. Allreduce (and
Reduce_scatter, on it) swaps partial results by recursive doubling
(:meth:`Reductions._recursive_doubling`): one one-way latency per round, where a fold and a
broadcast took two per level, and every rank ends with the same bytes.

An error on a rank (its own argument, a wrong block, an abort notice) still takes every
record sent to it and sends abort notices where its result would have gone (Reduce: up the
tree, rank 0 then tells the root; Allreduce: in every round left, so that every rank hears
of it), so no rank waits forever and no record is left for a later call.
"""

from __future__ import annotations

from array import array
from typing import Any

from mpi4py import MPI

from .buffers import block_view, byte_view, check_op, typed_spec
from .collectives import COLL_TAG, Steps, _dumps, _in_place, _loads, run
from .lane import wait_all
from .objects import ObjectCollectives
from .posted import detach


class Reductions(ObjectCollectives):
    """The reductions of SecureComm (mixin over :class:`ObjectCollectives`)."""

    # -- reductions

    def _send_view(self, sendbuf: Any, recvbuf: Any) -> tuple[memoryview, Any]:
        """(bytes to reduce, buffer argument giving their datatype); IN_PLACE takes recvbuf's."""
        if _in_place(sendbuf):
            return memoryview(bytes(byte_view(recvbuf, writable=True))), recvbuf
        return byte_view(sendbuf, writable=False), sendbuf

    def _fold(self, send: memoryview, typed: Any, op: Any) -> Steps[bytearray | None]:
        """Rank 0: the contributions of all ranks folded in rank order, up the binomial tree
        rooted at rank 0 (log2 of the size in depth: each rank folds its children's partial
        results, which cover the ranks right after its own, in rank order); the others: None.
        A rank that meets an error (an abort notice, a wrong block, an operation MPI refuses)
        still takes its other children's records (dropped) and sends its parent an abort
        notice in place of its result, then raises."""
        nbytes = len(send)
        parent, children = self._tree(0)
        acc, incoming = bytearray(send), bytearray(nbytes)
        error: BaseException | None = None
        for child in reversed(children):  # the nearest first: child + 1 follows this rank
            yield child
            try:
                if error is not None:
                    self._coll.recv(child, COLL_TAG, None)
                    continue
                self._c_recv_into(memoryview(incoming), child)
                # Reduce_local(in, inout): inout = in op inout, i.e. incoming = acc op incoming.
                op.Reduce_local(typed_spec(typed, acc, nbytes), typed_spec(typed, incoming, nbytes))
                acc, incoming = incoming, acc
            except Exception as exc:
                error = error or exc
        if parent is not None:
            if error is None:
                self._c_send(memoryview(acc), parent)
            else:
                self._c_abort(parent)
        if error is not None:
            raise error
        return acc if parent is None else None

    def _fail_fold(self) -> Steps[None]:
        """This rank failed before a fold (_fold): its children's records taken (dropped), an
        abort notice to its parent in place of its result."""
        parent, children = self._tree(0)
        yield from self._abort_steps([] if parent is None else [parent], list(reversed(children)))

    def _Reduce_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM, root: int = 0) -> Steps[None]:
        """Folded at rank 0 (_fold), sent on to ``root``; an error on any rank reaches the
        others as abort notices (no rank left behind)."""
        root = self._root(root)
        rank = self.rank
        try:
            if sendbuf is MPI.IN_PLACE and rank != root:
                raise ValueError("Reduce: MPI.IN_PLACE is valid at the root only")
            send, typed = self._send_view(sendbuf, recvbuf)
            check_op(op, typed)  # one MPI can reduce, or raise before anything is sent
            sink = byte_view(recvbuf, writable=True)[: len(send)] if rank == root else None
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._fail_fold()  # an abort notice in place of this rank's result
            yield from self._pass_on_to_root(root)
            raise
        try:
            acc = yield from self._fold(send, typed, op)
        except Exception:
            yield from self._pass_on_to_root(root)
            raise
        if root == 0:
            if acc is not None and sink is not None:
                sink[:] = acc
        elif rank == 0:
            assert acc is not None
            self._c_send(memoryview(acc), root)
        elif rank == root:
            assert sink is not None
            yield 0
            self._c_recv_into(sink, 0)

    def _pass_on_to_root(self, root: int) -> Steps[None]:
        """Reduce failed here: rank 0 tells a root elsewhere; that root drops rank 0's notice."""
        if root != 0 and self.rank == 0:
            self._c_abort(root)
        elif root != 0 and self.rank == root:
            yield 0
            self._coll.recv(0, COLL_TAG, None)

    def reduce(self, sendobj: Any, op: Any = MPI.SUM, root: int = 0) -> Any:
        """Gathered at rank 0, folded there in rank order, sent on to ``root``; a failure at
        rank 0 (an operation that raised, an abort notice) reaches ``root`` as a notice."""
        root = self._root(root)
        result: Any = None
        data = None
        try:
            gathered = self.gather(sendobj, 0)
            if self.rank == 0:
                assert gathered is not None
                result = gathered[0]
                for item in gathered[1:]:
                    result = op(result, item)
                data = _dumps(result) if root != 0 else None
        except Exception:
            run(self._pass_on_to_root(root))
            raise
        if root != 0:
            if self.rank == 0:
                assert data is not None
                self._c_send(data, root)
            elif self.rank == root:
                result = _loads(self._c_recv_bytes(0))
        return result if self.rank == root else None

    def _Allreduce_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> Steps[None]:
        try:
            send, typed = self._send_view(sendbuf, recvbuf)
            recv = byte_view(recvbuf, writable=True)[: len(send)]
            if len(recv) != len(send):
                raise ValueError(f"Allreduce: receive buffer of {len(recv)} bytes, send buffer {len(send)}")
            check_op(op, typed)  # one MPI can reduce, or raise before anything is sent
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._fail_allreduce(exc)
            raise
        recv[:] = yield from self._recursive_doubling(send, typed, op)

    def _fail_allreduce(self, error: BaseException) -> Steps[None]:
        """This rank failed before an Allreduce: its part in it taken with abort notices."""
        yield from self._recursive_doubling(memoryview(b""), None, None, error)

    def _recursive_doubling(self, send: memoryview, typed: Any, op: Any,
                            error: BaseException | None = None) -> Steps[bytearray]:
        """Every rank's contributions folded in rank order, on every rank (MPICH's recursive
        doubling): in round k each rank swaps its partial result with the rank whose number
        differs in bit k, and both fold the lower ranks' first, so both hold the same bytes.
        One one-way latency per round, log2 of the size rounds, where a fold up a tree and a
        broadcast down it took two per level (a secure Allreduce at -n 2: 10 times raw's).
        Beyond the largest power of two, 2 x rem ranks pair up first (the even one's part goes to
        the odd one, which takes its place, then hands it the result).

        A rank that failed (``error``, its own arguments; an abort notice; a wrong block; an
        operation MPI refuses) sends abort notices in place of its partial result in every
        round left and drops what comes: the failure reaches every rank (each hears from every
        other through the rounds), and no record is left queued. It raises, but ``error``. One
        limit: a failure met by one rank of a pair in round k reaches the ranks it swaps with
        after k only, so a user's operation (MPI.Op.Create) that raises on some ranks only fails
        on some ranks (a wrong block is met by both ranks of its first exchange, which together
        reach every rank; a predefined operation is checked before anything is sent; the fold
        at rank 0 of old told every rank, at one latency per level more). Raw MPI has no clean
        failure there either (mpi4py cannot return an error from an operation's callback)."""
        n, r, nbytes = self.size, self.rank, len(send)
        pof2 = 1 << (n.bit_length() - 1)
        rem = n - pof2
        acc, spare = bytearray(send), bytearray(nbytes)
        failed = error
        datatype = typed_spec(typed, b"", 0)[2] if typed is not None else None  # resolved once
        count = nbytes // datatype.Get_size() if datatype is not None else 0

        def fold(partner: int, result: bool = False) -> Steps[None]:
            """``partner``'s record: folded in (its ranks first if lower), or (``result``) taken."""
            nonlocal acc, spare, failed
            yield partner
            if failed is not None:
                self._coll.recv(partner, COLL_TAG, None)  # dropped, an abort notice too
                return
            try:
                self._c_recv_into(memoryview(acc if result else spare), partner)
                if result:
                    return
                if partner < r:  # Reduce_local(in, inout): inout = in op inout
                    op.Reduce_local([spare, count, datatype], [acc, count, datatype])
                else:
                    op.Reduce_local([acc, count, datatype], [spare, count, datatype])
                    acc, spare = spare, acc
            except Exception as exc:
                failed = exc

        def give(partner: int) -> tuple[list[Any], list[Any]]:
            """This rank's partial result sealed and posted to ``partner`` (an abort notice if failed)."""
            if failed is None:
                return self._c_isend(memoryview(acc), partner)
            self._c_abort(partner)
            return [], []

        def swap(partner: int, result: bool = False, gives: bool = True) -> Steps[None]:
            requests, records = give(partner) if gives else ([], [])
            try:
                yield from fold(partner, result)
            except BaseException:
                detach(requests, records)  # (the records live on until MPI is done with them)
                raise
            wait_all(requests)

        newrank = r - rem if r >= 2 * rem else r // 2 if r % 2 else -1
        if newrank < 0:
            yield from swap(r + 1, result=True)  # given to r + 1, which hands back the result
        else:
            if r < 2 * rem:
                yield from swap(r - 1, gives=False)
            mask = 1
            while mask < pof2:
                other = newrank ^ mask
                yield from swap(other * 2 + 1 if other < rem else other + rem)
                mask <<= 1
            if r < 2 * rem:
                wait_all(give(r - 1)[0])
        if failed is not None and failed is not error:
            raise failed
        return acc

    def allreduce(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        try:
            result = self.reduce(sendobj, op, 0)
        except Exception:
            self._abort_bcast(0)  # the broadcast that follows still hears of it
            raise
        return self.bcast(result, 0)

    def _Reduce_scatter_block_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> Steps[None]:
        try:  # every local check before the Allreduce, whose failure protocol covers this rank
            if _in_place(sendbuf):
                recv, block = block_view(recvbuf, self.size, writable=True)
                source, send = recvbuf, memoryview(bytes(recv))
            else:  # the send buffer's entries in equal blocks (mpi4py's "cannot infer count"), not bytes
                recv = byte_view(recvbuf, writable=True)
                send, block = block_view(sendbuf, self.size, writable=False)
                source = sendbuf
            _datatype(source)
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._fail_allreduce(exc)
            raise
        total = bytearray(len(send))
        yield from self._Allreduce_steps(_typed(source, bytes(send)), _typed(source, total), op)
        recv[:block] = total[self.rank * block : (self.rank + 1) * block]

    def _Reduce_scatter_steps(
        self, sendbuf: Any, recvbuf: Any, recvcounts: Any = None, op: Any = MPI.SUM
    ) -> Steps[None]:
        try:  # every local check before the collectives, whose failure protocols cover this rank
            source = recvbuf if _in_place(sendbuf) else sendbuf
            send = byte_view(source, writable=False)
            itemsize = _datatype(source).Get_size()
            recv = byte_view(recvbuf, writable=True)
            whole = len(send) // self.size if _in_place(sendbuf) else len(recv)  # this rank's block
            local_count = whole // itemsize
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            if recvcounts is None:
                yield from self._counts(0)  # in step with the others' count exchange
            yield from self._fail_allreduce(exc)
            raise
        if recvcounts is None:  # as mpi4py: each rank's receive buffer gives its count
            counts = yield from self._counts(local_count)
        else:
            counts = [int(c) for c in recvcounts]
        try:  # mpi4py's own check, before the Allreduce (a wrong count wrote garbage: helper-107)
            if len(counts) != self.size:
                raise ValueError(f"incorrect number of counts {len(counts)}, expecting {self.size}")
            items, own = len(send) // itemsize, counts[self.rank]
            if sum(counts) != items and not _in_place(sendbuf):
                raise ValueError(f"mismatch in send count {items} and sum(counts) {sum(counts)}")
            if own * itemsize > len(recv):
                raise ValueError(f"receive buffer of {len(recv) // itemsize} items, count {own}")
        except Exception as exc:
            yield exc
            yield from self._fail_allreduce(exc)
            raise
        total = bytearray(len(send))
        yield from self._Allreduce_steps(_typed(source, bytes(send)), _typed(source, total), op)
        start = sum(counts[: self.rank]) * itemsize
        mine = counts[self.rank] * itemsize
        recv[:mine] = total[start : start + mine]

    def _counts(self, count: int) -> Steps[list[int]]:
        """Every rank's count (an Allgather of 64-bit integers)."""
        counts = array("q", bytes(8 * self.size))
        yield from self._Allgather_steps(array("q", [count]), counts)
        return list(counts)

    def _scan(self, sendbuf: Any, recvbuf: Any, op: Any, *, inclusive: bool) -> Steps[None]:
        """Along the chain of ranks; a failure here goes on down the chain as an abort notice."""
        rank, last = self.rank, self.rank + 1 >= self.size
        try:
            send, typed = self._send_view(sendbuf, recvbuf)
            nbytes = len(send)
            recv = byte_view(recvbuf, writable=True)[:nbytes]
            if len(recv) != nbytes:
                raise ValueError(f"Scan: receive buffer of {len(recv)} bytes, send buffer {nbytes}")
            check_op(op, typed)
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            if rank > 0:
                yield rank - 1
                self._coll.recv(rank - 1, COLL_TAG, None)  # the prefix (or a notice): dropped
            if not last:
                self._c_abort(rank + 1)
            raise
        partial = bytearray(send)  # the prefix up to and including this rank
        try:
            if rank > 0:
                before = bytearray(nbytes)
                yield rank - 1
                self._c_recv_into(memoryview(before), rank - 1)
                if not inclusive:
                    recv[:] = before
                op.Reduce_local(typed_spec(typed, before, nbytes), typed_spec(typed, partial, nbytes))
        except Exception:
            if not last:
                self._c_abort(rank + 1)
            raise
        if inclusive:
            recv[:] = partial
        if not last:
            self._c_send(memoryview(partial), rank + 1)

    def _Scan_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> Steps[None]:
        yield from self._scan(sendbuf, recvbuf, op, inclusive=True)

    def _Exscan_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> Steps[None]:
        yield from self._scan(sendbuf, recvbuf, op, inclusive=False)

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
                self._c_abort(rank + 1)
            raise
        if data is not None:
            self._c_send(data, rank + 1)
        return before, partial


def _datatype(buf: Any) -> Any:
    return typed_spec(buf, b"", 0)[2]


def _typed(buf: Any, storage: Any) -> list[Any]:
    """``[storage, datatype]`` with the datatype of buffer argument ``buf``."""
    return [storage, _datatype(buf)]
