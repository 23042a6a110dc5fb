"""Requests of a secure communicator, and the functions that complete lists of them.

mpi4py's ``MPI.Request.Waitall`` and friends hand the list to MPI, which knows nothing
of the records behind a :class:`SecureRequest` (MPI's generalized requests cannot be
progressed from Python while MPI waits, and a receive is complete only once its records
are authenticated and decrypted), so they refuse secure requests before MPI sees any:
a ``TypeError`` whose message names this module's functions (the class's name carries
it, as mpi4py's type check prints only that). The module functions here
(``mpish.comm.Waitall``, ``waitall``, ``Testall``, ``Waitany``...; also as
``SecureRequest.Waitall``...) take secure and raw requests alike. As in MPI, a completed
request is inactive: it is false, and waiting on it again returns at once with an empty
status (``wait()`` returns None).

A secure receive request that is garbage-collected while its receive is still posted is
cancelled (a message already matched by it is received and dropped): nobody can wait on
it any more, and a posted receive left behind would take a later receive's message.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI

from .buffers import Unsupported, set_status
from .lane import _ACTIVE, Lane, PostedRecv, progress, wait_all


class SecureRequest:
    """A request of a secure communicator (the subset of ``MPI.Request`` mpish supports)."""

    def __init__(
        self,
        lane: Lane,
        *,
        sends: list[Any] | None = None,
        buffers: list[Any] | None = None,
        posted: PostedRecv | None = None,
        is_object: bool = False,
    ) -> None:
        self._lane = lane
        self._sends = sends or []
        self._buffers = buffers  # keep the records alive until the sends complete
        self._posted = posted
        self._is_object = is_object
        self._active = True
        self._cancelled = False  # Cancel cancelled the receive

    def __del__(self) -> None:
        """Cancel a receive nobody can wait on any more (module doc)."""
        posted = self.__dict__.get("_posted")
        if posted is None or posted.done or not self.__dict__.get("_active"):
            return
        try:
            if not MPI.Is_finalized():
                self.Cancel()
        except Exception:  # noqa: S110 - nothing to report to at collection time
            pass

    def __bool__(self) -> bool:
        """True until completed, as an mpi4py request is until it becomes MPI.REQUEST_NULL."""
        return self._active

    def _finish(self, status: Any) -> Any:
        """Mark complete; set ``status``; return the received object (for wait/test)."""
        if not self._active:
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return None
        self._active = False
        posted = self._posted
        if posted is None:
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            self._buffers = None
            if status is not None and self._cancelled:
                status.Set_cancelled(True)
            return None
        self._posted = None
        if posted.error is not None:
            raise posted.error
        assert posted.result is not None
        set_status(status, *posted.result)
        if status is not None and self._cancelled:
            status.Set_cancelled(True)
        if not self._is_object or not posted.obj:  # a buffer, from MPI.PROC_NULL, or empty (as mpi4py)
            return None
        return pickle.loads(posted.obj)  # noqa: S301 - authenticated bytes from a peer holding an authorized key

    def _pending(self) -> bool:
        """True while an operation is under way (False once completed, or for an idle persistent one)."""
        return self._active

    def __eq__(self, other: object) -> bool:
        """Equal to MPI.REQUEST_NULL once completed (mpi4py sets the handle to null), else identity."""
        if isinstance(other, MPI.Request) and other == MPI.REQUEST_NULL:
            return not bool(self)
        return self is other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = object.__hash__

    def _ready(self, *, block: bool) -> bool:
        if not self._active:
            return True
        if self._posted is not None and not self._lane.complete(self._posted, block=block):
            return False
        if not self._sends:
            return True
        if block:
            wait_all(self._sends)
            return True
        if MPI.Request.Testall(self._sends):
            return True
        progress()
        return False

    def Wait(self, status: Any = None) -> bool:
        self._ready(block=True)
        self._finish(status)
        return True

    def Test(self, status: Any = None) -> bool:
        if not self._ready(block=False):
            return False
        self._finish(status)
        return True

    def wait(self, status: Any = None) -> Any:
        self._ready(block=True)
        return self._finish(status)

    def test(self, status: Any = None) -> tuple[bool, Any]:
        if not self._ready(block=False):
            return False, None
        return True, self._finish(status)

    def Cancel(self) -> None:
        """Cancel a receive whose first record has not arrived.

        As in MPI the request stays active: complete it (Wait, Test, Free); its status then
        says whether it was cancelled (``Is_cancelled``).
        """
        if not self._active:
            return
        # Sends are never cancelled (MPI lets a cancel fail; MPICH's cancel of a pending
        # synchronous send crashed the process here): they complete as usual.
        posted = self._posted
        if posted is None or posted.done or posted.request is None:
            return
        posted.request.Cancel()
        status = MPI.Status()
        posted.request.Wait(status)
        if status.Is_cancelled():
            self._lane.posted.remove(posted)
            if not self._lane.posted:
                _ACTIVE.discard(self._lane)
            posted.done, posted.request = True, None
            posted.result = (MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            self._cancelled = True
        else:  # it had matched a message: process it as usual
            posted.request = None
            self._lane._first_arrived(posted, status)

    cancel = Cancel

    def Get_status(self, status: Any = None) -> bool:
        """True if the operation is complete (``status`` set), without completing the request."""
        if not self._active or not self._ready(block=False):
            if not self._active:
                set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return not self._active
        if status is not None:
            posted = self._posted
            result = posted.result if posted is not None and posted.result is not None else None
            set_status(status, *(result or (MPI.ANY_SOURCE, MPI.ANY_TAG, 0)))
            if self._cancelled:
                status.Set_cancelled(True)
        return True

    get_status = Get_status

    def Free(self) -> None:
        """Complete the request in the background (here: wait for it), then forget it."""
        if self._active:
            self.Wait()

    free = Free

    # The class-level forms, as in mpi4py (MPI.Request.Waitall): the module functions below.

    @staticmethod
    def Waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
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

    def __getattr__(self, name: str) -> Any:
        raise Unsupported(
            f"SecureRequest.{name} is not supported by mpish.secure (MPI.Request's class methods "
            "cannot complete secure requests: use mpish.comm.Waitall and friends)"
        )


# mpi4py's type check (MPI.Request.Waitall(...) and friends) prints only the class's
# name: let that name say what to use instead (module doc). repr() shows __qualname__.
_ADVICE = " (secure: MPI.Request's class methods cannot complete it; use mpish.comm.Waitall & co.)"
SecureRequest.__name__ += _ADVICE


class PersistentRequest(SecureRequest):
    """A persistent request (``Send_init``/``Recv_init``): each ``Start`` runs the operation again.

    As in MPI it stays valid (true, not equal to MPI.REQUEST_NULL) after completion, until
    ``Free``; completed or not started, lists of requests skip it (inactive).
    """

    def __init__(self, lane: Lane, start: Callable[[], SecureRequest]) -> None:
        super().__init__(lane)
        self._start = start
        self._inner: SecureRequest | None = None
        self._freed = False
        self._active = False

    def __bool__(self) -> bool:
        return not self._freed

    def _pending(self) -> bool:
        return self._inner is not None

    def Start(self) -> None:
        if self._freed:
            raise ValueError("Start of a freed persistent request")
        if self._inner is not None:
            raise ValueError("Start of a persistent request that is still active")
        self._inner = self._start()

    def _ready(self, *, block: bool) -> bool:
        return self._inner is None or self._inner._ready(block=block)

    def Cancel(self) -> None:
        if self._inner is not None:
            self._inner.Cancel()

    cancel = Cancel

    def Get_status(self, status: Any = None) -> bool:
        if self._inner is None:
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return True
        return self._inner.Get_status(status)

    get_status = Get_status

    def _finish(self, status: Any) -> Any:
        inner, self._inner = self._inner, None
        if inner is None:
            set_status(status, MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
            return None
        return inner._finish(status)

    def Free(self) -> None:
        if self._inner is not None:
            self.Wait()
        self._freed = True

    free = Free


PersistentRequest.__name__ += _ADVICE


def Startall(requests: Sequence[Any]) -> None:
    """Start every persistent request (secure or raw)."""
    for request in requests:
        request.Start()


# -- completing lists of requests ---------------------------------------------------
# These accept SecureRequest and MPI.Request alike (a list may mix secure requests with
# requests of ``comm.raw`` or of other communicators). Completed requests are skipped.


def _status_at(statuses: list[Any] | None, index: int) -> Any:
    return statuses[index] if statuses is not None else None


def _active(request: Any) -> bool:
    if isinstance(request, SecureRequest):
        return request._pending()
    return bool(request)  # MPI.Request: not MPI.REQUEST_NULL (an inactive Prequest: see Get_status)


def Waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
    """Wait for every request (in order; each wait progresses the others)."""
    for index, request in enumerate(requests):
        request.Wait(_status_at(statuses, index))
    return True


def waitall(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[Any]:
    """Wait for every request; return the received objects (None for sends)."""
    return [request.wait(_status_at(statuses, index)) for index, request in enumerate(requests)]


def _all_ready(requests: Sequence[Any]) -> bool:
    for request in requests:
        if isinstance(request, SecureRequest):
            if not request._ready(block=False):
                return False
        elif _active(request) and not request.Get_status():
            return False
    return True


def Testall(requests: Sequence[Any], statuses: list[Any] | None = None) -> bool:
    """If every request is done, complete them all and return True; else False (none completed)."""
    if not _all_ready(requests):
        progress()
        return False
    return Waitall(requests, statuses)


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
        if isinstance(request, SecureRequest):
            if request._ready(block=False):
                return index
        elif request.Get_status():
            return index
    return None if any_active else MPI.UNDEFINED


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


def waitany(requests: Sequence[Any], status: Any = None) -> tuple[int, Any]:
    """(index, object) of a completed request; (MPI.UNDEFINED, None) if none is active."""
    while True:
        index = _first_done(requests)
        if index is not None:
            if index == MPI.UNDEFINED:
                return index, None
            return index, requests[index].wait(status)
        progress()


def Testany(requests: Sequence[Any], status: Any = None) -> tuple[int, bool]:
    """(index, True) if one completed, (UNDEFINED, True) if none is active, else (UNDEFINED, False)."""
    index = _first_done(requests)
    if index is None:
        return MPI.UNDEFINED, False
    if index != MPI.UNDEFINED:
        requests[index].Wait(status)
    return index, True


def Waitsome(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[int] | None:
    """Indices of the requests that completed (at least one), or None if none is active."""
    first = Waitany(requests)
    if first == MPI.UNDEFINED:
        return None
    done = [first]
    for index, request in enumerate(requests):
        if index != first and _active(request):
            if isinstance(request, SecureRequest):
                finished = request._ready(block=False)
            else:
                finished = bool(request.Get_status())
            if finished:
                request.Wait(_status_at(statuses, index))
                done.append(index)
    return sorted(done)


def Testsome(requests: Sequence[Any], statuses: list[Any] | None = None) -> list[int] | None:
    """Indices of the requests that completed now ([] if none), or None if none is active."""
    if not any(_active(r) for r in requests):
        return None
    done = []
    for index, request in enumerate(requests):
        if _active(request) and request.Test(_status_at(statuses, index)):
            done.append(index)
    return done
