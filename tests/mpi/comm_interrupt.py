"""Run under mpiexec -n 2 with the MPI call's name (Waitall, Wait, Waitany): rank 0 waits in
MPI's call on a secure Irecv whose message rank 1 sends 2.5 s later; the test sends SIGINT to
rank 0 (its pid is written to argv[2]) meanwhile. Prints one line: what rank 0 saw."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from mpi4py import MPI

import mpish


def main() -> None:
    how, pid_file = sys.argv[1], sys.argv[2]
    c = mpish.secure(MPI.COMM_WORLD)
    if c.rank == 0:
        got = np.zeros(4)
        request = c.Irecv(got, 1, 5)
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
        try:
            if how == "Waitall":
                MPI.Request.Waitall([MPI.REQUEST_NULL, request])
            elif how == "Wait":
                MPI.Request.Wait(request)
            else:
                MPI.Request.Waitany([MPI.REQUEST_NULL, request])
            time.sleep(1.0)  # a Ctrl-C deferred past MPI's return surfaces within this
            print(f"{how}: no KeyboardInterrupt", flush=True)
        except KeyboardInterrupt:
            print(f"{how}: KeyboardInterrupt, data {got[0]:g}, request complete {not request}", flush=True)
        except MPI.Exception as exc:
            print(f"{how}: MPI.Exception {exc.Get_error_class()}", flush=True)
    else:
        time.sleep(2.5)
        c.Send(np.full(4, 7.0), 0, 5)
    c.Barrier()


if __name__ == "__main__":
    main()
