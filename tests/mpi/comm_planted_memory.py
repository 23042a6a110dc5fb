"""Run under mpiexec as root: rank 1 has mapped a file of another user named as MPICH names a
job's shared memory (as if MPI ran on a planted segment); does secure() refuse on every rank?

Each rank prints ``REFUSED <rank> <error>`` or ``ACCEPTED <rank>``. ``sys.argv[1]`` is
``named`` (the planted file keeps its name) or ``removed`` (unlinked once mapped, to hide it).
"""

from __future__ import annotations

import mmap
import os
import sys

from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.wire.errors import AuthenticationError

WORLD = MPI.COMM_WORLD
NOBODY = 65534


def plant() -> mmap.mmap:
    path = f"/dev/shm/mpich_shm_mpishtest{os.getpid():x}_0"
    with open(path, "w+b") as handle:
        handle.truncate(mmap.PAGESIZE)
        os.fchown(handle.fileno(), NOBODY, NOBODY)
        mapped = mmap.mmap(handle.fileno(), mmap.PAGESIZE)
    if sys.argv[1] == "removed":
        os.unlink(path)
    print(f"PLANTED {path}", flush=True)
    return mapped


def main() -> None:
    rank = WORLD.Get_rank()
    mapped = plant() if rank == 1 else None
    try:
        c = mpish.secure(WORLD)
    except AuthenticationError as exc:
        print(f"REFUSED {rank} {exc}", flush=True)
    else:
        print(f"ACCEPTED {rank}", flush=True)
        c.Free()
    WORLD.Barrier()  # every rank got here: nobody hangs
    if mapped is not None:
        mapped.close()
        path = f"/dev/shm/mpich_shm_mpishtest{os.getpid():x}_0"
        if os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    run(main)
