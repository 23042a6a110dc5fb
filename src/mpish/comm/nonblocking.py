"""The blocking and nonblocking forms of the collectives of a secure communicator.

Theory of operation
-------------------
MPI lets a nonblocking collective progress at any time between its start and its
completion, requires every rank to start the collectives of a communicator in the same
order, and (in practice, on both MPIs) progresses a started collective inside every later
MPI call: a program may start ``Iallreduce`` and then block in a receive that another rank
satisfies only after it started the same ``Iallreduce``, or after it waited for it.

Each collective is written once, as its steps (collectives.py: a generator that yields the
source of the record it needs next). The blocking form (``Bcast``) takes them all at once
(``collectives.run``). The started form (``Ibcast``) is a :class:`Started`: its steps run at
the call as far as they can without waiting, then resume whenever the record they wait for
has arrived (``lane.probe``, which authenticates it first), in ``Test``/``Wait``, in the
progress thread, and in every blocking secure call meanwhile (:class:`_Pending` is in
posted's ``_ACTIVE`` while a started collective has steps left: those calls poll, and each
poll resumes it). Its sends are nonblocking (``Collectives._issuing``): it never waits for
a receiver that waits for this rank. The request completes once every step is taken and
every send is done. An error in a later step (another rank's abort notice) is raised by the
request's ``Wait``/``Test``, as MPI's error of a nonblocking call; a local one (a wrong
buffer, found before any receive) is raised by the call (by ``Wait`` if the call found an
earlier started collective still waiting, so that its steps had not begun).

Order. The collective lane delivers a source's records in order and has one tag, so the
steps of a collective may run only after every earlier started one took all of its steps:
a :class:`Started` resumes its predecessor (``before``) first, and a blocking collective
first takes the remaining steps of every started one (``_settle_started``, at the entry of
every public collective: :data:`COLLECTIVES`). A started collective whose predecessor is
still waiting sends nothing yet either (its records would overtake the predecessor's).

The neighbourhood collectives of topologies (topology.py) and the collectives of
intercommunicators (intercomm.py, intercomm_collectives.py) are steps too, started the same way.

Persistent collectives (``Bcast_init``...: MPI 4) are persistent requests (persistent.py)
whose every start starts the collective (:func:`persistent`), as its ``I``-form: started by
their own ``Start``, ``mpish.comm.Startall`` or MPI's ``MPI.Prequest.Startall``, completed by
any wait, MPI's included. Starts run in the order they were made, and every collective's
entry first runs the starts not run yet (``persistent.notice_starts``), so a rank whose start
MPI made (noticed by the progress thread, maybe later) runs its collectives in the same
order as a rank that called ``Start``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from .collectives import COLL_TAG, Collectives, Issuing, Steps, run
from .lane import _ACTIVE, wait_all
from .packing import own_datatypes
from .persistent import PersistentRequest, notice_starts
from .posted import detach
from .reductions import Reductions
from .requests import SecureRequest


class Started(Issuing):
    """One rank's part of a started collective: its steps, resumed whenever the record they
    wait for has arrived (module doc); called with ``block`` by its request: True once done."""

    def __init__(self, comm: Collectives, steps: Steps[Any], before: Started | None) -> None:
        self.comm, self.lane, self.steps = comm, comm._coll, steps
        self.lane.hold(+1)
        self.before = before  # started just before, steps left: its records come first
        self.source: int | None = None  # the source whose record the steps wait for
        self.requests, self.records = [], []  # of its sends (Issuing)
        self.error: BaseException | None = None  # what a step raised: the request's error
        self.refused = False  # it failed before its first receive: a local error, raised by the call
        self.done = False  # every step taken
        self.busy = False  # taking steps: the progress of a call inside them must not re-enter

    def issue(self, block: bool) -> bool:
        """Take the steps that can be taken (every one if ``block``); True once all are."""
        if self.done:
            return True
        if self.busy:
            return False
        self.busy = True
        try:
            if self.before is not None:
                if not self.before.issue(block):
                    return False
                self.before = None
            if not block:
                return self._resume(block)
            # Waiting for its records, this rank has nothing else of this communicator's to
            # progress (its later started collectives come after this one): off _PENDING, its
            # receives block in MPI instead of polling, which starved the sender of a CPU
            # (3 ranks on 2 cores: 3 ms per Iallreduce + Wait).
            held = _PENDING.hold(self.comm)
            try:
                return self._resume(block)
            finally:
                _PENDING.resume(held)
        finally:
            self.busy = False

    def _resume(self, block: bool) -> bool:
        comm = self.comm
        outer, comm._issuing = comm._issuing, self
        try:
            while not self.done:
                waiting = self.source is not None and not block
                if waiting and self.lane.probe(self.source, COLL_TAG, block=False) is None:  # type: ignore[arg-type]
                    return False  # (an error of the probe is the caller's: the steps stay as they are)
                self._step()
        finally:
            comm._issuing = outer
        _PENDING.discard(self)
        self.lane.hold(-1)
        if self.refused and self.requests:  # no request will wait for its abort notices
            detach(self.requests, self.records)
            self.requests, self.records = [], []
        return True

    def _step(self) -> None:
        try:
            need = next(self.steps)
        except StopIteration:
            self.done = True
            self.comm._abort_origin = None
            self.error = self.comm._deferred.take()  # strict mode's error, once the collective is whole
        except Exception as exc:  # this collective failed here: the request raises it
            self.error, self.done = exc, True
            self.comm._abort_origin = None
            self.comm._deferred.take()
            self.refused = self.refused or self.source is None  # before any receive: its arguments
        else:
            if isinstance(need, BaseException):  # this rank's own arguments (collectives.py)
                self.error, self.refused, self.source = need, True, None
            else:
                self.source = need

    def __call__(self, block: bool) -> bool:
        """The request's test (``block``: its wait): every step taken, every send done."""
        if not self.issue(block):
            return False
        if self.requests:
            if block:
                wait_all(self.requests)
            elif not MPI.Request.Testall(self.requests):
                return False
            self.requests, self.records = [], []
        return True


