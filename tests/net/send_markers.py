"""Run under mpiexec: rank 0 sends markers to every rank with send, Send and bcast.

``send_markers.py secure FILE`` goes through ``mpish.secure(COMM_WORLD)``;
``send_markers.py raw FILE`` through mpi4py alone (the control that must leak).
The markers are read from FILE (JSON), never from argv or the environment, which the
launcher forwards to remote hosts itself. Prints ``RECEIVED <rank>`` per rank that got
every marker intact; any failure aborts the job.
"""

from __future__ import annotations

import json
import sys
import traceback

from mpi4py import MPI


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    with open(path) as handle:
        markers = {name: value.encode() for name, value in json.load(handle).items()}
    world = MPI.COMM_WORLD
    if mode == "secure":
        import mpish

        comm = mpish.secure(world)
    else:
        comm = world
    rank, size = comm.Get_rank(), comm.Get_size()
    send_obj, send_buf, bcast_obj = markers["send"], markers["Send"], markers["bcast"]
    if rank == 0:
        for dest in range(1, size):
            comm.send(send_obj, dest, 11)
            comm.Send([bytearray(send_buf), MPI.BYTE], dest, 12)
    else:
        assert comm.recv(source=0, tag=11) == send_obj
        got = bytearray(len(send_buf))
        comm.Recv([got, MPI.BYTE], 0, 12)
        assert bytes(got) == send_buf
    assert comm.bcast(bcast_obj if rank == 0 else None, root=0) == bcast_obj
    comm.Barrier()
    print(f"RECEIVED {rank}", flush=True)
    if comm is not world:
        comm.Free()


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
