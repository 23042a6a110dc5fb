"""Real MPI handles for secure requests, so that ``MPI.Request.Waitall`` & co. complete them.

Theory of operation
-------------------
mpi4py's class-level calls (``MPI.Request.Waitall/Testall/Waitany/Testsome``, their
lowercase object forms, ``MPI.Request.Wait(req)``) take the MPI handle of every request in
the list and give the whole list to MPI. A secure request is an ``MPI.Grequest`` (a
generalized request, MPI's own mechanism for operations that the library completes):
its handle is real, and MPI considers it complete once mpish calls ``Grequest.complete``.
A secure operation completes only once its records are authenticated and decrypted,
which is mpish's code: while the program sits inside MPI (``MPI_Waitall``, which releases
the GIL), a progress thread does that work. It runs only while some secure request's
handle is not yet complete, polls with a short back-off, and does its work holding
:data:`LOCK`, which every public entry point of the secure communicator, its requests and
messages also holds once the thread exists (the thread is started by the first
nonblocking request; until then the program has one thread and pays nothing; the call that
starts it holds no lock, so the thread waits until the starting thread has left this
package's code): secure code never runs in two threads at once, and the thread never
blocks in MPI (it only tests). The object of a lowercase receive is handed to MPI's handle
(``complete(obj)``), so ``MPI.Request.waitall`` returns it, and the handle's query
callback reports the status (source, tag, count, cancelled) MPI gives the caller. Under
MPICH the handle is an extended generalized request (extended.py): MPICH's waits and tests
call :func:`_step`/:func:`_wait` in the waiting thread, which poll the request there and
then (never blocking on the lock, as the thread), so the thread is only the fallback.

Threads. Under ``MPI_THREAD_MULTIPLE`` a program may call secure code from several
threads, and secure code is not safe to run in two threads at once: a lane's record
buffers, its replay state and the order of its records (a counter drawn and its record
posted must stay in that order per (peer, tag), else the receiver rejects the later one)
are shared. So ``secure()`` calls :func:`guard_threads`, and from then on every public
method takes :data:`LOCK` (the progress thread is not needed for that); the hot
Send/Recv/send/recv take it themselves, whenever a second Python thread exists (the
progress thread included), so a single-threaded program's 1 KiB round trip pays no wrapper. A blocking call
that held the lock while it waited in MPI would keep out another thread whose call the
wait needs (a ping-pong in each of two threads of two ranks), so once the outermost
secure call of any thread finds a second Python thread (besides the progress thread),
:class:`_Shared` joins posted's ``_ACTIVE`` for good: every blocking secure call then
polls instead of blocking in MPI, and each poll releases the lock (all its levels) for a
``sched_yield``, so the other threads' calls run in between. A call posts each record
from its own buffer while that can happen (lane.py, bulk.py). Deciding at the call's
entry is race-free: a thread that finds itself alone cannot be joined by another Python
thread before it leaves (only a running thread starts one; the progress thread does not
count). A thread started from C without ``threading`` is not seen. Two threads receiving
on the same (source, tag) at once may take their messages out of order, and then the
later counter's record makes the earlier one a replay (rejected): give threads their own
tags, as most MPI programs do. Single-threaded programs keep the hot paths (blocking in
MPI), paying only the lock.

Outside MPICH this needs ``MPI_THREAD_MULTIPLE`` (mpi4py's default). Under a lower thread
level there is no thread, and a handle given to MPI's class-level calls fails with MPI's
``ERR_REQUEST`` (never a hang, never a silent success): use ``mpish.comm.Waitall`` & co.
Under MPICH the extended handles need no thread: they work at every thread level.
"""

from __future__ import annotations

import atexit
import collections
import functools
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from mpi4py import MPI

from . import extended
from .buffers import set_status
from .posted import _ACTIVE, FREED, progress_freed

F = TypeVar("F", bound=Callable[..., Any])

