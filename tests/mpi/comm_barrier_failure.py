"""Run under ``mpiexec -n 3`` or more: the dissemination Barrier when a round fails on one rank.

Rank 1's receive of round k (k = 0 .. rounds - 1) takes its record, then raises an MPI error
(injected: a Barrier has no argument a program could get wrong; a receive that fails so is one
that met an abort notice or a record that is not the barrier's). The rounds go on: rank 1
sends abort notices instead of its empty records from round k + 1, and every rank a notice
reaches passes notices on in its later rounds. Expected, computed here by that rule: rank 1
raises its error, each rank a notice reached raises CollectiveAborted naming rank 1, every
other rank passes (it heard from every rank, directly or through ranks that had); no rank
hangs, and no record is left queued (the next Barrier and an allreduce are in step, and no
record was rejected). Prints
``OK round <k>`` per round and ``ALL OK``; any failure aborts the job.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm import CollectiveAborted

WORLD = MPI.COMM_WORLD
VICTIM = 1


def told(size: int, failing_round: int) -> set[int]:
    """The ranks that end with an error: the victim, and those its notices reach."""
    failed, distance, k = set(), 1, 0
    while distance < size:
        # Round k: a failed rank sends a notice to rank + distance; then each rank receives.
        reached = {(rank + distance) % size for rank in failed}
        failed |= reached
        if k == failing_round:
            failed.add(VICTIM)
        distance, k = distance * 2, k + 1
    return failed


def main() -> None:
    c = mpish.secure(WORLD)
    size, rank = c.size, c.rank
    rounds = (size - 1).bit_length()
    for failing_round in range(rounds):
        genuine = c._c_recv_into
        calls = [0]

        def failing(
            sink: Any, source: int, genuine: Any = genuine, calls: list[int] = calls, k: int = failing_round
        ) -> None:
            calls[0] += 1
            genuine(sink, source)  # the record is taken, as by a receive that then fails
            if calls[0] == k + 1:
                raise MPI.Exception(MPI.ERR_OTHER)

        if rank == VICTIM:
            c._c_recv_into = failing  # type: ignore[method-assign]
        try:
            c.Barrier()
        except CollectiveAborted as exc:  # (an MPI.Exception too: it comes first)
            assert str(exc).startswith(f"the collective failed on rank {VICTIM}"), exc
            outcome = "aborted"
        except MPI.Exception as exc:
            outcome = "error" if exc.Get_error_class() == MPI.ERR_OTHER else repr(exc)
        else:
            outcome = "passed"
        finally:
            if rank == VICTIM:
                del c._c_recv_into
        expected = told(size, failing_round)
        want = "error" if rank == VICTIM else "aborted" if rank in expected else "passed"
        assert outcome == want, (rank, failing_round, outcome, want)
        assert rank != VICTIM or calls[0] == rounds, calls  # every round ran on the failing rank
        c.Barrier()
        assert c.allreduce(1) == size
        assert c.rejected == 0, c.rejected
        outcomes = WORLD.gather(outcome, root=0)
        if rank == 0:
            print(f"OK round {failing_round}: {' '.join(outcomes)}", flush=True)
    c.Free()
    if rank == 0:
        print("ALL OK", flush=True)


if __name__ == "__main__":
    run(main)
