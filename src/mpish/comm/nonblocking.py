"""Nonblocking collectives of a secure communicator: each runs its blocking form at the call.

Theory of operation
-------------------
MPI lets a nonblocking collective progress at any time between its start and its
completion, and requires every rank to start the collectives of a communicator in the
same order. mpish runs the blocking algorithm (collectives.py) when the operation is
started and returns a request that is already complete: ``Wait``/``Test`` return at
once, the buffers may be reused as soon as the call returns. This is correct for every
program in which each rank starts the collective before it blocks on something another
rank does only after starting it (the usual overlap pattern: start, compute or
point-to-point, wait). A program that relies on starting a collective and then
blocking in a receive that another rank only satisfies before starting the same
collective would hang here, where it completes on MPI (README: remaining differences).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reductions import Reductions
from .requests import SecureRequest


def _started(name: str) -> Callable[..., SecureRequest]:
    blocking = getattr(Reductions, name)

    def start(self: Reductions, *args: Any, **kwargs: Any) -> SecureRequest:
        blocking(self, *args, **kwargs)
        return SecureRequest(self._coll)

    start.__name__ = "I" + name[0].lower() + name[1:]
    start.__doc__ = f"{name}, run at the call; the returned request is complete (module doc)."
    return start


class NonBlocking(Reductions):
    """The ``I``-collectives of SecureComm (mixin over :class:`Reductions`)."""

    Ibarrier = _started("Barrier")
    Ibcast = _started("Bcast")
    Igather = _started("Gather")
    Igatherv = _started("Gatherv")
    Iscatter = _started("Scatter")
    Iscatterv = _started("Scatterv")
    Iallgather = _started("Allgather")
    Iallgatherv = _started("Allgatherv")
    Ialltoall = _started("Alltoall")
    Ialltoallv = _started("Alltoallv")
    Ialltoallw = _started("Alltoallw")
    Ireduce = _started("Reduce")
    Iallreduce = _started("Allreduce")
    Ireduce_scatter_block = _started("Reduce_scatter_block")
    Ireduce_scatter = _started("Reduce_scatter")
    Iscan = _started("Scan")
    Iexscan = _started("Exscan")
