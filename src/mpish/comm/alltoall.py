"""Alltoall, Alltoallv and Alltoallw of a secure communicator: a pairwise exchange, on collectives.py.

Same rules as collectives.py (its theory of operation: steps, one lane, explicit sources).
At step k a rank sends its block for rank + k and receives the block of rank - k, so each
rank receives from every other exactly once, in an order both sides know.

No rank left behind: a rank whose own buffers are wrong raises at the call and still takes
its part, sending an abort notice where each of its blocks was due and receiving (and
dropping) each block sent to it; a rank that receives a notice or a wrong block goes on
with the exchange (its blocks still go out, the rest is received and dropped), then raises
the first error. So every rank fails or none does, and no record is left for a later call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .buffers import (
    bottom_blocks,
    free_blocks,
)
from .collectives import _BLOCK_ERRORS, COLL_TAG, Collectives, Steps, _in_place, _own_fits
from .gapped import Scatter, landing
from .lane import wait_all
from .packing import pack, unpack
from .vectors import typed_vector_view, vector_landing

Blocks = tuple[list[memoryview], list[memoryview]]  # (block k to rank k, block k from rank k)


class AllToAll(Collectives):
    """The all-to-all collectives of SecureComm (mixin over :class:`Collectives`)."""

    def _exchange(self, blocks: Blocks | None, shorter: bool = True) -> Steps[None]:
        """Pairwise exchange of ``blocks``; None: this rank failed (abort notices, all dropped).
        ``shorter``: a block shorter than its receive block is taken (a receive count is an
        upper bound to MPI; this rank's own block fits: _blocks_or_fail checked it)."""
        rank, size = self.rank, self.size
        if blocks is not None:
            own = blocks[0][rank]
            blocks[1][rank][: len(own)] = own
        error: BaseException | None = None
        for step in range(1, size):
            dest, source = (rank + step) % size, (rank - step) % size
            if blocks is None:
                requests, _records = self._c_isend(memoryview(b""), dest, abort=True)
            else:
                requests, _records = self._c_isend(blocks[0][dest], dest)
            yield source
            try:
                if error is None and blocks is not None:
                    self._c_recv(source, blocks[1][source], shorter)
                else:
                    self._coll.recv(source, COLL_TAG, None)
            except _BLOCK_ERRORS as exc:  # the rest is still exchanged, then this raises
                error = exc
            wait_all(requests)
        if error is not None:
            raise error

    def _blocks_or_fail(self, make_blocks: Callable[[], Any]) -> Steps[Any]:
        """``make_blocks()``; if it raises (this rank's buffers), take part failing, then raise."""
        try:
            pair = make_blocks()
            if pair is not None:
                _own_fits(len(pair[0][self.rank]), len(pair[1][self.rank]), "all-to-all")
            return pair
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (collectives.py)
            yield from self._exchange(None)
            raise

    def _Alltoall_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        size = self.size
        scatters = []  # a receive datatype with gaps: the received bytes to their places (gapped.py)

        def blocks() -> Blocks:
            recv, rblock, scatter = landing(recvbuf, size, writable=True)
            scatters.append(scatter)
            if _in_place(sendbuf):
                send, sblock = memoryview(bytes(recv)), rblock
            else:
                send, sblock, _ = landing(sendbuf, size, writable=False)
            return ([send[k * sblock : (k + 1) * sblock] for k in range(size)],
                    [recv[k * rblock : (k + 1) * rblock] for k in range(size)])

        pair = yield from self._blocks_or_fail(blocks)
        yield from self._exchange(pair)
        if scatters[0] is not None:
            scatters[0]()

    def _Alltoallv_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        scatters: list[Scatter | None] = []  # a receive datatype with gaps (vectors.py)
        pair = yield from self._blocks_or_fail(
            lambda: self._vector_blocks(sendbuf, recvbuf, vector_landing, scatters))
        yield from self._exchange(pair)
        if scatters[0] is not None:
            scatters[0]()

    def _Alltoallw_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        """Blocks at absolute addresses (MPI.BOTTOM) travel packed by MPI inside this process."""
        made: list[Any] = []  # the datatypes made here, freed whatever happens

        def blocks() -> Blocks:
            made.append(None if _in_place(sendbuf) else bottom_blocks(sendbuf, self.size))
            made.append(bottom_blocks(recvbuf, self.size, writable=True))
            out, into = made
            if out is None and into is None:
                return self._vector_blocks(sendbuf, recvbuf, typed_vector_view)
            return self._bottom_blocks(sendbuf, recvbuf, out, into)

        try:
            pair = yield from self._blocks_or_fail(blocks)
            # (received packed and unpacked whole: a shorter block would scatter stale bytes)
            yield from self._exchange(pair, shorter=made[1] is None)
            if made[1] is not None:  # received packed: unpacked to their addresses
                for (spec, _), data in zip(made[1], pair[1], strict=True):
                    unpack(data, spec)
        finally:
            for specs in made:
                free_blocks(specs)

    def _bottom_blocks(self, sendbuf: Any, recvbuf: Any, out: Any, into: Any) -> Blocks:
        """Alltoallw's blocks where some are at absolute addresses: packed, and unpacked after."""
        size = self.size
        if into is None:
            recv, rcounts, rdispls = typed_vector_view(recvbuf, size, writable=True)
            blocks_in = [recv[rdispls[k] : rdispls[k] + rcounts[k]] for k in range(size)]
        else:
            blocks_in = [memoryview(bytearray(n)) for _, n in into]
        if out is not None:
            blocks_out = [pack(spec, n) for spec, n in out]
        elif _in_place(sendbuf):
            blocks_out = [pack(spec, n) for spec, n in into]  # in place: the receive blocks
        else:
            send, scounts, sdispls = typed_vector_view(sendbuf, size, writable=False)
            blocks_out = [send[sdispls[k] : sdispls[k] + scounts[k]] for k in range(size)]
        return blocks_out, blocks_in

    def _vector_blocks(self, sendbuf: Any, recvbuf: Any, view: Any,
                       scatters: list[Any] | None = None) -> Blocks:
        """Alltoallv/w: ``view`` reads a buffer spec as (bytes, counts, displacements) in bytes,
        and (vector_landing) what scatters the received bytes, put in ``scatters``."""
        size = self.size
        recv, rcounts, rdispls, *scatter = view(recvbuf, size, writable=True)
        if scatters is not None:
            scatters.extend(scatter)
        if _in_place(sendbuf):
            send, scounts, sdispls = memoryview(bytes(recv)), rcounts, rdispls
        else:
            send, scounts, sdispls, *_ = view(sendbuf, size, writable=False)
        return ([send[sdispls[k] : sdispls[k] + scounts[k]] for k in range(size)],
                [recv[rdispls[k] : rdispls[k] + rcounts[k]] for k in range(size)])