LOCK = threading.RLock()  # held by all secure code (module doc)
_COND = threading.Condition(threading.Lock())  # guards _WATCHED and _THREAD
_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()  # requests whose handle is not complete yet
# Those of them that MPI's own waits and tests cannot complete (all but MPICH's extended
# handles, which MPICH polls in the waiting thread: extended.py): only they need the progress
# thread to poll again soon after it completed one (_run).
_BLIND: weakref.WeakSet[Any] = weakref.WeakSet()
# _WATCHED in polling order, oldest first; may hold references to requests no longer watched
# (dropped when their turn comes). Each poll takes a bounded batch from the front, so a call's
# cost does not grow with the number of pending requests (thousands in a real halo or master).
_ORDER: collections.deque[weakref.ref[Any]] = collections.deque()
_CALL_BATCH, _THREAD_BATCH = 16, 64  # requests polled on the way out of a call, and per thread round
_THREAD: list[threading.Thread] = []
_STOP = threading.Event()
_MIN_DELAY, _MAX_DELAY = 20e-6, 2e-3  # seconds between polls: doubles while idle
_NEWS = threading.Event()  # the thread started an operation: its next poll comes soon


_DEPTH = [0]  # nesting of locked calls in the thread holding LOCK
_GUARDED: list[bool] = []  # guard_threads ran: public methods take LOCK from the start
_SHARED: list[Any] = []  # a second Python thread called secure code: blocking calls poll (module doc)
_PY_THREADS: dict[int, Any] = threading._active  # type: ignore[attr-defined]  # a cheap count of threads
_OWNED = LOCK._is_owned  # type: ignore[attr-defined]  # this thread holds LOCK
_CLASSES: list[type] = []  # their public methods take LOCK once the thread exists
_HERE = os.path.dirname(os.path.abspath(__file__))


def locked(function: F) -> F:
    """``function`` run holding :data:`LOCK`; on the way out of the outermost call, every
    handle whose operation finished meanwhile is completed, so that MPI's class-level
    calls made right after see it complete (as MPI would), without waiting for the thread.
    The outermost call also notices a second Python thread (threads in the module doc)."""
    acquire, release, depth = LOCK.acquire, LOCK.release, _DEPTH
    watched = _WATCHED.data  # type: ignore[attr-defined]  # the live references: a cheap test
    threads, shared, progress_thread = _PY_THREADS, _SHARED, _THREAD

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        acquire()
        depth[0] += 1
        try:
            if depth[0] == 1 and not shared and len(threads) > 1 + len(progress_thread):
                _share()
            result = function(*args, **kwargs)
        finally:
            depth[0] -= 1
            try:
                if not depth[0] and watched:
                    _poll_watched(_CALL_BATCH)
            finally:
                release()
        return result

    return call  # type: ignore[return-value]


def lock_public_methods(cls: type, hot: tuple[str, ...] = ()) -> dict[str, Callable[..., None]]:
    """Have every public method of ``cls`` take :data:`LOCK`, from the moment the progress
    thread starts or :func:`guard_threads` says user threads may call it.

    The ``hot`` methods (communicator.py's Send/Recv/send/recv) are left alone: each takes
    the lock itself, only while a second Python thread exists, through the locked version
    returned here (a wrapper's call costs a few percent of a 1 KiB round trip). Alone, a
    thread cannot be joined by another during its call, so it needs no lock. (Typed as
    returning None, the type of the methods' returns as mypy reads ``return`` in them.)"""
    for name in hot:
        getattr(cls, name)._self_locking = True
    _CLASSES.append(cls)
    if _THREAD or _GUARDED:
        _wrap(cls)
    return {name: locked(getattr(cls, name)) for name in hot}


def guard_threads() -> None:
    """Under ``MPI_THREAD_MULTIPLE``, secure calls take :data:`LOCK` from now on (called by
    ``secure()`` before any secure communicator exists: no call is under way unlocked)."""
    if threads_ok() and not _GUARDED:
        with _COND:
            for cls in _CLASSES:
                _wrap(cls)
            _GUARDED.append(True)


