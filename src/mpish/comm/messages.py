"""Messages matched by ``Mprobe``/``Improbe`` of a secure communicator, and object decoding.

The message is authenticated and taken out of MPI when it is probed (lane.py: a probe
reports only authenticated messages); its receive only delivers it.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

from . import serial
from .buffers import receive_into, set_status
from .handles import lock_public_methods
from .lane import Early, Lane, deliver_early
from .posted import PostedRecv
from .requests import SecureRequest


def loads(data: bytes | bytearray) -> Any:
    """The object of an authenticated message; None for an empty one (as mpi4py's recv)."""
    if not data:
        return None
    return serial.loads(data)  # authenticated bytes from a peer holding an authorized key


class SecureMessage(MPI.Message):
    """A message matched by ``Mprobe``/``Improbe`` (already authenticated and taken out of MPI).

    An ``MPI.Message`` for ``isinstance`` (its MPI handle stays MPI.MESSAGE_NULL: nothing is
    left in MPI); equal to MPI.MESSAGE_NULL once received, as mpi4py's messages are. One
    from MPI.PROC_NULL is equal to MPI.MESSAGE_NO_PROC until then, as mpi4py's (a program's
    "no process" test took the wrong branch, helper-134).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> SecureMessage:
        return super().__new__(cls)  # MPI.Message's constructor takes no lane

    def __init__(self, lane: Lane, early: Early) -> None:
        self._lane = lane
        self._early: Early | None = early
        self._no_proc = early.source == MPI.PROC_NULL

    def __bool__(self) -> bool:
        return self._early is not None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MPI.Message) and not isinstance(other, SecureMessage):
            if other == MPI.MESSAGE_NO_PROC:
                return self._no_proc and self._early is not None
            return bool(other == MPI.MESSAGE_NULL) and self._early is None
        return self is other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = object.__hash__

    def _take(self) -> Early:
        if self._early is None:
            raise ValueError("this message was already received")
        early, self._early = self._early, None
        return early

    def Recv(self, buf: Any, status: Any = None) -> None:
        s, t, n = self._deliver(buf)
        set_status(status, s, t, n)

    def _deliver(self, buf: Any) -> tuple[int, int, int]:
        """The message into ``buf``: (source, tag, bytes). A datatype with gaps (a matrix
        column) takes it packed, scattered by MPI, as a receive does (communicator.py)."""
        sink, scatter = receive_into(buf)
        s, t, n, _ = deliver_early(self._take(), sink)
        if scatter is not None:
            scatter(n)
        return s, t, n

    def recv(self, status: Any = None) -> Any:
        s, t, n, data = deliver_early(self._take(), None)
        set_status(status, s, t, n)
        assert data is not None
        return loads(data)

    def Irecv(self, buf: Any) -> SecureRequest:
        """Received now (the message is here); the request completes with its status, or
        raises the receive's error (a truncation) at its wait, as MPI's Imrecv."""
        posted = PostedRecv(MPI.ANY_SOURCE, MPI.ANY_TAG, None)
        try:
            posted.result = self._deliver(buf)
        except MPI.Exception as exc:
            posted.error = exc
        posted.done = True
        return SecureRequest(self._lane, posted=posted)

    def irecv(self) -> SecureRequest:
        posted = PostedRecv(MPI.ANY_SOURCE, MPI.ANY_TAG, None)
        s, t, n, posted.obj = deliver_early(self._take(), None)
        posted.result, posted.done = (s, t, n), True
        return SecureRequest(self._lane, posted=posted, is_object=True)


lock_public_methods(SecureMessage)
