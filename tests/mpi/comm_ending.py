"""Run under mpiexec -n 2: how a program that used a secure communicator ends (comm/ending.py).

``raise`` (under ``python -m mpi4py``): rank 1 raises while rank 0 waits for it; mpi4py must
abort the job at once (a barrier at exit waited for rank 0 for ever). ``finalize``: rank 0
calls MPI.Finalize() itself; rank 1 must end too. ``drop``: rank 0 drops the request of a
long Isend and reuses the memory; rank 1 must get the message intact (the records were freed
while MPI still read them: a crash, or other memory sent). Prints ``ended RANK``.
"""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

import mpish

comm = mpish.secure(MPI.COMM_WORLD)
mode = sys.argv[1]
if mode == "raise":
    if comm.rank == 1:
        raise ValueError("boom (on purpose)")
    comm.recv(source=1)
elif mode == "finalize":
    comm.Barrier()
    if comm.rank == 0:
        MPI.Finalize()
elif mode == "drop":
    count = 300_000  # 2.4 MB: several records
    if comm.rank == 0:
        comm.Isend(np.arange(count, dtype="d"), 1, 3)  # the request is not kept
        junk = [bytearray(b"\x5a" * 300_000) for _ in range(40)]  # the freed memory reused
        MPI.COMM_WORLD.Barrier()
    else:
        MPI.COMM_WORLD.Barrier()
        got = np.zeros(count)
        comm.Recv(got, 0, 3)
        assert (got == np.arange(count)).all(), "the dropped send's message arrived changed"
print(f"ended {MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() and not MPI.Is_finalized() else 0}",
      flush=True)