class _Shared:
    """Listed in posted's ``_ACTIVE`` once a second Python thread called secure code: every
    blocking secure call then polls, and each poll lets the other threads' calls run."""

    def progress(self) -> None:
        if not LOCK._is_owned():  # type: ignore[attr-defined]
            return
        depth, _DEPTH[0] = _DEPTH[0], 0  # the nesting is this thread's: kept aside meanwhile
        state = LOCK._release_save()  # type: ignore[attr-defined]  # all levels (as Condition.wait)
        try:
            os.sched_yield()
        finally:
            LOCK._acquire_restore(state)  # type: ignore[attr-defined]
            _DEPTH[0] = depth


def _share() -> None:
    _SHARED.append(_Shared())
    _ACTIVE.add(_SHARED[0])  # it has the one method progress() calls


def _wrap(cls: type) -> None:
    for name in dir(cls):
        if name.startswith("_"):
            continue
        raw = _own_attr(cls, name)
        value = getattr(cls, name, None)
        if isinstance(raw, (staticmethod, classmethod, property)) or not callable(value):
            continue
        if not hasattr(value, "__code__") or getattr(value, "__wrapped__", None) is not None:
            continue  # MPI's own (C) methods, or wrapped already
        if getattr(value, "_self_locking", False):
            continue
        setattr(cls, name, locked(value))


