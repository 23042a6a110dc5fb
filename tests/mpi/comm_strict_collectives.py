"""Run under ``mpiexec -n 3`` or more: with ``strict=True`` a forged record on the collective lane
raises in the collective that met it, once that collective is whole, so every rank gets the
genuine data and the later collectives stay in step.

helper-108 found that the collective raised where it met the record: the genuine record it
waited for stayed queued, and the next collective took it (every later Bcast or Allreduce a
collective behind, with no error), an inner rank of a Bcast tree forwarded the stale block and
the ranks under it hung, and a persistent Bcast started by ``MPI.Prequest.Startall`` completed
in MPI's Waitall with its buffer never written. Prints ``OK <case>`` per case and ``ALL OK``;
any failure aborts the job.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm import COLL_TAG, SecureComm
from mpish.wire.errors import AuthenticationError
from mpish.wire.record import HEADER, RecordType

WORLD = MPI.COMM_WORLD
FORGED = (AuthenticationError,)  # a forged record with the counter its sender's next record will have


def forge(c: SecureComm, source: int, dest: int) -> None:
    """Rank ``source`` writes a forged record (a well-formed header, random ciphertext) to
    ``dest`` on the collective lane's MPI communicator, ahead of the next collective's."""
    if c.rank == source:
        session = c._coll.sealers[dest].session
        counter = c._coll.sealers[dest].next_counter(COLL_TAG)  # in the clear in every header
        header = HEADER.pack(1, RecordType.DATA, 0, 0, session, source, dest, COLL_TAG, counter, 24)
        record = header + os.urandom(24)
        c._comms[2].Send([bytearray(record), MPI.BYTE], dest, COLL_TAG)
    WORLD.Barrier()


def in_step(c: SecureComm, victim: int, collective: object) -> list[object]:
    """Run ``collective`` three times (its argument: 1, 2, 3): the victim's first raises the
    forged record's error, and every other result is the genuine one."""
    results = []
    for k in (1, 2, 3):
        try:
            results.append(collective(k))  # type: ignore[operator]
        except FORGED:
            assert c.rank == victim and k == 1, (c.rank, k)
            results.append("raised")
        else:
            assert not (c.rank == victim and k == 1), "the forged record did not raise"
    return results


def check_bcast(c: SecureComm) -> None:
    forge(c, 0, 1)
    seen: list[object] = []

    def bcast(k: int) -> list[float]:
        buf = np.full(2, float(k)) if c.rank == 0 else np.zeros(2)
        seen.append(buf)
        c.Bcast(buf, 0)
        return buf.tolist()

    results = in_step(c, 1, bcast)
    assert results[1:] == [[2.0, 2.0], [3.0, 3.0]], results
    assert seen[0].tolist() == [1.0, 1.0], seen  # type: ignore[attr-defined]  # written, then raised
    assert c.rank != 1 or c.rejected == 1, c.rejected


def check_bcast_through_an_inner_rank_of_the_tree(c: SecureComm) -> None:
    victim = 2 if c.size >= 4 else 1  # at 4 ranks, rank 2 passes the blocks on to rank 3
    forge(c, 0, victim)
    results = in_step(c, victim, lambda k: c.bcast(k if c.rank == 0 else None, 0))
    assert results[1:] == [2, 3] and results[0] in (1, "raised"), results


def check_allreduce(c: SecureComm) -> None:
    forge(c, 1, 0)
    sums: list[object] = []

    def allreduce(k: int) -> float:
        out = np.zeros(1)
        sums.append(out)
        c.Allreduce(np.full(1, float((c.rank + 1) * k)), out, MPI.SUM)
        return float(out[0])

    whole = c.size * (c.size + 1) / 2
    results = in_step(c, 0, allreduce)
    assert results[1:] == [2 * whole, 3 * whole], results
    assert float(sums[0][0]) == whole, sums  # type: ignore[index]


def check_barrier_meeting_it_in_its_second_round(c: SecureComm) -> None:
    """Rank 2 takes rank 0's record in the dissemination barrier's second round (distance 2,
    at 3 and 4 ranks): the forged record ahead of it raises there, the others pass, and the
    barriers after it stay in step (a record left queued would be taken by the next one)."""
    forge(c, 0, 2)
    results = in_step(c, 2, lambda k: c.Barrier())
    assert results[1:] == [None, None], results
    value = c.bcast(c.size if c.rank == 0 else None, 0)  # the lane still in step for another kind
    assert value == c.size, value


def check_a_persistent_bcast_started_by_mpi_writes_its_buffer(c: SecureComm) -> None:
    forge(c, 0, 1)
    buf = np.full(2, 9.0) if c.rank == 0 else np.zeros(2)
    request = c.Bcast_init(buf, 0)
    MPI.Prequest.Startall([request])
    MPI.Request.Waitall([request])
    assert buf.tolist() == [9.0, 9.0], buf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        request.Free()  # MPI's Waitall could not raise the error: it is not lost
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == (c.rank == 1) and all("Error: record" in s for s in said), said


CASES = (check_bcast, check_bcast_through_an_inner_rank_of_the_tree, check_allreduce,
         check_barrier_meeting_it_in_its_second_round,
         check_a_persistent_bcast_started_by_mpi_writes_its_buffer)


def main() -> None:
    assert WORLD.Get_size() >= 3, "run with mpiexec -n 3 or more"
    c = mpish.secure(WORLD, strict=True)
    for case in CASES:
        case(c)
        WORLD.Barrier()
        if c.rank == 0:
            print(f"OK {case.__name__.removeprefix('check_')}", flush=True)
    c.Barrier()
    if c.rank == 0:
        print("ALL OK", flush=True)
    c.Free()


if __name__ == "__main__":
    run(main)
