"""Run under ``mpiexec -n 3``: setup messages of one secure() replayed in a later one are rejected.

Rank 1 (a child of rank 0 in the setup tree) records the messages it sends in a first
``secure()``; in a second one it sends its recorded message 1 instead of the fresh one
(a replay from another communicator of the same job), and in a third rank 0 sends
rank 2 the message 2 (carrying the then job secret) recorded in the first. Each replay
is tried as recorded (the record header names the old job: caught before Noise) and
rebound (the header rewritten to the current job id: only the Noise prologue and
ephemeral keys catch it). Each time every rank must raise AuthenticationError, none
may hang; then a clean ``secure()`` works and carries a message.
Prints ``REJECTED <case> <rank> <error>`` and ``ALL OK``.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm import setup
from mpish.wire.errors import AuthenticationError

WORLD = MPI.COMM_WORLD
RANK = WORLD.Get_rank()
ORIGINAL, RECEIVE = setup._post, setup._receive
PARENT = setup.parent_of(RANK)
SESSION = slice(4, 20)  # the session id in a record header (wire/record.py)
recorded: dict[tuple[int, int], bytes] = {}  # (dest, index among the slots to dest) -> slot
replay: set[tuple[int, int]] = set()  # which recorded slots this rank sends instead of fresh ones
counts: dict[int, int] = {}  # slots sent to each rank in the current secure()
job = bytearray(16)  # the current secure()'s job id, as this rank learnt it
rebind = [False]  # rewrite the replayed record's header to the current job id


def receiving(comm: Any, source: int) -> memoryview:
    slot = RECEIVE(comm, source)
    if source == PARENT and not counts.get(-2):
        counts[-2] = 1
        job[:] = slot[1:17]  # DOWN1: status, job id, key
    return slot


def posting(comm: Any, slot: bytes | bytearray, dest: int) -> Any:
    index = counts.get(dest, 0)
    counts[dest] = index + 1
    if index == 0 and PARENT is None:
        job[:] = bytes(slot[1:17])  # rank 0's DOWN1
    if (dest, index) in replay:
        old = bytearray(recorded[dest, index])
        start = 33 if dest == PARENT else 1  # UP: status, key, record; DOWN2: status, record
        if rebind[0]:
            old[start + SESSION.start : start + SESSION.stop] = job
        slot = old
    elif not replay:
        recorded[dest, index] = bytes(slot)
    return ORIGINAL(comm, slot, dest)


def attempt(case: str, slots: set[tuple[int, int]], *, rebound: bool) -> None:
    counts.clear()
    rebind[0] = rebound
    replay.clear()
    replay.update(slots | {(-1, -1)})  # never empty: this secure() records nothing
    try:
        mpish.secure(WORLD).Free()
    except AuthenticationError as exc:
        print(f"REJECTED {case} {RANK} {exc}", flush=True)
    else:
        raise AssertionError(f"{case}: a replayed setup message was accepted")
    WORLD.Barrier()  # every rank got here: nobody hangs


def main() -> None:
    assert WORLD.Get_size() == 3, "run with mpiexec -n 3"
    setup._post = posting  # type: ignore[assignment]
    setup._receive = receiving  # type: ignore[assignment]
    mpish.secure(WORLD).Free()  # records every slot this rank sends
    for rebound in (False, True):
        suffix = "-rebound" if rebound else ""
        # rank 1 to its parent: status, key, message 1 of an earlier communicator
        attempt("hello" + suffix, {(0, 0)} if RANK == 1 else set(), rebound=rebound)
        # rank 0 to rank 2: DOWN1 is slot 0, slot 1 the answer carrying the earlier secret
        attempt("answer" + suffix, {(2, 1)} if RANK == 0 else set(), rebound=rebound)
    setup._receive = RECEIVE  # type: ignore[assignment]
    setup._post = ORIGINAL  # type: ignore[assignment]
    comm = mpish.secure(WORLD)  # nothing of the failed setups is left behind
    token = comm.bcast(b"genuine" if RANK == 0 else None, 0)
    assert token == b"genuine" and comm.rejected == 0
    comm.Free()
    print(f"ALL OK {RANK}", flush=True)


if __name__ == "__main__":
    run(main)