def _own_attr(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _in_secure_code(thread_id: int) -> bool:
    """True while that thread runs code of this package (it may hold no lock yet)."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code.co_filename.startswith(_HERE):
            return True
        frame = frame.f_back
    return False


def _poll_watched(batch: int) -> bool:
    """Complete the handles whose operation finished, testing at most ``batch`` of them, in
    turn (holding LOCK); True if any did."""
    _DEPTH[0] += 1  # a request collected meanwhile must not poll again
    requests: list[Any] = []
    try:
        with _COND:
            for _ in range(min(batch, len(_ORDER))):
                ref = _ORDER.popleft()
                request = ref()
                if request is not None and request in _WATCHED:
                    requests.append(request)
                    _ORDER.append(ref)  # its next turn
        return any([request._poll_handle() for request in requests])
    except Exception:  # reported by the request's own wait
        return False
    finally:
        requests.clear()  # a request collected here is cancelled holding the lock
        _DEPTH[0] -= 1


class HandleState:
    """What the handle's query callback reports (kept apart from the request: no cycle)."""

    __slots__ = ("cancelled", "completed", "error", "owner", "queried", "refuse", "result")

    def __init__(self) -> None:
        self.result: tuple[int, int, int] = (MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
        self.error: BaseException | None = None
        self.cancelled = False
        self.refuse = False  # MPI's class-level calls may not complete this request
        self.completed = False  # Grequest.complete was called
        self.owner: weakref.ref[Any] | None = None  # the request (MPICH's wait_fn/poll_fn poll it)
        self.queried = False  # MPI asked the status: it completed the handle (requests.py)


def _report(state: HandleState, status: Any) -> int:
    """The handle's status and error code, as MPI asks them (query callback)."""
    state.queried = True
    if state.refuse:
        if not threads_ok():
            _warn_thread_level()  # MPI itself asks: the program gave it a secure request
        return int(MPI.ERR_REQUEST)
    if state.error is not None:
        return state.error.Get_error_code() if isinstance(state.error, MPI.Exception) else int(MPI.ERR_OTHER)
    set_status(status, *state.result)
    status.Set_cancelled(state.cancelled)
    return int(MPI.SUCCESS)


def _query(status: Any, state: HandleState) -> None:
    code = _report(state, status)
    if code != MPI.SUCCESS:
        raise state.error if isinstance(state.error, MPI.Exception) else MPI.Exception(code)


def _owner(state: HandleState) -> Any:
    """The request whose handle this is, if it lives (None for a handle without one)."""
    return state.owner() if state.owner is not None else None


def _step(state: HandleState) -> None:
    """One poll of the handle's operation, in the thread MPI tests or waits in (MPICH's
    poll_fn/wait_fn, extended.py); never blocks on the lock (the progress thread's rule)."""
    request = _owner(state)
    if request is None or state.completed or not LOCK.acquire(blocking=False):
        return
    _DEPTH[0] += 1
    try:
        if _DEPTH[0] == 1 and not _SHARED and len(_PY_THREADS) > 1 + len(_THREAD):
            _share()
        request._poll_handle()
    except Exception as exc:  # MPI's wait reports it (query) instead of spinning for ever
        state.error = exc
        complete(request, state, None)
    finally:
        _DEPTH[0] -= 1
        LOCK.release()


def _cancel(state: HandleState) -> None:
    """MPI_Cancel of the handle (``MPI.Request.Cancel(request)``, mpi4py's class-level call):
    the request's own Cancel; the handle completes at the next poll, its status cancelled."""
    request = _owner(state)
    if request is not None and not state.completed:
        with LOCK:
            request.Cancel()


def _cancel_function(completed: bool, state: HandleState) -> None:  # mpi4py's Grequest.Start
    _cancel(state)


def _wait(state: HandleState) -> None:
    """MPI waits on the handle (MPICH's wait_fn, from MPI_Waitall): poll until complete."""
    while not state.completed and _owner(state) is not None:
        _step(state)
        if not state.completed:
            os.sched_yield()


_EXTENDED = extended.Callbacks(_report, _step, _wait, _cancel)


@functools.cache
def threads_ok() -> bool:
    return bool(MPI.Query_thread() >= MPI.THREAD_MULTIPLE)


def start_handle(state: HandleState) -> Any:
    """A new generalized request reporting ``state`` (whose ``owner`` the caller sets). Under
    MPICH an extended one, which MPI's waits and tests complete in the waiting thread, at any
    thread level (extended.py); else, without thread support, it is complete at once and its
    query fails (MPI's waits raise ERR_REQUEST, never hang)."""
    if extended.available() or threads_ok():
        extended.guard_sigint(_query, _cancel_function)  # a Ctrl-C in them: once MPI returned
    if extended.available():
        return extended.start(state, _EXTENDED)
    request = MPI.Grequest.Start(_query, None, _cancel_function, args=(state,))
    if not threads_ok():
        refuse(request, state)
    return request


def refused_handle() -> Any:
    """A handle MPI's calls refuse (ERR_REQUEST): complete at once, its query failing."""
    state = HandleState()
    request = MPI.Grequest.Start(_query, None, None, args=(state,))
    refuse(request, state)
    return request


@functools.cache
def _warn_thread_level() -> None:
    """Once, when a program gives a secure request to one of MPI's class-level calls under a
    thread level that has no progress thread: why it fails, and what to use instead (a
    porter with mpi4py.rc.thread_level = "funneled" saw only "See the MPI_ERROR field")."""
    level = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
             MPI.THREAD_SERIALIZED: "serialized"}.get(MPI.Query_thread(), str(MPI.Query_thread()))
    warnings.warn(f"mpish.secure: MPI runs at thread level {level!r}, not MPI_THREAD_MULTIPLE: "
                  "MPI.Request.Waitall, Testall, Waitany... cannot complete secure requests (they "
                  "fail with ERR_REQUEST); use each request's Wait/Test, or mpish.comm.Waitall and co.",
                  RuntimeWarning, stacklevel=_outside_mpish())


def _outside_mpish() -> int:
    """The stacklevel of the caller's first frame outside mpish (the program's line)."""
    root, level = os.path.dirname(_HERE.rstrip(os.sep)) + os.sep, 1
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(root):
        level, frame = level + 1, frame.f_back
    return level


def refuse(request: Any, state: HandleState) -> None:
    """Complete ``request``'s handle now, with a query that fails (ERR_REQUEST)."""
    state.refuse = True
    if not state.completed:
        state.completed = True
        MPI.Grequest.Complete(request)


def complete(request: Any, state: HandleState, obj: Any) -> None:
    """Complete ``request``'s handle with the received object (mpi4py's waitall returns it)."""
    if not state.completed:
        state.completed = True
        MPI.Grequest.complete(request, obj)


def watch(request: Any, *, polled_by_mpi: bool = False) -> None:
    """Have the progress thread complete ``request``'s handle while MPI waits on it.
    ``polled_by_mpi``: an extended handle, which MPICH's waits and tests complete themselves."""
    if not threads_ok():
        return
    with _COND:
        if request not in _WATCHED:
            _WATCHED.add(request)
            _ORDER.append(weakref.ref(request))
            if not polled_by_mpi:
                _BLIND.add(request)
        if _THREAD and threading.current_thread() is _THREAD[0]:
            # the thread itself started an operation (a persistent request MPI.Prequest.Startall
            # started): its completion is near, poll again soon (it waited up to 2 ms: 2 ms per
            # halo round). Not for the program's own requests: the thread would compete with
            # its Wait for the interpreter (measured: a Wait loop 57 -> 128 us per round).
            _NEWS.set()
        if len(_ORDER) > 2 * len(_WATCHED) + 64:  # references to requests done (Sendrecv's own)
            live = [ref for ref in _ORDER if ref() is not None and ref() in _WATCHED]
            _ORDER.clear()
            _ORDER.extend(live)
        _start_thread()
        _COND.notify()


def _start_thread() -> None:
    """Start the progress thread (holding _COND) if it is not running."""
    if not _THREAD:  # secure calls take the lock from now on; this one may not have
        for cls in _CLASSES:
            _wrap(cls)
        starter = None if _GUARDED else threading.get_ident()
        thread = threading.Thread(target=_run, args=(starter,), name="mpish-progress", daemon=True)
        _THREAD.append(thread)
        thread.start()


def free_receive(lane: Any, posted: Any) -> None:
    """A receive whose request was freed: completed by any later call's progress, and by the
    progress thread (started if need be) while the program waits elsewhere."""
    FREED.append((lane, posted))
    if not threads_ok():
        return
    with _COND:
        _start_thread()
        _COND.notify()


def unwatch(request: Any) -> None:
    with _COND:
        _WATCHED.discard(request)
        _BLIND.discard(request)


def _run(starter: int | None) -> None:
    # The call that started us holds no lock (None: it does, guard_threads wrapped the methods).
    while starter is not None and _in_secure_code(starter) and not _STOP.is_set():
        time.sleep(_MIN_DELAY)
    delay = _MIN_DELAY
    while True:
        with _COND:
            while not _WATCHED and not FREED and not _STOP.is_set():
                _COND.wait()
            if _STOP.is_set():
                return
        if _NEWS.wait(delay):  # its last round started operations: their handles are waited on
            _NEWS.clear()
            delay = _MIN_DELAY
        done = False
        # Only a handle MPI cannot poll needs the thread soon (an extended one is completed by
        # MPICH's own wait); polling again within microseconds for the others took the
        # interpreter from the program's own calls (an Irecv + Send + Wait: 91 -> 65 us
        # without the thread).
        urgent = bool(_BLIND) or bool(FREED)
        if LOCK.acquire(blocking=False):
            try:
                if _STOP.is_set() or MPI.Is_finalized():
                    return
                done = _poll_watched(_THREAD_BATCH)
                if FREED:
                    done = progress_freed() or done
            finally:
                LOCK.release()
        delay = _MIN_DELAY if done and urgent else min(2 * delay, _MAX_DELAY)


@atexit.register
def _stop() -> None:
    """Stop the thread before mpi4py finalizes MPI (atexit runs this first: registered later)."""
    _STOP.set()
    with _COND:
        _COND.notify_all()
        threads = list(_THREAD)
    for thread in threads:
        thread.join(timeout=5)