class _Pending:
    """The started collectives with steps left, in posted's ``_ACTIVE`` while there are any:
    every blocking secure call then polls, and its polls resume them (module doc). Held
    strongly: a collective goes on for the other ranks' sake even if its request was dropped."""

    def __init__(self) -> None:
        self.started: list[Started] = []
        self.polling = False  # in progress(): a nested call returns at once

    def progress(self) -> None:
        """Each started collective's next steps; a poll that moved none gives the CPU away (a
        rank that spins starves its peers when ranks outnumber the cores). Not nested: a step's
        probe polls too, and each level resuming every other communicator's collectives cost
        N! probes for N communicators (helper-103)."""
        if self.polling:
            return
        self.polling = True
        try:
            if not any([started.issue(block=False) for started in list(self.started)]):
                os.sched_yield()
        finally:
            self.polling = False

    def hold(self, comm: Any) -> list[Started]:
        """Take ``comm``'s started collectives off the list for a while (:meth:`Started.issue`)."""
        held = [started for started in self.started if started.comm is comm]
        for started in held:
            self.discard(started)
        return held

    def resume(self, held: list[Started]) -> None:
        for started in held:
            if not started.done:
                self.add(started)

    def add(self, started: Started) -> None:
        self.started.append(started)
        _ACTIVE.add(self)  # type: ignore[arg-type]  # it has the one method progress() calls

    def discard(self, started: Started) -> None:
        if started in self.started:
            self.started.remove(started)
        if not self.started:
            _ACTIVE.discard(self)


_PENDING = _Pending()


STEPPED = ("Barrier", "Bcast", "Gather", "Gatherv", "Scatter", "Scatterv", "Allgather", "Allgatherv",
           "Alltoall", "Alltoallv", "Alltoallw", "Reduce", "Allreduce", "Reduce_scatter_block",
           "Reduce_scatter", "Scan", "Exscan")  # each written as steps: _<name>_steps


def _i_name(name: str) -> str:
    return "I" + name[0].lower() + name[1:]


def blocking(name: str, owner: type = Reductions) -> Callable[..., None]:
    """The blocking form of collective ``name``: every step of ``owner._<name>_steps`` at once."""
    steps = getattr(owner, f"_{name}_steps")

    def collective(self: Reductions, *args: Any, **kwargs: Any) -> None:
        notice_starts()  # (persistent collectives started by MPI come first)
        if self._started:
            self._settle_started()
        try:
            run(steps(self, *args, **kwargs))
        finally:
            self._abort_origin = None  # (_c_abort: the next collective's failure is its own)
            kept = self._deferred.take()  # strict mode's error, once the collective is whole
        if kept is not None:
            raise kept

    collective.__name__, collective.__doc__ = name, steps.__doc__
    return collective


