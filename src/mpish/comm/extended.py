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
``free_fn``. A callback never raises into C: errors become MPI error codes.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
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
_KEYS = itertools.count(1)  # 0 would reach the callbacks as None


class Callbacks:
    """What the handle's callbacks do with its state (handles.py provides them)."""

    def __init__(self, query: Callable[[Any, Any], int], poll: Callable[[Any], None],
                 wait: Callable[[Any], None]) -> None:
        self.query, self.poll, self.wait = query, poll, wait


def _query_fn(key: int | None, status: int | None) -> int:
    try:
        state = _STATES.get(key or 0)
        if state is None:
            return MPI.ERR_REQUEST
        filled = MPI.Status()
        code = _CALLBACKS[0].query(state, filled)
        if status:
            ctypes.memmove(status, MPI._addressof(filled), MPI._sizeof(MPI.Status))
        return code
    except BaseException as exc:  # never into C
        log.warning("query of a secure request's handle failed: %r", exc)
        return MPI.ERR_OTHER


def _free_fn(key: int | None) -> int:
    _STATES.pop(key or 0, None)
    return MPI.SUCCESS


def _cancel_fn(key: int | None, complete: int) -> int:
    return MPI.SUCCESS  # a secure receive is cancelled by its own Cancel (requests.py)


def _poll_fn(key: int | None, status: int | None) -> int:
    try:
        state = _STATES.get(key or 0)
        if state is not None:
            _CALLBACKS[0].poll(state)
        return MPI.SUCCESS
    except BaseException as exc:
        log.warning("progress of a secure request in MPI's test failed: %r", exc)
        return MPI.ERR_OTHER


def _wait_fn(count: int, keys: Any, timeout: float, status: int | None) -> int:
    try:
        for i in range(count):
            state = _STATES.get(keys[i] or 0)
            if state is not None:
                _CALLBACKS[0].wait(state)
        return MPI.SUCCESS
    except BaseException as exc:
        log.warning("progress of a secure request in MPI's wait failed: %r", exc)
        return MPI.ERR_OTHER


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
