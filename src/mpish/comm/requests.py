"""Requests of a secure communicator, and the functions that complete lists of them.

A :class:`SecureRequest` is an ``MPI.Grequest`` whose handle MPI considers complete once
the secure operation is (handles.py): mpi4py's ``MPI.Request.Waitall``, ``waitany``,
``Testsome``... complete lists that mix secure and raw requests. The module functions
here (``mpish.comm.Waitall``, ``waitall``, ``Testall``, ``Waitany``...) do the same
without MPI's help (and without the progress thread). As in MPI, a completed request is
inactive: it is false, and waiting on it again returns at once with an empty status
(``wait()`` returns None). Persistent requests are MPI persistent requests whose start
runs the secure operation (persistent.py): ``MPI.Prequest.Startall`` starts them.

A secure receive request that is garbage-collected while its receive is still posted is
cancelled (a message already matched by it is received and dropped): nobody can wait on
it any more, and a posted receive left behind would take a later receive's message.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from mpi4py import MPI

from . import extended, serial
from .buffers import check_fits, mpi_error, set_status
from .handles import (
    LOCK,
    HandleState,
    complete,
    free_receive,
    lock_public_methods,
    locked,
    refuse,
    start_handle,
    unwatch,
    watch,
)
from .lane import Lane, PostedRecv, progress, wait_all
from .persistent import PersistentRequest as PersistentRequest  # re-exported: communicator.py
from .posted import detach
from .synchronous import Pending


class Operation(Protocol):
    """A started collective (nonblocking.py): ``(block)`` True once done; ``error``, its failure."""

    error: BaseException | None
    def __call__(self, block: bool) -> bool: ...


class SecureRequest(MPI.Grequest):
    """A request of a secure communicator: an ``MPI.Request`` whose handle is real (handles.py)."""

    _state: HandleState

    def __new__(cls, *args: Any, **kwargs: Any) -> SecureRequest:
        state = HandleState()
        request = super().__new__(cls, start_handle(state))
        request._state = state  # set before __init__
        state.owner = weakref.ref(request)
        return request

    def __init__(
        self,
        lane: Lane,
        *,
        sends: list[Any] | None = None,
        buffers: list[Any] | None = None,
        posted: PostedRecv | None = None,
        is_object: bool = False,
        value: Any = None,
        ack: Pending | None = None,
        steps: Operation | None = None,
        unpack: Callable[[int], None] | None = None,
        limit: int | None = None,
    ) -> None:
        self._lane = lane
        self._limit = limit  # irecv(buf): the pickle must fit buf's bytes (ERR_TRUNCATE), as mpi4py
        self._unpack = unpack  # a receive into a datatype with gaps: scatter the bytes received
        self._steps = steps  # an operation of its own (a started collective): True once done
        self._sends = sends or []
        self._ack = ack  # a synchronous send: complete once its receiver acknowledged it
        self._buffers = buffers  # keep the records alive until the sends complete
        self._posted = posted
        self._is_object = is_object
        self._active = True
        self._cancelled = False  # Cancel cancelled the receive
        self._outcome: tuple[Any, ...] | None = None  # (result, obj, error) once settled
        self._value = value
        if not self._sends and posted is None and ack is None and (steps is None or steps(False)):
            self._settle()  # complete already (a collective run at the call, a probed message)
        else:
            watch(self, polled_by_mpi=extended.available())

    def __del__(self) -> None:
        """Cancel a receive nobody can wait on any more (module doc); release the handle."""
        if not self.__dict__.get("_active") or "_state" not in self.__dict__:
            return
        try:
            if MPI.Is_finalized():
                return
            with LOCK:
                if self._sends and self._outcome is None:  # dropped while sending: the records
                    detach(self._sends, self._buffers)  # live on until MPI is done with them
                posted = self._posted
                if posted is not None and not posted.done:
                    self.Cancel()
                if self._handle_held():
                    refuse(self, self._state)
                    MPI.Request.Free(self)
        except Exception:  # noqa: S110 - nothing to report to at collection time
            pass

    def _handle_held(self) -> bool:
        """True while the MPI handle is ours to free: set, and not completed by MPI already (an
        error in MPI's Waitsome leaves mpi4py's handle set on a request MPI freed: freeing it
        again crashed the process; after MPI_Request_get_status the handle is left, not freed)."""
        return bool(MPI.Request.__bool__(self)) and not self._state.queried

    def _consumed(self) -> bool:
        """True once completed (by mpish, or by MPI's class-level calls on the handle)."""
        if self._active and self._outcome is not None and not MPI.Request.__bool__(self):
            self._active = False  # MPI completed and freed the handle (MPI.Request.Waitall...)
        return not self._active

    def __bool__(self) -> bool:
        """True until completed, as an mpi4py request is until it becomes MPI.REQUEST_NULL."""
        return not self._consumed()

    def _settle(self) -> None:
        """Record the outcome of a finished operation and complete the MPI handle with it."""
        if self._outcome is not None:
            return
        posted, self._posted = self._posted, None
        obj, result = self._value, (MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
        error = None if self._steps is None else self._steps.error  # a started collective's
        if self._ack is not None and self._ack.error is not None:  # strict mode (synchronous.py)
            error = self._ack.error
        self._value = None
        if posted is not None:
            error = posted.error
            if error is None:
                assert posted.result is not None
                result = posted.result
                if self._is_object and posted.obj:  # else a buffer, from PROC_NULL, or empty: None
                    try:
                        check_fits(len(posted.obj), self._limit)
                        obj = serial.loads(posted.obj)  # authenticated bytes (lane.py)
                    except Exception as exc:
                        error = exc
                elif self._unpack is not None:
                    try:
                        self._unpack(result[2])
                    except Exception as exc:
                        error = exc
        self._unpack = None
        self._buffers = None
        self._outcome = (result, obj, error)
        state = self._state
        state.result, state.error, state.cancelled = result, error, self._cancelled
        unwatch(self)
        complete(self, state, obj)

    def _poll_handle(self) -> bool:
        """The progress thread's test: complete the handle if the operation finished."""
        if self._outcome is not None or not self._active or not self._ready(block=False):
            return False
        self._settle()
        return True

    def _finish(self, status: Any) -> Any:
        """Mark complete; set ``status``; return the received object (for wait/test)."""
        if self._consumed():
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return None
        self._settle()
        self._active = False
        assert self._outcome is not None
        result, obj, error = self._outcome
        self._outcome = (result, None, None)
        if self._handle_held():
            MPI.Request.Free(self)  # completed: MPI frees it at once
        if error is not None:
            raise error
        set_status(status, *result)
        if status is not None and self._cancelled:
            status.Set_cancelled(True)
        return obj

    def _pending(self) -> bool:
        """True while an operation is under way (False once completed, or for an idle persistent one)."""
        return not self._consumed()

    def __eq__(self, other: object) -> bool:
        """Equal to MPI.REQUEST_NULL once completed (mpi4py sets the handle to null), else identity."""
        if isinstance(other, MPI.Request) and not isinstance(other, SecureRequest):
            return bool(other == MPI.REQUEST_NULL) and not bool(self)
        return self is other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = object.__hash__

    def _ready(self, *, block: bool) -> bool:
        if self._consumed() or self._outcome is not None:
            return True
        while self._steps is not None and not self._steps(block):  # block: another thread steps it
            progress()
            if not block:
                return False
        if self._posted is not None and not self._lane.complete(self._posted, block=block):
            return False
        if self._sends:
            if block:
                wait_all(self._sends)
            elif not MPI.Request.Testall(self._sends):
                progress()
                return False
        if self._ack is None or self._ack.arrived(block=block):
            return True
        progress()
        return False

    def Wait(self, status: Any = None) -> Literal[True]:
        self._ready(block=True)
        self._finish(status)
        return True

    def Test(self, status: Any = None) -> bool:
        if not self._ready(block=False):
            progress()  # as MPI's Test: the other posted receives too (a sender may wait on them)
            return False
        self._finish(status)
        return True

    def wait(self, status: Any = None) -> Any:
        self._ready(block=True)
        return self._finish(status)

    def test(self, status: Any = None) -> tuple[bool, Any]:
        if not self._ready(block=False):
            progress()
            return False, None
        return True, self._finish(status)

    def Cancel(self) -> None:
        """Cancel a receive whose first record has not arrived.

        As in MPI the request stays active: complete it (Wait, Test, Free); its status then
        says whether it was cancelled (``Is_cancelled``).
        """
        if self._consumed() or self._outcome is not None:
            return
        # Sends are never cancelled (MPI lets a cancel fail; MPICH's cancel of a pending
        # synchronous send crashed the process here): they complete as usual.
        if self._posted is not None and self._lane.cancel(self._posted):
            self._cancelled = True

    cancel = Cancel

    def Get_status(self, status: Any = None) -> bool:
        """True if the operation is complete (``status`` set), without completing the request."""
        if self._consumed():
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return True
        if not self._ready(block=False):
            return False
        self._settle()
        assert self._outcome is not None
        set_status(status, *self._outcome[0])
        if status is not None and self._cancelled:
            status.Set_cancelled(True)
        return True

    get_status = Get_status

    def Free(self) -> None:
        """Forget the request; its operation completes in the background, as MPI's Free
        (waiting here deadlocked: ``Isend`` or ``Irecv``, ``Free``, then the exchange that the
        peer's side of it needs). A send's records go on (posted.detach keeps them alive until
        MPI is done with them); a synchronous send's acknowledgement is taken by a later poll,
        as if awaited; a receive stays posted on its lane and completes into its buffer at
        the progress of any later call (posted.py), as MPI's own, into a datatype with gaps
        too (its bytes are scattered once it completed). Only an operation of its own
        (Ibarrier) is waited for. A request completed or freed already is MPI's null:
        freeing it is MPI's ERR_REQUEST, as raw."""
        if self._consumed():
            raise mpi_error(MPI.ERR_REQUEST, "Free of a request completed or freed already")
        if not self.frees_in_background():
            self.Wait()
            return
        if self._sends:
            detach(self._sends, self._buffers)
        posted, unpack, self._unpack = self._posted, self._unpack, None
        if posted is not None and not posted.done:
            posted.then = unpack  # a datatype with gaps: scattered once it completed (posted.py)
            free_receive(self._lane, posted)
        elif posted is not None and unpack is not None and posted.error is None and posted.result:
            with contextlib.suppress(Exception):  # freed: nobody is there to be told
                unpack(posted.result[2])
        self._sends, self._buffers, self._ack, self._posted = [], None, None, None
        self._active = False
        unwatch(self)
        if self._handle_held():  # the handle: complete (nobody can wait on it), then freed
            refuse(self, self._state)
            MPI.Request.Free(self)

    def frees_in_background(self) -> bool:
        """True if :meth:`Free` leaves the operation to complete on its own (not waited for)."""
        return self._steps is None

    free = Free

    # The class-level forms, as in mpi4py (MPI.Request.Waitall): the module functions below.

    @staticmethod
    def Waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> Literal[True]:
        return Waitall(requests, statuses)

    @staticmethod
    def waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[Any]:
        return waitall(requests, statuses)

    @staticmethod
    def Testall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
        return Testall(requests, statuses)

    @staticmethod
    def Waitany(requests: Sequence[Any], status: Any = None) -> int:
        return Waitany(requests, status)

    @staticmethod
    def waitany(requests: Sequence[Any], status: Any = None) -> tuple[int, Any]:
        return waitany(requests, status)

    @staticmethod
    def Startall(requests: Sequence[Any]) -> None:
        Startall(requests)


_SECURE = (SecureRequest, PersistentRequest)  # requests whose completion is mpish's


@locked
def Startall(requests: Sequence[Any]) -> None:
    """Start every persistent request (secure or raw); if some fail, the others are started
    still, then the first error raises (a rank that stopped at a failed neighbour collective
    would leave another rank waiting in the next request's collective)."""
    error: BaseException | None = None
    for request in requests:
        try:
            request.Start()
        except Exception as exc:
            error = error or exc
    if error is not None:
        raise error


# -- completing lists of requests ---------------------------------------------------
# These accept SecureRequest and MPI.Request alike (a list may mix secure requests with
# requests of ``comm.raw`` or of other communicators). Completed requests are skipped.


def _status_at(statuses: list[Any] | None, index: int) -> Any:
    return statuses[index] if statuses is not None else None


def _active(request: Any) -> bool:
    if isinstance(request, _SECURE):
        return request._pending()
    return bool(request)  # MPI.Request: not MPI.REQUEST_NULL (an inactive Prequest: see Get_status)


@locked
def Waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> Literal[True]:
    """Wait for every request (in order; each wait progresses the others)."""
    for index, request in enumerate(requests):
        request.Wait(_status_at(statuses, index))
    return True


@locked
def waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[Any]:
    """Wait for every request; return the received objects (None for sends)."""
    return [request.wait(_status_at(statuses, index)) for index, request in enumerate(requests)]


def _all_ready(requests: Sequence[Any]) -> bool:
    for request in requests:
        if isinstance(request, _SECURE):
            if not request._ready(block=False):
                return False
        elif _active(request) and not request.Get_status():
            return False
    return True


@locked
def Testall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
    """If every request is done, complete them all and return True; else False (none completed)."""
    if not _all_ready(requests):
        progress()
        return False
    return Waitall(requests, statuses)


@locked
def testall(requests: Sequence[Any], statuses: list[Any] | None = None) -> tuple[bool, list[Any] | None]:
    """(True, received objects) if every request is done, else (False, None)."""
    if not _all_ready(requests):
        progress()
        return False, None
    return True, waitall(requests, statuses)


def _first_done(requests: Sequence[Any]) -> int | None:
    """Index of an active request that is complete, UNDEFINED if none is active, else None."""
    any_active = False
    for index, request in enumerate(requests):
        if not _active(request):
            continue
        any_active = True
        if isinstance(request, _SECURE):
            if request._ready(block=False):
                return index
        elif request.Get_status():
            return index
    return None if any_active else MPI.UNDEFINED


@locked
def Waitany(requests: Sequence[Any], status: Any = None) -> int:
    """Index of a completed request (now inactive), or MPI.UNDEFINED if none is active."""
    while True:
        index = _first_done(requests)
        if index is not None:
            if index != MPI.UNDEFINED:
                requests[index].Wait(status)
            else:
                set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return index
        progress()


@locked
def waitany(requests: Sequence[Any], status: Any = None) -> tuple[int, Any]:
    """(index, object) of a completed request; (MPI.UNDEFINED, None) if none is active."""
    while True:
        index = _first_done(requests)
        if index is not None:
            if index == MPI.UNDEFINED:
                return index, None
            return index, requests[index].wait(status)
        progress()


@locked
def Testany(requests: Sequence[Any], status: Any = None) -> tuple[int, bool]:
    """(index, True) if one completed, (UNDEFINED, True) if none is active, else (UNDEFINED, False)."""
    index = _first_done(requests)
    if index is None:
        progress()
        return MPI.UNDEFINED, False
    if index != MPI.UNDEFINED:
        requests[index].Wait(status)
    return index, True


@locked
def Waitsome(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[int] | None:
    """Indices of the requests that completed (at least one), or None if none is active;
    ``statuses[i]`` is set for each completed ``requests[i]``."""
    while (first := _first_done(requests)) is None:
        progress()
    if first == MPI.UNDEFINED:
        return None
    requests[first].Wait(_status_at(statuses, first))  # its status too (it was left unset)
    done = [first]
    for index, request in enumerate(requests):
        if index != first and _active(request):
            if isinstance(request, _SECURE):
                finished = request._ready(block=False)
            else:
                finished = bool(request.Get_status())
            if finished:
                request.Wait(_status_at(statuses, index))
                done.append(index)
    return sorted(done)


@locked
def Testsome(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[int] | None:
    """Indices of the requests that completed now ([] if none), or None if none is active."""
    if not any(_active(r) for r in requests):
        return None
    done = []
    for index, request in enumerate(requests):
        if _active(request) and request.Test(_status_at(statuses, index)):
            done.append(index)
    if not done:
        progress()
    return done


lock_public_methods(SecureRequest)
