"""Collective operations of a secure communicator, built from authenticated point-to-point records.

Theory of operation
-------------------
Collectives run on their own lane (internal communicators that user point-to-point
traffic never touches), with one tag, :data:`COLL_TAG`, and explicit sources: MPI
requires every rank to call the collectives of a communicator in the same order, so
messages of one collective cannot be taken by another. Algorithms are simple and
deterministic: binomial trees (MPICH's) for Bcast, linear gathers and scatters at the
root, folds in rank order for reductions (right for non-commutative operations: up a
binomial tree for Reduce, recursive doubling for Allreduce; reductions.py), pairwise
exchange for Alltoall, a chain for Scan/Exscan.

No rank left behind: arguments are checked before any message is sent (a bad root is
MPI's ``ERR_ROOT`` on every rank, since every rank passes the same root). A root that
finds its own buffers wrong still receives (and drops) what the others send it and sends
an abort notice (an empty record flagged ABORT: :meth:`_c_abort`) to every rank that waits for
it, so the others raise :class:`CollectiveAborted` instead of hanging, and no stale
record is left for a later call.

Steps. Each algorithm is written once, as a generator of its *steps*: before each receive it
yields the source whose next record it needs (``yield source``), and it sends with
:meth:`_c_send`. :func:`run` drives the steps of a blocking collective: each yield returns at
once and the receive that follows blocks. A step that finds this rank's own arguments wrong
yields the error (``yield exc``) before it takes its part in the failure protocol above: the
call raises it (a started collective's call too). The started form (nonblocking.py) resumes the
steps only once ``probe`` found that record, so it never blocks in a receive another rank
satisfies only later; its sends are nonblocking (``_issuing``: the started collective whose
steps run now keeps their MPI requests until they complete).
"""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import Any, TypeVar

from mpi4py import MPI

from ..wire.errors import MpishError
from .buffers import (
    byte_view,
    mpi_error,
    mpi_truncate,
    parse,
)
from .gapped import Scatter, landing, one_block
from .lane import Lane, progress, wait_all
from .limits import ABORT_TAG, RECORD_ERRORS, Deferring
from .packing import derived, pack, unpack
from .peers import as_int
from .posted import detach
from .serial import dumps, loads
from .vectors import vector_landing

_ORIGIN = struct.Struct(">I")  # an abort notice's body: the rank the collective failed on
COLL_TAG = 1  # the tag of collective traffic, abort notices too (collectives are called in the same order)


def _in_place(buf: Any) -> bool:
    """MPI.IN_PLACE, or None where mpi4py reads None as MPI.IN_PLACE."""
    return buf is None or buf is MPI.IN_PLACE


class CollectiveAborted(MpishError, MPI.Exception):
    """A collective failed on another rank (that rank raised the cause). An MPI.Exception
    too, of class ERR_OTHER, so that code catching MPI's errors catches it (helper-118)."""

    def __init__(self, message: str) -> None:
        MPI.Exception.__init__(self, MPI.ERR_OTHER)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"CollectiveAborted({self.message!r})"

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return CollectiveAborted, (self.message,)


# What receiving one block of a collective may raise after the record was taken out of MPI
# (a rejected record's error only if something raised it past the lane's Deferring: limits.py).
_BLOCK_ERRORS = (CollectiveAborted, *RECORD_ERRORS, MPI.Exception)


_dumps, _loads = dumps, loads  # serial.py: MPI.pickle's (only authenticated bytes are loaded)

T = TypeVar("T")
# A collective's steps: each yield, the source of the record needed next (or this rank's error).
Steps = Generator[int | BaseException, None, T]


def _own_fits(sent: int, block: int, call: str) -> None:
    """This rank's own block fits its receive block (a shorter one is MPI's upper bound)."""
    if sent > block:
        raise mpi_truncate(f"{call}: this rank's block of {sent} bytes is longer than a receive block "
                           f"({block} bytes: the receive buffer's entries over the size, or its count)")


