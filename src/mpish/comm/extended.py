"""MPICH's extended generalized requests (``MPIX_Grequest_start``), through ctypes.

Theory of operation
-------------------
A secure request's MPI handle is a generalized request (handles.py). MPI's standard
``MPI_Grequest_start`` gives MPI no way to make the request progress: only the program
completes it, so a thread must (handles.py's progress thread). MPICH's
``MPIX_Grequest_start`` adds two callbacks MPI calls from its own completion calls, in the
thread that waits: ``poll_fn`` (from ``MPI_Test*``, ``MPI_Wait``, ``MPI_Waitany``,
``MPI_Waitsome``: one step, then return) and ``wait_fn`` (from ``MPI_Waitall``: return once
the request is complete). MPICH calls both outside its global critical section, so they may
call MPI (``MPI_Test`` of the lanes' requests, ``MPI_Grequest_complete``).

Two things need them, under MPICH only:

- ``MPI_Waitall`` on a list holding ``MPI_REQUEST_NULL`` (or a completed request) next to a
  pending standard generalized request aborts the job on an assertion of MPICH's own
  (``request_impl.c``: ``kind != MPIR_REQUEST_KIND__GREQUEST``): MPICH expects every
  generalized request of such a list to be complete already, and completes extended ones
  through their ``wait_fn`` first. The non-periodic halo exchange's ``[REQUEST_NULL] * 4``
  is that list.
- Latency: MPI's waits complete secure requests in the waiting thread, at once, instead of
  through the progress thread's back-off (a halo round of ``MPI.Request.Waitall``: about
  1 ms before).

Used only where the library is MPICH (or MVAPICH) 4.1 or later and ``MPIX_Grequest_start``
is found: Open MPI's function of that name takes other arguments. The callbacks never write
the status MPI passes to ``poll_fn``/``wait_fn`` (MPICH passes ``MPI_STATUSES_IGNORE``'s
entries there); ``query_fn`` copies a status mpi4py filled, so no field layout is assumed.
The ``extra_state`` is a key into :data:`_STATES` (never a Python pointer), dropped by
``free_fn``. A callback never raises into C: errors become MPI error codes, and a Ctrl-C
that Python would raise in a callback is delivered again once MPI has returned (as raw
MPI's wait, which a Ctrl-C does not end; within about a millisecond of the return, so the
KeyboardInterrupt may surface a few statements after the wait). ``MPI_Cancel`` on the
handle (``MPI.Request.Cancel``) is the request's own Cancel.

MPICH reports a failed query as ``MPI_ERR_OTHER`` (its ``**userquery``, naming our code):
a truncated receive completed by ``MPI.Request.Waitall`` raises ``ERR_IN_STATUS`` as raw,
but its status holds ``ERR_OTHER`` where raw's holds ``ERR_TRUNCATE``.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from mpish.report import Diagnostics

log = Diagnostics("mpish.comm")

_VENDORS = ("MPICH", "MVAPICH")
_QUERY = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_FREE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_CANCEL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_POLL = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_WAIT = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_double, ctypes.c_void_p
)

_STATES: dict[int, Any] = {}  # extra_state key -> the handle's state (handles.HandleState)
_RUNNING = [0]  # callbacks running now (in any thread)
_DEFERRED = threading.Event()  # a Ctrl-C is to be delivered again once MPI returned
_CODES: set[Any] = set()  # other callbacks whose Ctrl-C is deferred (handles.py's query)
_GUARDED: list[bool] = []
_KEYS = itertools.count(1)  # 0 would reach the callbacks as None


class Callbacks:
    """What the handle's callbacks do with its state (handles.py provides them)."""

    def __init__(self, query: Callable[[Any, Any], int], poll: Callable[[Any], None],
                 wait: Callable[[Any], None], cancel: Callable[[Any], None]) -> None:
        self.query, self.poll, self.wait, self.cancel = query, poll, wait, cancel


def _callback(what: str, action: Callable[[], int]) -> int:
    """Run a callback's ``action`` for C: never raises (an error is an MPI error code), and a
    Ctrl-C that Python raises in it is deferred until MPI returns (:func:`_defer_interrupt`)."""
    _RUNNING[0] += 1
    try:
        while True:
            try:
                return action()
            except KeyboardInterrupt:
                _defer_interrupt()  # and go on: raw MPI's wait does not end at a Ctrl-C either
    except BaseException as exc:  # never into C
        log.warning("%s of a secure request failed: %r", what, exc)
        return int(MPI.ERR_OTHER)
    finally:
        _RUNNING[0] -= 1


def _defer_interrupt() -> None:
    """A Ctrl-C landed in a callback, inside MPI's wait. Raw MPI waits on and Python raises
    KeyboardInterrupt once the wait returned; here Python raised it in the callback, and
    swallowing it would lose it. So a thread sends SIGINT to the main thread again whenever
    no callback runs: once MPI has returned, Python raises it in the program, as for raw MPI
    (while MPI still waits, it lands in the next callback and is deferred again)."""
    if not _DEFERRED.is_set():
        _DEFERRED.set()
        threading.Thread(target=_redeliver, name="mpish-interrupt", daemon=True).start()


