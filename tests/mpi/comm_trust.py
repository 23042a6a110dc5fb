"""Run under mpiexec with one MPISH_HOME per rank (MPMD): does secure(COMM_WORLD) accept the keys?

Each rank prints ``ACCEPTED <rank>`` (and exchanges a message) or ``REFUSED <rank> <error>``;
an unexpected exception aborts the job. ``sys.argv[1]`` is ``accept`` or ``refuse``.
"""

from __future__ import annotations

import sys

from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.wire.errors import AuthenticationError

WORLD = MPI.COMM_WORLD


def main() -> None:
    expected = sys.argv[1]
    rank = WORLD.Get_rank()
    try:
        c = mpish.secure(WORLD)
    except AuthenticationError as exc:
        print(f"REFUSED {rank} {exc}", flush=True)
        assert expected == "refuse", "keys refused but should have been accepted"
        WORLD.Barrier()  # every rank got here: nobody hangs
        return
    assert expected == "accept", "keys accepted but should have been refused"
    assert c.allreduce(1) == c.size
    print(f"ACCEPTED {rank}", flush=True)
    c.Free()


if __name__ == "__main__":
    run(main)