def run(steps: Steps[T]) -> T:
    """Take every step at once, each receive blocking (the blocking collectives)."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class Issuing:
    """What a started collective keeps of the sends its steps made (nonblocking.py)."""

    requests: list[Any]
    records: list[Any]


class Collectives:
    """The collective methods of SecureComm (mixin: needs ``rank``, ``size`` and ``_coll``)."""

    rank: int
    size: int
    _coll: Lane
    _started: list[Any]  # started collectives not done yet (nonblocking.py), oldest first
    _issuing: Issuing | None = None  # the started collective whose steps run now (module doc)
    _abort_origin: int | None = None  # the rank the running collective failed on, if a notice said so
    _deferred: Deferring  # the collective lane's stats (limits.py): strict errors kept for the end

    # -- building blocks

    def _root(self, root: int) -> int:
        """``root`` as an int (numpy's, a float: as mpi4py reads it), or MPI's ERR_ROOT."""
        root = as_int(root)
        if not 0 <= root < self.size:
            raise mpi_error(MPI.ERR_ROOT, f"root {root}, in a communicator of {self.size}")
        return root

    def _settle_started(self) -> None:
        """Before another collective (each public one calls it first: nonblocking.COLLECTIVES):
        take every step of the started ones (their records come first from every rank)."""
        while self._started:
            while not self._started[0].issue(block=True):  # another thread takes its steps now
                progress()  # (its poll let this thread in: handles.py), until it is done
            self._started.pop(0)

    def _c_send(self, data: memoryview, dest: int) -> None:
        issuing = self._issuing
        if issuing is None:
            self._coll.send(data, dest, COLL_TAG)
            return
        requests, records = self._coll.isend(data, dest, COLL_TAG)  # a started collective's
        issuing.requests.extend(requests)
        issuing.records.append(records)

    def _c_isend(self, data: memoryview, dest: int, *, abort: bool = False) -> tuple[list[Any], list[Any]]:
        """A send whose (requests, records) the caller keeps until it waited for them; a
        started collective keeps them itself (the caller gets none). ``abort``: an abort notice."""
        issuing = self._issuing
        requests, records = self._coll.isend(data, dest, COLL_TAG, abort=abort)
        if issuing is None:
            return requests, records
        issuing.requests.extend(requests)
        issuing.records.append(records)
        return [], []

    def _c_abort(self, dest: int) -> None:
        """An abort notice to ``dest``: a record flagged ABORT (authenticated, in the header) on
        the collective tag, so it takes the place of this rank's record in ``dest``'s order; the
        receive reports it as :data:`ABORT_TAG`. It holds the rank the collective failed on: this
        one, or the one a notice it received named (a rank that passes a failure on is not its
        cause). Four bytes, so MPI sends it eagerly."""
        origin = self.rank if self._abort_origin is None else self._abort_origin
        wait_all(self._coll.isend(memoryview(_ORIGIN.pack(origin)), dest, COLL_TAG, abort=True)[0])

    def _c_recv(
        self, source: int, sink: memoryview | None, shorter: bool = False
    ) -> bytes | bytearray | None:
        """A block from ``source``: of ``sink``'s size (``shorter``: at most, as a v-collective's
        receive count is an upper bound to MPI), or CollectiveAborted for an abort notice."""
        _, tag, n, data = self._coll.recv(source, COLL_TAG, sink)
        if tag == ABORT_TAG:
            origin = _ORIGIN.unpack(data)[0] if data is not None and len(data) == _ORIGIN.size else source
            self._abort_origin = origin
            passed = "" if origin == source else f" (rank {source} passed the notice on)"
            raise CollectiveAborted(f"the collective failed on rank {origin}{passed}")
        if sink is not None and n != len(sink) and not (shorter and n < len(sink)):
            # authenticated: the program's own mismatch, an MPI error as raw MPI's (not a forgery)
            raise mpi_error(MPI.ERR_TRUNCATE if n > len(sink) else MPI.ERR_OTHER,
                            f"collective block of {n} bytes from rank {source}, expected {len(sink)}")
        return data

    def _c_recv_into(self, sink: memoryview, source: int) -> None:
        self._c_recv(source, sink)

    def _c_recv_bytes(self, source: int) -> bytes | bytearray:
        data = self._c_recv(source, None)
        assert data is not None
        return data

    def _abort(self, waiting: list[int], sending: list[int]) -> None:
        run(self._abort_steps(waiting, sending))

    def _abort_steps(self, waiting: list[int], sending: list[int]) -> Steps[None]:
        """Tell ``waiting`` ranks this collective failed here; drop what ``sending`` ranks send."""
        for dest in waiting:
            if dest != self.rank:
                self._c_abort(dest)
        for source in sending:
            if source != self.rank:
                yield source
                self._coll.recv(source, COLL_TAG, None)  # an abort notice, too, is just dropped

    def _recv_each(self, pairs: list[tuple[int, memoryview]], shorter: bool = False) -> Steps[None]:
        """Receive block after block; after an error (an abort notice, a wrong size) receive
        (and drop) the rest still, then raise the first error: no record is left behind."""
        error: BaseException | None = None
        for source, sink in pairs:
            yield source
            try:
                if error is None:
                    self._c_recv(source, sink, shorter)
                else:
                    self._coll.recv(source, COLL_TAG, None)
            except _BLOCK_ERRORS as exc:
                error = exc
        if error is not None:
            raise error

    def _fail_gather_bcast(self) -> Steps[None]:
        """This rank failed before a gather to rank 0 and a broadcast from it: take part
        in both with abort notices, so every rank raises and nothing is left queued."""
        parent, children = self._tree(0)
        if self.rank != 0:
            self._c_abort(0)
        yield from self._abort_steps(children, self._others() if parent is None else [parent])

    def _others(self) -> list[int]:
        return [r for r in range(self.size) if r != self.rank]

    def _send_or_abort(self, sendbuf: Any, root: int) -> None:
        """Send this rank's block to ``root``; an abort notice instead if the buffer is wrong."""
        try:
            data = one_block(sendbuf, writable=False)[0]
        except Exception:
            self._c_abort(root)
            raise
        self._c_send(data, root)

    def _recv_or_drop_steps(self, recvbuf: Any, root: int, shorter: bool = False) -> Steps[None]:
        """Receive this rank's block from ``root``; if the buffer is wrong, receive and drop it.
        ``shorter``: a block shorter than the buffer is taken (a scatter's receive count is an
        upper bound to MPI: a larger receive buffer takes the block at its start)."""
        try:
            sink, scatter = one_block(recvbuf, writable=True)  # (a datatype with gaps: gapped.py)
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield root
            self._coll.recv(root, COLL_TAG, None)
            raise
        yield root
        self._c_recv(root, sink, shorter)
        if scatter is not None:
            scatter()

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

    def _bcast_view(self, view: memoryview | None, root: int) -> bytes | bytearray | memoryview:
        return run(self._bcast_steps(view, root))

    def _bcast_steps(self, view: memoryview | None, root: int) -> Steps[bytes | bytearray | memoryview]:
        """Broadcast ``view`` from ``root`` along the tree (into ``view`` elsewhere, or as bytes)."""
        parent, children = self._tree(root)
        data: Any = view
        if parent is not None:
            yield parent
            try:
                if view is None:
                    data = self._c_recv_bytes(parent)
                else:
                    self._c_recv_into(view, parent)
            except _BLOCK_ERRORS:  # an abort notice, or a block of the wrong size: pass it on
                self._abort(children, [])
                raise
        out = memoryview(data)
        for child in children:
            self._c_send(out, child)
        return data  # type: ignore[no-any-return]

    # -- barrier and broadcast (the blocking forms: nonblocking.py, from these steps)

    def _Barrier_steps(self) -> Steps[None]:
        """A dissemination barrier: in round k each rank sends an empty record to rank + 2**k and
        takes one from rank - 2**k (mod size); after ceil(log2 size) rounds each has heard from
        every other, directly or through others that had. One one-way latency per round, alike
        on every rank: the gather to rank 0 and broadcast took two at -n 2 (a secure round
        trip, 82x raw Open MPI's Barrier) and size - 1 receives at rank 0. Sends in a ring
        can all wait for each other: they are nonblocking, waited for after the receive.

        A round's receive that fails (an abort notice, a record that is not the barrier's)
        does not stop the rounds: the later ones send abort notices instead, and take what
        comes, so no rank waits for a record that never comes and none is left queued; the
        ranks the notices reach raise, then this one raises its error."""
        size, rank = self.size, self.rank
        failure: BaseException | None = None
        distance = 1
        while distance < size:
            dest, source = (rank + distance) % size, (rank - distance) % size
            if failure is None:
                requests, records = self._c_isend(memoryview(b""), dest)
            else:  # an abort notice names the rank the barrier failed on
                origin = rank if self._abort_origin is None else self._abort_origin
                requests, records = self._c_isend(memoryview(_ORIGIN.pack(origin)), dest, abort=True)
            try:
                yield source
                try:
                    self._c_recv_into(memoryview(bytearray()), source)
                except _BLOCK_ERRORS as exc:
                    failure = failure or exc
                wait_all(requests)
            except BaseException:
                detach(requests, records)  # the records live on until MPI is done with them
                raise
            distance *= 2
        if failure is not None:
            raise failure

    def _Bcast_steps(self, buf: Any, root: int = 0) -> Steps[None]:
        root = self._root(root)
        spec = derived(buf)  # a derived datatype with gaps travels packed
        try:
            if spec is None:
                view = byte_view(buf, writable=self.rank != root)
            else:
                view = pack(*spec) if self.rank == root else memoryview(bytearray(spec[1]))
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            parent, children = self._tree(root)
            yield from self._abort_steps(children, [] if parent is None else [parent])
            raise
        yield from self._bcast_steps(view, root)
        if spec is not None and self.rank != root:
            unpack(view, spec[0])

    # -- gather and scatter

    def _Gather_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        root = self._root(root)
        size, rank = self.size, self.rank
        if rank != root:
            self._send_or_abort(sendbuf, root)
            return
        try:  # block k lands at k times the receive count, which bounds each block (as MPI's)
            recv, block, scatter = landing(recvbuf, size, writable=True)
            send = None if _in_place(sendbuf) else one_block(sendbuf, writable=False)[0]
            if send is not None:
                _own_fits(len(send), block, "Gather")
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._abort_steps([], self._others())
            raise
        if send is not None:
            recv[root * block : root * block + len(send)] = send
        yield from self._recv_each([(k, recv[k * block : (k + 1) * block]) for k in range(size) if k != root],
                                   shorter=True)
        if scatter is not None:
            scatter()

    def _Scatter_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        root = self._root(root)
        size, rank = self.size, self.rank
        if rank != root:
            yield from self._recv_or_drop_steps(recvbuf, root, shorter=True)
            return
        try:
            send, block, _ = landing(sendbuf, size, writable=False)
            recv, scatter = (None, None) if _in_place(recvbuf) else one_block(recvbuf, writable=True)
            if not isinstance(sendbuf, (list, tuple)):  # the blocks are the send buffer's, as mpi4py's
                flat, _, item = parse(sendbuf, writable=False)
                if (len(flat) // item) % size:
                    raise ValueError(f"Scatter: cannot infer count: {len(flat) // item} entries in the "
                                     f"send buffer are not a multiple of {size} blocks")
            if recv is not None and len(recv) < block:  # a larger one takes the block at its start
                raise ValueError("Scatter: receive buffer too small")
        except Exception:
            self._abort(self._others(), [])
            raise
        for dest in range(size):
            chunk = send[dest * block : (dest + 1) * block]
            if dest != root:
                self._c_send(chunk, dest)
            elif recv is not None:
                recv[:block] = chunk
        if scatter is not None:
            scatter()

    def _Gatherv_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        root = self._root(root)
        if self.rank != root:
            self._send_or_abort(sendbuf, root)
            return
        try:  # (a datatype with gaps: vectors.py)
            recv, counts, displs, scatter = vector_landing(recvbuf, self.size, writable=True)
            send = None if _in_place(sendbuf) else one_block(sendbuf, writable=False)[0]
            if send is not None:  # a shorter own block (MPI's count is an upper bound): as MPI copies it
                own = min(len(send), counts[root])
                recv[displs[root] : displs[root] + own] = send[:own]
        except Exception as exc:  # before the others' blocks are taken: dropped, no rank left behind
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._abort_steps([], self._others())
            raise
        blocks = [(k, recv[displs[k] : displs[k] + counts[k]]) for k in range(self.size) if k != root]
        yield from self._recv_each(blocks, shorter=True)
        if scatter is not None:
            scatter()

    def _Scatterv_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        root = self._root(root)
        if self.rank != root:
            yield from self._recv_or_drop_steps(recvbuf, root, shorter=True)
            return
        try:
            send, counts, displs, _ = vector_landing(sendbuf, self.size, writable=False)
            recv, scatter = (None, None) if _in_place(recvbuf) else one_block(recvbuf, writable=True)
        except Exception:
            self._abort(self._others(), [])
            raise
        for dest in range(self.size):
            if dest != root:
                self._c_send(send[displs[dest] : displs[dest] + counts[dest]], dest)
        if recv is not None:  # its own block last: a receive buffer too short fails here alone,
            chunk = send[displs[root] : displs[root] + counts[root]]  # with every other rank's sent
            if len(recv) < len(chunk):
                raise mpi_truncate(f"Scatterv: the root's own block is {len(chunk)} bytes, its receive "
                                   f"buffer {len(recv)}")
            recv[: len(chunk)] = chunk
            if scatter is not None:
                scatter()

    # -- all-to-all patterns

    def _gather_to_zero(self, send: memoryview, blocks: list[memoryview]) -> Steps[None]:
        """Rank 0 receives block k from rank k (its own from ``send``); the others send theirs."""
        if self.rank != 0:
            self._c_send(send, 0)
            return
        blocks[0][: len(send)] = send[: len(blocks[0])]
        try:  # a receive count bounds each block, as MPI's
            yield from self._recv_each([(k, blocks[k]) for k in range(1, self.size)], shorter=True)
        except _BLOCK_ERRORS:
            self._abort(self._tree(0)[1], [])  # the broadcast that follows: abort notices
            raise

    def _Allgather_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        try:
            send, recv, block, scatter = self._allgather_args(sendbuf, recvbuf)
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._fail_gather_bcast()
            raise
        yield from self._gather_to_zero(send, [recv[k * block : (k + 1) * block] for k in range(self.size)])
        yield from self._bcast_steps(recv, 0)
        if scatter is not None:
            scatter()

    def _allgather_args(
        self, sendbuf: Any, recvbuf: Any
    ) -> tuple[memoryview, memoryview, int, Scatter | None]:
        size, rank = self.size, self.rank
        recv, block, scatter = landing(recvbuf, size, writable=True)
        if _in_place(sendbuf):
            send = memoryview(bytes(recv[rank * block : (rank + 1) * block]))
        else:  # block k lands at k times the receive count, which bounds each block (as MPI's)
            send = one_block(sendbuf, writable=False)[0]
            _own_fits(len(send), block, "Allgather")
        return send, recv, block, scatter

    def _Allgatherv_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        try:
            recv, counts, displs, scatter = vector_landing(recvbuf, self.size, writable=True)
            blocks = [recv[displs[k] : displs[k] + counts[k]] for k in range(self.size)]
            mine = blocks[self.rank]
            send = memoryview(bytes(mine)) if _in_place(sendbuf) else one_block(sendbuf, writable=False)[0]
            _own_fits(len(send), len(mine), "Allgatherv")  # (rank 0 cut its own block to its count)
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._fail_gather_bcast()
            raise
        yield from self._gather_to_zero(send, blocks)
        # Broadcast the blocks packed, so the gaps between them stay untouched, as in MPI.
        packed = bytearray(b"".join(blocks) if self.rank == 0 else sum(counts))
        yield from self._bcast_steps(memoryview(packed), 0)
        offset = 0
        for block in blocks:
            block[:] = packed[offset : offset + len(block)]
            offset += len(block)
        if scatter is not None:
            scatter()