def guard_sigint(*callbacks: Callable[..., Any]) -> None:
    """Python runs its SIGINT handler at the next instruction of the main thread, and inside
    MPI's wait that is a callback's first one, before any ``try`` (ctypes then returns MPI a
    garbage code; mpi4py's own callbacks turn it into an MPI error). So the handler is
    wrapped: in a callback (these, or this module's), the Ctrl-C is deferred
    (:func:`_defer_interrupt`); elsewhere the program's handler runs as before. Installed once,
    from the main thread only (Python's rule), over a Python-level handler only."""
    if _GUARDED:  # asked at every secure request's start: once installed, nothing to do
        return
    _CODES.update(callback.__code__ for callback in callbacks)
    current = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(current):
        return
    _GUARDED.append(True)

    def guard(signum: int, frame: Any) -> Any:
        if _RUNNING[0] or _in_callback(frame):
            _defer_interrupt()
            return None
        return current(signum, frame)

    signal.signal(signal.SIGINT, guard)


def _in_callback(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code.co_filename == __file__ or frame.f_code in _CODES:
            return True
        frame = frame.f_back
    return False


def _redeliver() -> None:
    time.sleep(0.001)
    while _RUNNING[0]:
        time.sleep(0.001)
    _DEFERRED.clear()
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)


def _query_fn(key: int | None, status: int | None) -> int:
    def query() -> int:
        state = _STATES.get(key or 0)
        if state is None:
            return int(MPI.ERR_REQUEST)
        filled = MPI.Status()
        code = _CALLBACKS[0].query(state, filled)
        if status:
            ctypes.memmove(status, MPI._addressof(filled), MPI._sizeof(MPI.Status))
        return code

    return _callback("the query", query)


def _free_fn(key: int | None) -> int:
    _STATES.pop(key or 0, None)
    return int(MPI.SUCCESS)


def _on_state(what: str, key: int | None, act: Callable[[Any], None]) -> int:
    def action() -> int:
        state = _STATES.get(key or 0)
        if state is not None:
            act(state)
        return int(MPI.SUCCESS)

    return _callback(what, action)


def _cancel_fn(key: int | None, complete: int) -> int:
    return _on_state("MPI_Cancel", key, lambda state: _CALLBACKS[0].cancel(state))  # its own Cancel


def _poll_fn(key: int | None, status: int | None) -> int:
    return _on_state("progress in MPI's test", key, lambda state: _CALLBACKS[0].poll(state))


def _wait_fn(count: int, keys: Any, timeout: float, status: int | None) -> int:
    for i in range(count):
        code = _on_state("progress in MPI's wait", keys[i], lambda state: _CALLBACKS[0].wait(state))
        if code != MPI.SUCCESS:
            return code
    return int(MPI.SUCCESS)


# The C functions: kept referenced for the life of the process (MPI may call them any time).
_C_FUNCTIONS = (_QUERY(_query_fn), _FREE(_free_fn), _CANCEL(_cancel_fn), _POLL(_poll_fn), _WAIT(_wait_fn))
_CALLBACKS: list[Callbacks] = []


@functools.cache
def _start_function() -> tuple[Any, Any] | None:
    """MPICH's ``MPIX_Grequest_start`` and the C type of a request handle, or None where it
    is missing or not MPICH's."""
    name, version = MPI.get_vendor()
    if name not in _VENDORS or tuple(version) < (4, 1):
        return None
    handle_type = {ctypes.sizeof(ctypes.c_uint): ctypes.c_uint,  # as mpi4py's .handle: unsigned
                   ctypes.sizeof(ctypes.c_void_p): ctypes.c_void_p}.get(MPI._sizeof(MPI.Request))
    if handle_type is None:
        return None
    try:
        start = ctypes.CDLL(MPI.__file__).MPIX_Grequest_start  # the extension's libmpi
    except (OSError, AttributeError):
        return None
    start.restype = ctypes.c_int
    start.argtypes = [_QUERY, _FREE, _CANCEL, _POLL, _WAIT, ctypes.c_void_p, ctypes.POINTER(handle_type)]
    return start, handle_type


def available() -> bool:
    return _start_function() is not None


def start(state: Any, callbacks: Callbacks) -> Any:
    """A new extended generalized request whose callbacks act on ``state`` (an MPI.Grequest)."""
    found = _start_function()
    assert found is not None, "extended.start without extended.available()"
    function, handle_type = found
    if not _CALLBACKS:
        _CALLBACKS.append(callbacks)

    key = next(_KEYS)
    _STATES[key] = state
    handle = handle_type()
    code = function(*_C_FUNCTIONS, ctypes.c_void_p(key), ctypes.byref(handle))
    if code != MPI.SUCCESS:
        _STATES.pop(key, None)
        raise MPI.Exception(code)
    # Grequest(...) of a Grequest sets the handle Complete() checks (fromhandle alone does not)
    return MPI.Grequest(MPI.Grequest.fromhandle(handle.value or 0))
