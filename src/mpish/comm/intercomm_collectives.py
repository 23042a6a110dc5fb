"""The collectives of a secure intercommunicator beyond Barrier, Bcast and Allreduce
(intercomm.py): rooted ``Gather``/``Gatherv``/``gather``, ``Scatter``/``Scatterv``/``scatter``,
``Reduce``/``reduce``, and ``Allgather``/``Allgatherv``/``allgather``,
``Alltoall``/``Alltoallv``/``alltoall``, ``Reduce_scatter_block``, with MPI's
intercommunicator semantics (MPI 4.0 §6.2.2), on the building blocks they share with
intercomm.py's (the exchange with every rank of the other group, the fold in rank order).

Theory of operation
-------------------
Roots. In a rooted collective the root passes ``MPI.ROOT``, the other ranks of its group
``MPI.PROC_NULL`` (they take no part and return at once: ``None`` in the object forms), and
every rank of the other group names the root's rank. Gathers and reductions: each rank of
the other group sends its block to the root, which takes them in rank order (into block k
of its receive buffer, or folded with ``Op.Reduce_local`` in rank order: right for
non-commutative operations); the root's send buffer is not used. Scatters: the root sends
block k of its send buffer to rank k of the other group; its receive buffer is not used.

All to all. Each rank sends to every rank of the other group directly, on the collective
lane: the same block (``Allgather(v)``, ``allgather``) or block k to rank k (``Alltoall(v)``,
``alltoall``, ``Reduce_scatter_block``), then takes one record from each, in rank order, so
each group receives the other group's contributions in the other group's rank order.
``Reduce_scatter_block``: a rank's send buffer splits into as many blocks as the other group
has ranks; each rank folds the blocks it receives, in rank order, into its receive buffer.

Sizes come from this rank's own buffers, as mpi4py reads them: a receive buffer without
counts splits evenly over the other group. A record of another size than its block is a
``RemoteProtocolError``; ``MPI.IN_PLACE`` has no meaning on an intercommunicator (MPI):
a ``ValueError``. Objects are unpickled only from authenticated records.

No rank left behind (as intercomm.py): a rank whose arguments are wrong still takes part,
with abort notices where its blocks were due, and receives and drops what was sent to it;
a rank that receives a notice, a block of the wrong size, or cannot fold or unpickle one,
receives and drops the rest of the collective's records, then raises. So the failing rank
raises, and so does every rank that waited for a block from it; nothing is left queued for
a later call. As on an intracommunicator, each collective is written as its steps
(collectives.py), so its ``I``-form is started (nonblocking.py). A root outside the other
group is MPI's ``ERR_ROOT`` on that rank; that rank then takes no part (it cannot tell which
record is its own), so a root value wrong on one rank only, which MPI calls an erroneous
program, may leave the root's record queued or the root waiting: free the communicator after
such an error.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from ..wire.errors import RemoteProtocolError
from .buffers import block_view, byte_view, check_op, typed_spec
from .collectives import COLL_TAG, Steps, _dumps, _in_place, _loads, run
from .lane import Lane, wait_all
from .vectors import vector_view


def _into(blocks: list[memoryview], what: str) -> Callable[[int, Any], None]:
    """A receiver copying the record of rank k into ``blocks[k]`` (the sizes must match)."""

    def receive(peer: int, data: Any) -> None:
        if len(data) != len(blocks[peer]):
            expected = len(blocks[peer])
            raise RemoteProtocolError(f"{what}: {len(data)} bytes from rank {peer}, expected {expected}")
        blocks[peer][:] = data

    return receive


def _folder(typed: Any, size: int, op: Any, what: str) -> tuple[Callable[[int, Any], None], list[bytearray]]:
    """A receiver folding records of ``size`` bytes, in rank order, with ``op`` on the datatype of
    buffer argument ``typed``; and the list that holds the result once all are in."""
    acc: list[bytearray] = []

    def fold(peer: int, data: Any) -> None:  # Reduce_local(in, inout): inout = in op inout
        if len(data) != size:
            raise RemoteProtocolError(f"{what}: {len(data)} bytes from rank {peer}, expected {size}")
        incoming = bytearray(data)
        if acc:
            op.Reduce_local(typed_spec(typed, acc[0], size), typed_spec(typed, incoming, size))
            acc[0] = incoming
        else:
            acc.append(incoming)

    return fold, acc


def _blocks(view: memoryview, counts: list[int], displs: list[int]) -> list[memoryview]:
    return [view[d : d + c] for c, d in zip(counts, displs, strict=True)]


def _even(view: memoryview, block: int, n: int) -> list[memoryview]:
    return [view[k * block : (k + 1) * block] for k in range(n)]


def _not_in_place(*bufs: Any) -> None:
    if any(_in_place(buf) for buf in bufs):
        raise ValueError("MPI.IN_PLACE is not valid on an intercommunicator")


class InterCollectives:
    """Collectives of SecureIntercomm (a mixin of intercomm.py's Intercomm): module doc."""

    _coll: Lane
    _c_recv_into: Any
    _c_recv_bytes: Any
    _c_send: Any
    _c_isend: Any
    _c_abort: Any
    _recv_or_drop_steps: Any  # collectives.py: this rank's block from ``root``, dropped if buf is wrong
    _root_role: Any  # intercomm.py: "send" (this rank is the root), "receive" (the root is remote), "none"

    # -- building blocks

    def _remotes(self) -> range:
        return range(self._coll.size)

    def _receive_each(self, receive: Callable[[int, Any], None]) -> Steps[None]:
        """Hand the record of each rank of the other group, in rank order, to ``receive``; after
        an error the rest are received and dropped, then the first error raises."""
        error: BaseException | None = None
        for peer in self._remotes():
            yield peer
            try:
                if error is None:
                    receive(peer, self._c_recv_bytes(peer))
                else:
                    self._coll.recv(peer, COLL_TAG, None)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def _drop_each(self, error: BaseException) -> Steps[None]:
        """This rank (a root) failed (``error``, raised by the call): receive and drop the
        record of every rank of the other group."""
        yield error
        for peer in self._remotes():
            yield peer
            self._coll.recv(peer, COLL_TAG, None)

    def _exchange_each(
        self, blocks: list[memoryview] | None, receive: Callable[[int, Any], None]
    ) -> Steps[None]:
        """Send ``blocks[k]`` to rank k of the other group (None: abort notices) and hand the
        record of each to ``receive`` (:meth:`_receive_each`); nothing is left behind."""
        requests, records = [], []  # the blocking form's (a started one keeps its own)
        for peer in self._remotes():
            block = memoryview(b"") if blocks is None else blocks[peer]
            sent, kept = self._c_isend(block, peer, abort=blocks is None)
            requests += sent
            records.append(kept)
        try:
            yield from self._receive_each(receive)
        finally:
            wait_all(requests)

    def _send_each(self, make: Callable[[], list[memoryview]]) -> None:
        """The root: block k of ``make()`` to rank k of the other group; abort notices if it raises."""
        try:
            blocks = make()
        except Exception:
            for peer in self._remotes():
                self._c_abort(peer)
            raise
        requests, records = [], []
        for peer in self._remotes():
            sent, kept = self._c_isend(blocks[peer], peer)
            requests += sent
            records.append(kept)
        wait_all(requests)

    def _send_to_root(self, make: Callable[[], memoryview], root: int) -> None:
        """This rank's block to the root in the other group; an abort notice if ``make`` raises."""
        try:
            data = make()
        except Exception:
            self._c_abort(root)
            raise
        self._c_send(data, root)

    def _failed_exchange(self, error: BaseException) -> Steps[None]:
        """This rank's arguments were wrong (``error``, raised by the call): take part with
        abort notices; the caller raises."""
        yield error
        with contextlib.suppress(Exception):
            yield from self._exchange_each(None, lambda peer, data: None)

    # -- gathers

    def _gather(
        self, what: str, sendbuf: Any, root: int, sinks: Callable[[], list[memoryview]]
    ) -> Steps[None]:
        """The root: the record of rank k of the other group into block k of ``sinks()``; the
        other group: this rank's ``sendbuf`` to the root."""
        role = self._root_role(root)
        if role == "receive":
            self._send_to_root(lambda: byte_view(sendbuf, writable=False), root)
        elif role == "send":
            try:
                blocks = sinks()
            except Exception as exc:
                yield from self._drop_each(exc)
                raise
            yield from self._receive_each(_into(blocks, what))

    def _Gather_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        n = self._coll.size
        yield from self._gather("Gather", sendbuf, root,
                                lambda: _even(*block_view(recvbuf, n, writable=True), n))

    def _Gatherv_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        n = self._coll.size
        yield from self._gather("Gatherv", sendbuf, root,
                                lambda: _blocks(*vector_view(recvbuf, n, writable=True)))

    def gather(self, sendobj: Any, root: int = 0) -> list[Any] | None:
        role = self._root_role(root)
        if role == "receive":
            self._send_to_root(lambda: _dumps(sendobj), root)
        elif role == "send":
            items: list[Any] = []
            run(self._receive_each(lambda peer, data: items.append(_loads(data))))
            return items
        return None

    # -- scatters

    def _scatter(self, recvbuf: Any, root: int, blocks: Callable[[], list[memoryview]]) -> Steps[None]:
        """The root: block k of ``blocks()`` to rank k of the other group; the other group: this
        rank's block into ``recvbuf``."""
        role = self._root_role(root)
        if role == "send":
            self._send_each(blocks)
        elif role == "receive":
            yield from self._recv_or_drop_steps(recvbuf, root)  # collectives.py: dropped if recvbuf is wrong

    def _Scatter_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        n = self._coll.size
        yield from self._scatter(recvbuf, root, lambda: _even(*block_view(sendbuf, n, writable=False), n))

    def _Scatterv_steps(self, sendbuf: Any, recvbuf: Any, root: int = 0) -> Steps[None]:
        n = self._coll.size
        yield from self._scatter(recvbuf, root, lambda: _blocks(*vector_view(sendbuf, n, writable=False)))

    def scatter(self, sendobj: Any, root: int = 0) -> Any:
        role = self._root_role(root)
        if role == "send":
            self._send_each(lambda: self._remote_items(sendobj, "scatter"))
        elif role == "receive":
            return _loads(self._c_recv_bytes(root))
        return None

    def _remote_items(self, sendobj: Any, what: str) -> list[memoryview]:
        n = self._coll.size
        items = [None] * n if sendobj is None else list(sendobj)
        if len(items) != n:
            raise ValueError(f"{what}: expected {n} items (the other group's size), got {len(items)}")
        return [_dumps(item) for item in items]

    # -- reductions to a root

    def _Reduce_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM, root: int = 0) -> Steps[None]:
        role = self._root_role(root)
        if role == "receive":

            def contribution() -> memoryview:
                send = byte_view(sendbuf, writable=False)
                typed_spec(sendbuf, bytearray(len(send)), len(send))  # a datatype MPI can reduce
                check_op(op, sendbuf)  # with this operation (buffers.check_op)
                return send

            self._send_to_root(contribution, root)
        elif role == "send":
            try:
                recv = byte_view(recvbuf, writable=True)
                typed_spec(recvbuf, bytearray(len(recv)), len(recv))
                check_op(op, recvbuf)
            except Exception as exc:
                yield from self._drop_each(exc)
                raise
            fold, acc = _folder(recvbuf, len(recv), op, "Reduce")
            yield from self._receive_each(fold)
            recv[:] = acc[0]

    def reduce(self, sendobj: Any, op: Any = MPI.SUM, root: int = 0) -> Any:
        items = self.gather(sendobj, root)
        return None if items is None else functools.reduce(op, items)  # in rank order

    # -- all to all

    def _all(self, what: str, args: Callable[[], tuple[list[memoryview], list[memoryview]]]) -> Steps[None]:
        """Block k of the first list to rank k of the other group, its record into block k of the second."""
        try:
            out, into = args()
        except Exception as exc:
            yield from self._failed_exchange(exc)
            raise
        yield from self._exchange_each(out, _into(into, what))

    def _Allgather_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        n = self._coll.size

        def args() -> tuple[list[memoryview], list[memoryview]]:
            _not_in_place(sendbuf)
            return [byte_view(sendbuf, writable=False)] * n, _even(*block_view(recvbuf, n, writable=True), n)

        yield from self._all("Allgather", args)

    def _Allgatherv_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        n = self._coll.size

        def args() -> tuple[list[memoryview], list[memoryview]]:
            _not_in_place(sendbuf)
            return [byte_view(sendbuf, writable=False)] * n, _blocks(*vector_view(recvbuf, n, writable=True))

        yield from self._all("Allgatherv", args)

    def _Alltoall_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        n = self._coll.size

        def args() -> tuple[list[memoryview], list[memoryview]]:
            _not_in_place(sendbuf)
            out = _even(*block_view(sendbuf, n, writable=False), n)
            return out, _even(*block_view(recvbuf, n, writable=True), n)

        yield from self._all("Alltoall", args)

    def _Alltoallv_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        n = self._coll.size

        def args() -> tuple[list[memoryview], list[memoryview]]:
            _not_in_place(sendbuf)
            out = _blocks(*vector_view(sendbuf, n, writable=False))
            return out, _blocks(*vector_view(recvbuf, n, writable=True))

        yield from self._all("Alltoallv", args)

    def allgather(self, sendobj: Any) -> list[Any]:
        try:
            data = _dumps(sendobj)
        except Exception as exc:
            run(self._failed_exchange(exc))
            raise
        items: list[Any] = []
        run(self._exchange_each([data] * self._coll.size, lambda peer, record: items.append(_loads(record))))
        return items

    def alltoall(self, sendobj: Any) -> list[Any]:
        try:
            blocks = self._remote_items(sendobj, "alltoall")
        except Exception as exc:
            run(self._failed_exchange(exc))
            raise
        items: list[Any] = []
        run(self._exchange_each(blocks, lambda peer, record: items.append(_loads(record))))
        return items

    def _Reduce_scatter_block_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> Steps[None]:
        n = self._coll.size
        try:
            _not_in_place(sendbuf)
            send = byte_view(sendbuf, writable=False)
            recv = byte_view(recvbuf, writable=True)
            if len(send) % n:
                raise ValueError(f"Reduce_scatter_block: {len(send)} bytes do not split into {n} blocks")
            typed_spec(recvbuf, bytearray(len(recv)), len(recv))  # a datatype MPI can reduce
            check_op(op, recvbuf)
        except Exception as exc:
            yield from self._failed_exchange(exc)
            raise
        fold, acc = _folder(recvbuf, len(recv), op, "Reduce_scatter_block")
        yield from self._exchange_each(_even(send, len(send) // n, n), fold)
        recv[:] = acc[0]
