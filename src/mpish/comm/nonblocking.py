"""Nonblocking collectives of a secure communicator: Ibarrier is one; the others run at the call.

Theory of operation
-------------------
MPI lets a nonblocking collective progress at any time between its start and its
completion, and requires every rank to start the collectives of a communicator in the
same order.

``Ibarrier`` is truly nonblocking (:class:`StartedBarrier`): it sends and receives the
blocking Barrier's messages (every rank to 0, then 0's tree broadcast, collectives.py) as
they can be, in ``Test``/``Wait`` and the progress thread. The NBX sparse exchange
(``issend``s, then ``Ibarrier`` while probing for messages until the barrier completes;
PETSc builds its two-sided exchanges on it) hung when Ibarrier waited for every rank at the
call: a rank that had finished could not receive a late rank's message. The collective lane
delivers a source's records in order, and a later collective's first record from a rank can
only come after that rank's barrier messages: so before this rank starts any other
collective of the communicator, it completes its started barriers' messages (blocking, as
that collective would block anyway; every public collective does so at its entry,
:data:`COLLECTIVES`), and the barrier's records are never taken by another. Several started
Ibarriers go in the order they were started, none waiting for another at its start.

The other nonblocking collectives run the blocking algorithm when started and return a
request that is already complete: ``Wait``/``Test`` return at once, the buffers may be
reused as soon as the call returns. This is correct for every program in which each rank
starts the collective before it blocks on something another rank does only after starting
it (the usual overlap pattern: start, compute or point-to-point, wait). A program that
starts one and then blocks in a receive that another rank only satisfies before starting
the same collective would hang here, where it completes on MPI (README: remaining
differences).

Persistent collectives (``Bcast_init``...: MPI 4) are persistent requests (persistent.py)
whose every start runs the nonblocking form. They start by their own ``Start`` or
``mpish.comm.Startall``, in the caller's order; MPI's ``MPI.Prequest.Startall`` refuses
them with ``ERR_REQUEST``, since the progress thread that notices MPI's starts could run two
of them in another order than another rank.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from .collectives import COLL_TAG
from .persistent import PersistentRequest
from .reductions import Reductions
from .requests import SecureRequest


class StartedBarrier:
    """One rank's part of a started Ibarrier: the blocking Barrier's messages, each sent or
    received when it can be (:meth:`step`)."""

    def __init__(self, comm: Reductions, before: StartedBarrier | None) -> None:
        self.lane = comm._coll
        self.before = before  # the Ibarrier started just before, not done yet: its records come first
        self.waiting = list(range(1, comm.size)) if comm.rank == 0 else []  # root: whose arrival
        self.parent, self.children = comm._tree(0)
        self.done = False
        self.busy = False  # in step: the progress thread must not step it at the same time
        if comm.rank != 0:  # after the earlier barriers' arrivals: MPI keeps one sender's order
            self.lane.send(memoryview(b""), 0, COLL_TAG)  # an empty record: MPI sends it eagerly

    def _arrived(self, source: int, block: bool) -> bool:
        if not block and self.lane.probe(source, MPI.ANY_TAG, block=False) is None:
            return False
        self.lane.recv(source, MPI.ANY_TAG, memoryview(bytearray()))
        return True

    def step(self, block: bool) -> bool:
        """Go as far as possible (to the end if ``block``); True once this rank's part is done.
        An earlier started barrier goes first (its records come first from every rank)."""
        if self.done:
            return True
        if self.busy:  # another thread is inside (the program's Wait, unlocked while it polls)
            return False
        self.busy = True
        try:
            if self.before is not None:
                if not self.before.step(block):
                    return False
                self.before = None
            return self._own_steps(block)
        finally:
            self.busy = False

    def _own_steps(self, block: bool) -> bool:
        while not self.done:
            if self.waiting:
                if not self._arrived(self.waiting[0], block):
                    return False
                self.waiting.pop(0)
            elif self.parent is not None:
                if not self._arrived(self.parent, block):
                    return False
                self.parent = None
            else:
                for child in self.children:
                    self.lane.send(memoryview(b""), child, COLL_TAG)
                self.done = True
        return True


def _started(name: str) -> Callable[..., SecureRequest]:
    def start(self: Reductions, *args: Any, **kwargs: Any) -> SecureRequest:
        getattr(self, name)(*args, **kwargs)  # the public form: after any started Ibarrier
        return SecureRequest(self._coll)

    start.__name__ = "I" + name[0].lower() + name[1:]
    start.__doc__ = f"{name}, run at the call; the returned request is complete (module doc)."
    return start


def persistent(name: str) -> Callable[..., PersistentRequest]:
    """``<name>_init``: each start runs the ``I``-form (module doc). MPI's own Start/Startall
    refuse it (ERR_REQUEST): noticed by the progress thread, two started at once could run
    in another order on another rank, and collectives must run in one order everywhere."""
    start_name = "I" + name[0].lower() + name[1:]
    signature = inspect.signature(getattr(MPI.Cartcomm if name.startswith("Neighbor") else MPI.Intracomm,
                                          name + "_init"))  # mpi4py's: its names are ours too

    def init(self: Reductions, *args: Any, **kwargs: Any) -> PersistentRequest:
        arguments = signature.bind(self, *args, **kwargs).arguments  # a wrong call fails here, as mpi4py's
        arguments.pop("self")
        arguments.pop("info", None)  # hints only
        if "root" in arguments:
            self._root(arguments["root"])  # ERR_ROOT at the call, as MPI checks it
        return PersistentRequest(self._coll, lambda: getattr(self, start_name)(**arguments), by_mpi=False)

    init.__name__ = name + "_init"
    init.__doc__ = f"Persistent {name}: each Start runs it (its own Start or mpish.comm.Startall)."
    return init


COLLECTIVES = ("Barrier", "barrier", "Bcast", "bcast", "Gather", "gather", "Gatherv", "Scatter", "scatter",
               "Scatterv", "Allgather", "allgather", "Allgatherv", "Alltoall", "alltoall", "Alltoallv",
               "Alltoallw", "Reduce", "reduce", "Allreduce", "allreduce", "Reduce_scatter",
               "Reduce_scatter_block", "Scan", "scan", "Exscan", "exscan")


def _after_started_barriers(method: Callable[..., Any]) -> Callable[..., Any]:
    def collective(self: Reductions, *args: Any, **kwargs: Any) -> Any:
        if self._started:
            self._settle_started()
        return method(self, *args, **kwargs)

    collective.__name__, collective.__doc__ = method.__name__, method.__doc__
    return collective


class NonBlocking(Reductions):
    """The ``I``-collectives of SecureComm (mixin over :class:`Reductions`)."""

    def Ibarrier(self) -> SecureRequest:
        """Barrier, started: complete once every rank has started it (module doc)."""
        self._started[:] = [started for started in self._started if not started.done]
        barrier = StartedBarrier(self, self._started[-1] if self._started else None)
        self._started.append(barrier)
        return SecureRequest(self._coll, steps=barrier.step)

    ibarrier = Ibarrier
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


for _name in COLLECTIVES:  # each public collective first finishes the started Ibarriers' records
    setattr(NonBlocking, _name, _after_started_barriers(getattr(NonBlocking, _name)))
    if _name[0].isupper():
        setattr(NonBlocking, _name + "_init", persistent(_name))
