"""Run under mpiexec: the v-collectives (Gatherv, Scatterv, Allgatherv, Alltoallv) with datatypes
with gaps write what raw MPI writes (they raised Unsupported: a porter's particle migration, an
Alltoallv of a padded C struct, helper-140). Each check runs the same calls on the raw duplicate
and on the secure communicator and compares what they wrote, items no block reached included.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

from mpish.comm import SecureComm

PARTICLE = np.dtype([("x", "f8"), ("y", "f8"), ("z", "f8"), ("id", "i4")], align=True)  # 28 bytes, 4 padding


def ok(name: str) -> None:
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def particle_type() -> Any:
    offsets = [PARTICLE.fields[name][1] for name in PARTICLE.names]
    struct = MPI.Datatype.Create_struct([1] * 4, offsets, [MPI.DOUBLE] * 3 + [MPI.INT])
    resized = struct.Create_resized(0, PARTICLE.itemsize).Commit()
    struct.Free()
    return resized


def check_an_alltoallv_of_a_padded_struct_migrates_particles_as_raw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Each rank sends particle k to rank k % size, counts and displacements from an Alltoall;
    the receive buffer has room for two more particles, which keep their values."""
    r, n = c.rank, c.size
    ptype = particle_type()
    mine = np.zeros(5 + 3 * r, PARTICLE)
    mine["x"], mine["id"] = np.arange(len(mine)) * 0.5 + r, 1000 * r + np.arange(len(mine))
    dest = np.arange(len(mine)) % n
    mine, dest = mine[np.argsort(dest, kind="stable")], np.sort(dest, kind="stable")
    scounts = np.bincount(dest, minlength=n).astype("i")
    sdispls = np.concatenate([[0], np.cumsum(scounts)[:-1]]).astype("i")
    results = []
    for comm in (raw, c):
        rcounts = np.zeros(n, "i")
        comm.Alltoall(scounts, rcounts)
        rdispls = np.concatenate([[0], np.cumsum(rcounts)[:-1]]).astype("i") + 1  # item 0 untouched
        got = np.zeros(int(rcounts.sum()) + 2, PARTICLE)
        got["id"] = -7
        comm.Alltoallv([mine, (scounts, sdispls), ptype], [got, (rcounts, rdispls), ptype])
        results.append(got.tobytes())
    assert results[0] == results[1], "the secure Alltoallv wrote other bytes than raw"
    ptype.Free()
    ok("alltoallv_of_a_padded_struct")


def check_gatherv_scatterv_allgatherv_take_datatypes_with_gaps_as_raw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Rank k's k+1 particles gathered at the root (gaps of one item between the blocks),
    scattered back, and allgathered; a column type (a resized vector) sent and received too."""
    r, n = c.rank, c.size
    ptype = particle_type()
    column = MPI.DOUBLE.Create_vector(3, 1, n).Create_resized(0, MPI.DOUBLE.Get_size()).Commit()
    counts = [k + 1 for k in range(n)]
    displs = [sum(counts[:k]) + k for k in range(n)]  # an item left out before each block
    total = displs[-1] + counts[-1] + 1
    results = []
    for comm in (raw, c):
        mine = np.zeros(r + 1, PARTICLE)
        mine["x"], mine["id"] = r + 0.25, 100 * r + np.arange(r + 1)
        gathered = np.zeros(total, PARTICLE)
        gathered["id"] = -1
        comm.Gatherv([mine, r + 1, ptype], [gathered, (counts, displs), ptype], root=n - 1)
        back = np.zeros(r + 2, PARTICLE)
        back["id"] = -2
        comm.Scatterv([gathered, (counts, displs), ptype], [back, r + 1, ptype], root=n - 1)
        everyone = np.zeros(total, PARTICLE)
        everyone["id"] = -3
        comm.Allgatherv([mine, r + 1, ptype], [everyone, (counts, displs), ptype])
        matrix = np.arange(3.0 * n).reshape(3, n) + 10 * r
        columns = np.full((3, n), -1.0)
        each = ([1] * n, list(range(n)))  # column k to rank k, rank k's into column k
        comm.Alltoallv([matrix, each, column], [columns, each, column])
        results.append((gathered.tobytes() if r == n - 1 else b"", back.tobytes(), everyone.tobytes(),
                        columns.tobytes()))
    assert results[0] == results[1], "a secure v-collective wrote other bytes than raw"
    ptype.Free()
    column.Free()
    ok("v_collectives_with_gaps")


if __name__ == "__main__":
    run_checks([
        check_an_alltoallv_of_a_padded_struct_migrates_particles_as_raw,
        check_gatherv_scatterv_allgatherv_take_datatypes_with_gaps_as_raw,
    ])
