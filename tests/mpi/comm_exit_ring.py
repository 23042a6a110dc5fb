"""Run under mpiexec -n 3: a ring of long Isend / Recv / Wait, then the end of the program.

A rank that had all its data went on to finalize while its sender still waited for MPI's
acknowledgements of the records it had received (MPICH shared memory: ending.py); the
sender then waited in Wait for ever. Each rank prints ``ok RANK`` once its send completed.
"""

from __future__ import annotations

import faulthandler

import numpy as np
from mpi4py import MPI

import mpish

faulthandler.dump_traceback_later(60, exit=True)  # a hang is reported, not waited for
comm = mpish.secure(MPI.COMM_WORLD)
rank, size = comm.Get_rank(), comm.Get_size()
count = 3_000_000  # 24 MB of float64: 93 records
sent, got = np.full(count, float(rank)), np.zeros(count)
request = comm.Isend(sent, dest=(rank + 1) % size, tag=1)
comm.Recv(got, source=(rank - 1) % size, tag=1)
request.Wait()
assert (got == float((rank - 1) % size)).all()
print(f"ok {rank}", flush=True)
