"""The end of a process that used secure communicators: a receiver of long messages stays,
progressing MPI, until their senders are done, before mpi4py finalizes MPI.

Theory of operation
-------------------
A long message is many MPI messages (bulk.py). Under MPICH's shared memory the receiver of
a record copies it out of the sender (CMA) and owes the sender an acknowledgement, which
MPICH queues when the sender's queue is full and sends at a later progress. MPI_Finalize of
MPICH waits for the other processes in the process manager (a PMI barrier) without
progressing MPI: a receiver that had all its data and finalized never sent what it owed,
and its sender waited in ``Wait`` for ever (a porter's ring of 24 MB ``Isend``/``Recv``/
``Wait`` at ``-n 3``: one rank hung in 6 of 6 runs; raw mpi4py sending the same 93 messages
of 256 KiB hangs the same way, one big message does not).

So at exit (an ``atexit`` handler registered after mpi4py's, so it runs before MPI is
finalized or aborted), on each secure communicator not freed, a process

1. completes what it still sends (the records of freed or dropped requests: posted.py's
   detached sends),
2. sends an empty notice (tag :data:`ENDING_TAG` on the collective lane's internal
   communicator) to every peer it sent a long message to: "my sends are done",
3. waits, progressing MPI, for that notice from every peer it received a long message from,
   at most :data:`ENDING_WAIT` seconds; a notice that does not come in time is cancelled.

Only pairs that exchanged long messages wait for each other, and for a bounded time: a
process that raised (``python -m mpi4py`` then aborts the job), finalized MPI itself, or was
spawned and left before its manager costs its peers at most that wait, never a hang (an
earlier version waited in a barrier over every member: any member that did not take part
hung the others). A notice carries nothing and is not authenticated: a forged one can only
make a receiver leave early, which is where the program stood without this module; a
message there that is not empty is received whole (never truncated: ``transport.mpi.discard``)
and dropped.
"""

from __future__ import annotations

import atexit
import time
from typing import Any

from mpi4py import MPI

from ..transport.mpi import discard, probed_size
from .posted import finish_detached

ENDING_TAG = 4  # on the collective lane's bulk communicator (COLL_TAG 1, ACK_TAG 3)
ENDING_WAIT = 10.0  # seconds a process waits for its senders' notices at most
MAX_SLEEP = 0.010

_LIVE: dict[int, Any] = {}  # id(comm) -> the secure communicator, until it is freed


def register(comm: Any) -> None:
    _LIVE[id(comm)] = comm


def unregister(comm: Any) -> None:
    _LIVE.pop(id(comm), None)


@atexit.register
def settle() -> None:
    """The exit protocol above, on every live secure communicator at once."""
    comms = list(_LIVE.values())
    _LIVE.clear()
    if not comms or MPI.Is_finalized() or not MPI.Is_initialized():
        return
    deadline = time.monotonic() + ENDING_WAIT
    try:
        finish_detached(deadline)
        sends: list[Any] = []
        waiting: list[tuple[Any, int]] = []  # (communicator, peer) whose notice is due
        for comm in comms:
            lanes = (comm._p2p, comm._coll)
            notices = comm._comms[3]  # the collective lane's bulk communicator
            for peer in set().union(*(lane.long_to for lane in lanes)):
                sends.append(notices.Isend([b"", MPI.BYTE], peer, ENDING_TAG))
            waiting += [(notices, peer) for peer in set().union(*(lane.long_from for lane in lanes))]
        delay = 1e-5
        while waiting and time.monotonic() < deadline:
            waiting = [pair for pair in waiting if not _notice(*pair, deadline)]
            if waiting:
                time.sleep(delay)
                delay = min(2 * delay, MAX_SLEEP)
        MPI.Request.Testall(sends)  # empty: sent at once; what is left, MPI's finalize takes
    except MPI.Exception:
        return


def _notice(notices: Any, peer: int, deadline: float) -> bool:
    """True once ``peer``'s empty notice came. Matched first, never received into a buffer
    shorter than the message (Open MPI 5 writes such a one past the buffer: a forged long
    "notice" into ``bytearray(0)`` overwrote libpython's globals); anything longer is
    dropped whole and the wait goes on, within the deadline (a peer that keeps sending them
    holds no one past it)."""
    status = MPI.Status()
    while time.monotonic() < deadline:
        message = notices.Improbe(peer, ENDING_TAG, status)
        if message is None:
            return False
        size = probed_size(status)
        discard(message, size)
        if size == 0:
            return True
    return False