def started(name: str, owner: type = Reductions) -> Callable[..., SecureRequest]:
    """The started form of collective ``name``, from ``owner._<name>_steps`` (module doc)."""
    steps = getattr(owner, f"_{name}_steps")
    names = list(inspect.signature(steps).parameters)[1:]  # after self
    at = names.index("root") if "root" in names else None  # (binding the call took 14 us)

    def start(self: NonBlocking, *args: Any, **kwargs: Any) -> SecureRequest:
        if at is not None:
            root = args[at] if len(args) > at else kwargs.get("root")
            if root is not None:
                self._root(root)  # ERR_ROOT at the call, as MPI checks it
        return self._start(steps(self, *args, **kwargs))

    start.__name__ = _i_name(name)
    start.__doc__ = f"{name}, started: its steps are taken as the records they need arrive (module doc)."
    return start


def persistent(name: str) -> Callable[..., PersistentRequest]:
    """``<name>_init``: each start starts the collective, as its ``I``-form does (module doc)."""
    started_form = _i_name(name)
    signature = inspect.signature(getattr(MPI.Cartcomm if name.startswith("Neighbor") else MPI.Intracomm,
                                          name + "_init"))  # mpi4py's: its names are ours too

    def init(self: Reductions, *args: Any, **kwargs: Any) -> PersistentRequest:
        arguments = signature.bind(self, *args, **kwargs).arguments  # a wrong call fails here, as mpi4py's
        arguments.pop("self")
        arguments.pop("info", None)  # hints only
        if "root" in arguments:
            self._root(arguments["root"])  # ERR_ROOT at the call, as MPI checks it
        start = getattr(self, started_form)  # bound now: a request outlives its communicator's Free
        owned, held = own_datatypes(list(arguments.values()))  # the program may free its datatypes now
        arguments = dict(zip(arguments, owned, strict=True))
        return PersistentRequest(self._coll, lambda: start(**arguments), held)

    init.__name__ = name + "_init"
    init.__doc__ = f"Persistent {name}: each start (Start, Startall, MPI's Startall) starts {started_form}."
    return init


COLLECTIVES = ("Barrier", "barrier", "Bcast", "bcast", "Gather", "gather", "Gatherv", "Scatter", "scatter",
               "Scatterv", "Allgather", "allgather", "Allgatherv", "Alltoall", "alltoall", "Alltoallv",
               "Alltoallw", "Reduce", "reduce", "Allreduce", "allreduce", "Reduce_scatter",
               "Reduce_scatter_block", "Scan", "scan", "Exscan", "exscan")


def after_started(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (a collective), after the remaining steps of the started ones."""

    def collective(self: Reductions, *args: Any, **kwargs: Any) -> Any:
        notice_starts()  # (persistent collectives started by MPI come first)
        if self._started:
            self._settle_started()
        try:
            result = method(self, *args, **kwargs)
        finally:
            self._abort_origin = None  # (_c_abort: the next collective's failure is its own)
            kept = self._deferred.take()  # strict mode's error, once the collective is whole
        if kept is not None:
            raise kept
        return result

    collective.__name__, collective.__doc__ = method.__name__, method.__doc__
    return collective


class NonBlocking(Reductions):
    """The blocking and ``I``-collectives of SecureComm (mixin over :class:`Reductions`)."""

    def _start(self, steps: Steps[Any]) -> SecureRequest:
        """Start a collective: its steps as far as they go now, the rest as records arrive."""
        notice_starts()  # (persistent collectives started by MPI come first)
        self._started[:] = [started for started in self._started if not started.done]
        started = Started(self, steps, self._started[-1] if self._started else None)
        self._started.append(started)
        _PENDING.add(started)
        started.issue(block=False)
        if started.refused:  # its arguments, checked before any receive: raised by the call
            raise started.error  # type: ignore[misc]
        return SecureRequest(self._coll, steps=started)

    def Ibarrier(self) -> SecureRequest:
        """Barrier, started: complete once every rank has started it (module doc)."""
        return self._start(self._Barrier_steps())

    ibarrier = Ibarrier


for _name in STEPPED:
    setattr(NonBlocking, _name, blocking(_name))
    if _name != "Barrier":
        setattr(NonBlocking, _i_name(_name), started(_name))
NonBlocking.barrier = NonBlocking.Barrier  # type: ignore[attr-defined]
for _name in COLLECTIVES:  # each public collective first takes the started ones' remaining steps
    if _name not in STEPPED and _name != "barrier":
        setattr(NonBlocking, _name, after_started(getattr(NonBlocking, _name)))
    if _name[0].isupper():
        setattr(NonBlocking, _name + "_init", persistent(_name))
