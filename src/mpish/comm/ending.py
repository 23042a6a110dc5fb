"""The end of a process that used secure communicators: it waits for their other members,
progressing MPI, before mpi4py finalizes MPI.

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
finalized) a process starts an ``Ibarrier`` on an internal duplicate of each secure
communicator it has not freed (nothing of the program's can match it there) and progresses
MPI until every one completed: a member still waiting for its sends to complete keeps the
others progressing until it too reaches its end, which is what its finalize would wait for
anyway. The barriers are nonblocking, all started at once, so overlapping communicators
cannot deadlock on their order. A process that finalized MPI itself, or an MPI error (a
dead member under fault tolerance), ends the wait; a sleep of up to 10 ms between looks
keeps the waiting ranks off the cores the others need.
"""

from __future__ import annotations

import atexit
import time
from typing import Any

from mpi4py import MPI

_LIVE: dict[int, Any] = {}  # id -> an internal communicator of each secure one not freed
MAX_SLEEP = 0.010


def register(comm: Any) -> None:
    _LIVE[id(comm)] = comm


def unregister(comm: Any) -> None:
    _LIVE.pop(id(comm), None)


@atexit.register
def settle() -> None:
    """Wait for every other member of the live secure communicators to reach its end."""
    comms = list(_LIVE.values())
    _LIVE.clear()
    if not comms or MPI.Is_finalized() or not MPI.Is_initialized():
        return
    try:
        requests = [comm.Ibarrier() for comm in comms]
        delay = 1e-5
        while not MPI.Request.Testall(requests):
            time.sleep(delay)
            delay = min(2 * delay, MAX_SLEEP)
    except MPI.Exception:
        return
