"""Persistent requests of a secure communicator (``Send_init``, ``Recv_init``...) as MPI's own.

Theory of operation
-------------------
``MPI_Start``/``MPI_Startall`` (``MPI.Prequest.Startall``) accept only MPI's persistent
requests, so the handle of a secure persistent request is one: a persistent synchronous send
of an empty message to this process, on a private duplicate of ``MPI.COMM_SELF`` (the
*trigger*, one tag per request). Starting it, by the request's ``Start`` or by MPI, only
puts that empty message in this process's queue; nothing leaves the process. mpish notices
the start by probing for the message (at once in ``Start``; else in the progress thread of
handles.py, which watches every persistent request until it is freed, and at the entry of
every collective; a probe, because testing the handle while MPI waits on it in another
thread is not safe), and runs the secure operation (``Isend``, ``Issend``, ``Irecv``, or a
started collective: records sealed and authenticated as any other). Once that operation
completed, mpish receives the empty message, which completes the synchronous send, so MPI's
``Waitany``/``Waitall``... return the request as done, and only then.

Order (:func:`notice_starts`). Starts are run in the order they were made: the trigger
messages are one process's messages to itself on one communicator, which MPI keeps in order
across tags, so a probe for any tag finds the oldest start first. That matters for the
persistent collectives (``Bcast_init``...: MPI 4), whose starts must run in the same order
on every rank (collectives.py): a rank that started one with ``MPI.Prequest.Startall`` and
then calls another collective first runs the start it made (every collective's entry notices
the starts first: nonblocking.py), as a rank that used the request's own ``Start`` did.

The request's own methods (``Wait``, ``Test``, ``Get_status``...) and ``mpish.comm.Waitall``
& co. report the operation's status (source, tag, count). MPI's class-level calls report the
handle's: a persistent receive completed by ``MPI.Request.Waitall(requests, statuses)`` gets
the trigger's status there (that of an empty send), not the message's.

Without ``MPI_THREAD_MULTIPLE`` there is no thread to notice a start made by MPI, so the
handle is instead a completed generalized request whose query fails: ``MPI.Prequest.Startall``
and MPI's completion calls raise MPI's ``ERR_REQUEST`` (never a hang); the request's methods
and ``mpish.comm.Startall``/``Waitall`` work. The request itself stays true and unequal to
``MPI.REQUEST_NULL`` until ``Free``, as MPI's.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable
from typing import Any, Literal

from mpi4py import MPI

from .buffers import mpi_error, set_status
from .handles import lock_public_methods, refused_handle, threads_ok, unwatch, watch
from .posted import _ACTIVE, progress

IDLE, RUNNING, DONE = 0, 1, 2  # the request's phase (DONE: finished, trigger sent, not yet delivered)
_EMPTY = [None, 0, MPI.BYTE]
_COMM: list[Any] = []  # the trigger communicator, made on first use
_FREE_TAGS: list[int] = []
_NEXT_TAG = [0]
_NOTICING = threading.local()  # .active: this thread is in notice_starts (a start it runs calls it again)


def _trigger_comm() -> Any:
    if not _COMM:
        _COMM.append(MPI.COMM_SELF.Dup())
    return _COMM[0]


class _Starts:
    """Listed in posted's ``_ACTIVE`` while persistent requests live, so every blocking secure
    call polls and notices a start made by MPI: a call blocked holding the lock would
    otherwise wait for an operation that only mpish can run (``MPI.Prequest.Startall`` of a
    send to itself, then ``Recv``)."""

    def progress(self) -> None:
        notice_starts()


def notice_starts(until: PersistentRequest | None = None) -> None:
    """Run the starts made (by MPI or by a request's ``Start``) that mpish has not run yet, in
    the order they were made (module doc). ``until``: a request just started by its ``Start``,
    whose message is on its way: wait for it; its operation's error at the start raises here."""
    if not _BY_TAG or getattr(_NOTICING, "active", False):
        return
    comm, status = _COMM[0], MPI.Status()
    _NOTICING.active = True
    # until's start is run once its run count moves: by this loop, or by another thread's
    # notice_starts while this one's run of an older start let it in (its progress releases
    # the lock), which may also complete it and clear its message: waiting for the message
    # then blocked in Mprobe for good, holding the lock (helper-122; a CI hang, 1 in ~30).
    mark = until._runs if until is not None else 0
    try:
        while until is None or until._runs == mark:
            block = until is not None
            message = comm.Mprobe(0, MPI.ANY_TAG, status) if block else comm.Improbe(0, MPI.ANY_TAG, status)
            if message is None:
                return
            request = _BY_TAG.get(status.Get_tag())
            if request is None:  # (freed: MPI refuses to start a freed request)
                message.Recv(_EMPTY)
                continue
            request._trigger.message = message
            request._run(raising=request is until)
            if request is until:
                return
    finally:
        _NOTICING.active = False


# By trigger tag, until Free: held, as MPI holds its requests, so a start MPI made runs even if the
# program dropped the request before mpish noticed it (its collective goes on for the other ranks).
_BY_TAG: dict[int, PersistentRequest] = {}
_STARTS = _Starts()


def _live(request: PersistentRequest, alive: bool) -> None:
    """Hold a request MPI may start (from its making to its Free: _BY_TAG); _STARTS is polled
    while any is held."""
    tag = request._trigger.tag
    if alive:
        _BY_TAG[tag] = request
    elif _BY_TAG.get(tag) is request:
        del _BY_TAG[tag]
    if _BY_TAG:
        _ACTIVE.add(_STARTS)  # type: ignore[arg-type]  # it has the one method progress() calls
    else:
        _ACTIVE.discard(_STARTS)


class Trigger:
    """The MPI handle of a persistent request: a persistent synchronous empty send to this
    process (or, without threads, a completed generalized request that MPI's calls refuse).
    Its start puts a message in the trigger communicator, which mpish's probe notices (it never
    touches the handle MPI may be waiting on in another thread: :func:`notice_starts`); the
    send completes when mpish receives that message, once the secure operation completed."""

    def __init__(self) -> None:
        self.real = threads_ok()
        self.message: Any = None  # the start's message, matched, received when the operation is done
        self.tag = -1
        if self.real:
            self.tag = _FREE_TAGS.pop() if _FREE_TAGS else _NEXT_TAG[0]
            if self.tag == _NEXT_TAG[0]:
                _NEXT_TAG[0] += 1
            self.request = _trigger_comm().Ssend_init(_EMPTY, 0, self.tag)
        else:  # refused: MPI's calls raise ERR_REQUEST (module doc)
            self.request = MPI.Prequest.fromhandle(refused_handle().handle)

    def fire(self) -> None:
        """Complete the handle: receive the start's message (the synchronous send completes)."""
        message, self.message = self.message, None
        message.Recv(_EMPTY)

    def release(self) -> None:
        if self.real and self.message is None:
            _FREE_TAGS.append(self.tag)


def _unseen(outcome: tuple[Any, ...] | None) -> None:
    """A run's error that nobody was given (MPI's wait completed the handle, which cannot carry
    it: the trigger is an empty send that did complete) is a warning, not lost (helper-108)."""
    if outcome is not None and outcome[2] is not None:
        warnings.warn(f"mpish.secure: a run of a persistent request failed, and MPI's wait that completed "
                      f"it cannot say so (the request's own Wait, or mpish.comm.Waitall, raises it): "
                      f"{type(outcome[2]).__name__}: {outcome[2]}", RuntimeWarning, stacklevel=3)


class PersistentRequest(MPI.Prequest):
    """A persistent request: each start (its ``Start``, ``mpish.comm.Startall``, or MPI's
    ``MPI.Prequest.Startall``) runs the secure operation again (module doc).

    As in MPI it stays valid (true, not equal to MPI.REQUEST_NULL) after completion, until
    ``Free``; not started or completed, lists of requests skip it (inactive).
    """

    _trigger: Trigger
    __hash__ = object.__hash__  # MPI.Request compares handles and has none (handles.py keeps a set)

    def __bool__(self) -> bool:
        """True until Free, as an MPI persistent request."""
        return not self.__dict__.get("_freed", False)

    def __new__(cls, *args: Any, **kwargs: Any) -> PersistentRequest:
        trigger = Trigger()
        request = super().__new__(cls, trigger.request)
        request._trigger = trigger
        return request

    def __init__(self, lane: Any, start: Callable[[], Any], held: list[Any] | None = None) -> None:
        self._start = start  # starts the secure operation: a SecureRequest
        self._held = held or []  # mpish's copies of the program's datatypes (packing.own_datatypes)
        self._lane = lane
        lane.hold(+1)  # as MPI's, its communicator lives on after Comm.Free until the request is freed
        self._inner: Any = None
        self._phase = IDLE
        self._outcome: tuple[Any, ...] | None = None  # ((source, tag, nbytes), obj, error, cancelled)
        self._freed = False
        self._runs = 0  # starts run so far
        if self._trigger.real:
            watch(self)
            _live(self, True)

    # -- the phases

    def _sync(self) -> None:
        """Notice the starts made by MPI (this one's among them), in their order."""
        if self._trigger.real and not self._freed:
            notice_starts()

    def _run(self, raising: bool = True) -> None:
        """Start the secure operation. If that fails at once (its arguments), ``raising``: the
        caller's Start raises it and the request is idle again; else (a start made by MPI) the
        request completes with that error, which its Wait raises."""
        _unseen(self._outcome)
        self._outcome = None
        self._runs += 1  # (notice_starts: a start of until's was run)
        # RUNNING before the operation exists: starting a collective polls, which lets other
        # threads in, and one waiting for this request must wait for its start (_advance)
        self._inner, self._phase = None, RUNNING
        try:
            inner = self._start()
        except Exception as exc:
            if raising:
                self._phase = IDLE
                if self._trigger.real:
                    self._trigger.fire()
                    MPI.Prequest.Wait(self)
                raise
            self._outcome = ((MPI.ANY_SOURCE, MPI.ANY_TAG, 0), None, exc, False)
            self._phase = DONE
            if self._trigger.real:
                self._trigger.fire()
            return
        self._inner = inner

    def _advance(self, *, block: bool) -> bool:
        """True unless the operation is still running (then it is kept, its handle completed)."""
        self._sync()
        if self._phase != RUNNING:
            return True
        while self._inner is None:  # its start is under way in another thread (_run)
            if self._phase != RUNNING:  # it failed there
                return True
            if not block:
                return False
            progress()  # (lets that thread go on)
        inner = self._inner
        if not inner._ready(block=block):
            return False
        if self._inner is not inner:  # completed meanwhile by another thread (its wait let it in)
            return True
        status, obj, error = MPI.Status(), None, None
        try:
            obj = inner._finish(status)
        except Exception as exc:
            error = exc
        result = (status.Get_source(), status.Get_tag(), status.Get_count(MPI.BYTE))
        self._outcome = (result, obj, error, status.Is_cancelled())
        self._inner, self._phase = None, DONE
        if self._trigger.real:
            self._trigger.fire()
        return True

    def _deliver(self, status: Any) -> Any:
        """Complete the request (its handle too: at once, the trigger was sent); the outcome."""
        if self._phase == DONE:
            if self._trigger.real:
                MPI.Prequest.Wait(self)  # returns at once, also if MPI completed it already
            self._phase = IDLE
        outcome, self._outcome = self._outcome, None
        if outcome is None:
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return None
        result, obj, error, cancelled = outcome
        if error is not None:
            raise error
        set_status(status, *result)
        if status is not None and cancelled:
            status.Set_cancelled(True)
        return obj

    def _poll_handle(self) -> bool:
        """The progress thread's work: notice a start by MPI, complete a finished operation."""
        phase = self._phase
        if not self._freed:
            self._advance(block=False)
        return self._phase != phase

    # what requests.py's list functions ask of a secure request
    def _ready(self, *, block: bool) -> bool:
        return self._advance(block=block)

    def _pending(self) -> bool:
        self._sync()
        return self._phase != IDLE

    # -- mpi4py's methods

    def Start(self) -> None:
        if self._freed:
            raise ValueError("Start of a freed persistent request")
        self._sync()
        if self._phase == RUNNING:
            raise ValueError("Start of a persistent request that is still active")
        if not self._trigger.real:
            self._run()
            return
        if self._phase == DONE:
            MPI.Prequest.Wait(self)  # the last run's handle completion, if nobody took it
        MPI.Prequest.Start(self)
        notice_starts(until=self)  # its own message (to this process: there at once), after older ones

    def Wait(self, status: Any = None) -> Literal[True]:
        self._advance(block=True)
        self._deliver(status)
        return True

    def wait(self, status: Any = None) -> Any:
        self._advance(block=True)
        return self._deliver(status)

    def Test(self, status: Any = None) -> bool:
        if not self._advance(block=False):
            return False
        self._deliver(status)
        return True

    def test(self, status: Any = None) -> tuple[bool, Any]:
        if not self._advance(block=False):
            return False, None
        return True, self._deliver(status)

    def Get_status(self, status: Any = None) -> bool:
        """True if not running (``status`` set), without completing the request."""
        if not self._advance(block=False):
            return False
        if self._outcome is None:
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
        else:
            result, _, _, cancelled = self._outcome
            set_status(status, *result)
            if status is not None and cancelled:
                status.Set_cancelled(True)
        return True

    get_status = Get_status

    def Cancel(self) -> None:
        self._sync()
        if self._phase == RUNNING and self._inner is not None:
            self._inner.Cancel()

    cancel = Cancel

    def Free(self) -> None:
        """Release the handle; a started send or receive completes in the background
        (SecureRequest.Free), other started operations are waited for."""
        _unseen(self._outcome)
        if self._freed:  # MPI's null now: MPI_Request_free refuses it, as raw
            raise mpi_error(MPI.ERR_REQUEST, "Free of a persistent request freed already")
        if self._pending():
            inner = self._inner
            if self._phase == RUNNING and inner is not None and inner.frees_in_background():
                inner.Free()
                self._inner, self._phase = None, DONE
                if self._trigger.real:
                    self._trigger.fire()  # MPI's handle of this run completes
            with contextlib.suppress(Exception):  # MPI_Request_free reports nothing either
                self.Wait()
        self._freed = True
        unwatch(self)
        _live(self, False)
        self._lane.hold(-1)
        for datatype in self._held:
            datatype.Free()
        if MPI.Request.__bool__(self):
            MPI.Request.Free(self)
        self._trigger.release()

    free = Free


lock_public_methods(PersistentRequest)
