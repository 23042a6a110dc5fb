"""Run under mpiexec (2 ranks or more): secure intercommunicators (Create_intercomm of
mpish.secure(comm)) against raw MPI's, a reflected record, and mpi4py.futures on them.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI
from mpi4py.futures import MPICommExecutor
from mpi_main import run_checks

import mpish
from mpish.comm import SecureComm


def ok(name: str) -> None:
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def _halves(comm: Any) -> tuple[int, Any]:
    """(this rank's group, the intercommunicator of the lower and upper halves of ``comm``)."""
    r, n = comm.Get_rank(), comm.Get_size()
    color = 0 if r < (n + 1) // 2 else 1
    local = comm.Split(color, r)
    return color, local.Create_intercomm(0, comm, (n + 1) // 2 if color == 0 else 0, 7)


def check_intercommunicators_deliver_what_raw_mpi_delivers(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Point to point both ways, ANY_SOURCE, Barrier, Bcast/bcast from MPI.ROOT, Allreduce
    (each group gets the other's reduction), Dup and Merge: the same as on raw MPI."""
    results = []
    for comm in (raw, c):
        color, inter = _halves(comm)
        rank, remote = inter.Get_rank(), inter.Get_remote_size()
        assert inter.Is_inter() and inter.is_inter and not inter.Is_intra()
        got: list[Any] = []
        if rank < remote:
            got.append(inter.sendrecv(("from", color, rank), rank, 3, None, rank, 3))
            buf = np.zeros(3)
            inter.Sendrecv(np.full(3, color + 10.0 * rank), rank, 4, buf, rank, 4)
            got.append(buf.tolist())
        if color == 1:
            inter.send(("late", rank), 0, 5)
        elif rank == 0:
            status = MPI.Status()
            got.append(sorted([inter.recv(None, MPI.ANY_SOURCE, 5, status) for _ in range(remote)]))
        inter.Barrier()
        root = (MPI.ROOT if rank == 0 else MPI.PROC_NULL) if color == 0 else 0
        got.append(inter.bcast({"x": 1} if color == 0 else None, root))
        array = np.arange(4.0) if color == 0 else np.zeros(4)
        inter.Bcast(array, root)
        got.append(array.tolist())
        total = np.zeros(2)
        inter.Allreduce(np.full(2, float(comm.Get_rank())), total, MPI.SUM)
        got += [total.tolist(), inter.allreduce([comm.Get_rank()])]  # list +: the ranks in order
        inter.Ibarrier().Wait()
        got.append(inter.Dup().allreduce(1))
        merged = inter.Merge(color == 1)
        got += [merged.Get_rank(), merged.allgather(comm.Get_rank())]
        results.append(got)
    assert results[0] == results[1], results
    ok("intercommunicators_deliver_what_raw_mpi_delivers")


def check_a_record_reflected_back_to_its_sender_is_refused(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Rank 0 of each group: the other reflects a sealed record of rank 0 back to it; its
    receive refuses it (each direction has its own key) and takes the genuine message."""
    fresh = mpish.secure(MPI.COMM_WORLD)  # its own count of rejected records
    color, inter = _halves(fresh)
    if inter.Get_rank() == 0:
        record = bytearray(4096)
        if color == 0:
            inter._comms[0].Send(inter._p2p.sealers[0].seal(b"mine", channel=9), 0, 9)
            assert inter.recv(None, 0, 9) == "genuine"
            assert inter.rejected == 1, inter.rejected
        else:
            status = MPI.Status()
            inter._comms[0].Recv(record, 0, 9, status)
            inter._comms[0].Send(record[: status.Get_count()], 0, 9)  # back to its sender
            inter.send("genuine", 0, 9)
    ok("a_record_reflected_back_to_its_sender_is_refused")


def check_a_pending_user_message_on_the_peer_is_not_taken_for_a_key_half(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """The other group's leader sent rank 0 a 32-byte message on the tag that Create_intercomm
    then uses; rank 0 had not received it yet. The leaders' halves go elsewhere (both groups
    derived other keys and hung, and the user's recv got a key half)."""
    peer = c.Dup()
    other_leader = (c.size + 1) // 2
    if c.rank == other_leader:
        peer.send(b"U" * 32, 0, 7)
    _, inter = _halves(peer)
    inter.Barrier()
    assert inter.allreduce(1) == inter.Get_remote_size()
    if c.rank == 0:
        assert peer.recv(None, other_leader, 7) == b"U" * 32
    ok("a_pending_user_message_on_the_peer_is_not_taken_for_a_key_half")


def check_a_wrong_buffer_in_an_intercommunicator_collective_leaves_nothing_behind(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    color, inter = _halves(c.Dup())
    rank, remote = inter.Get_rank(), inter.Get_remote_size()
    readonly = bytes(16)
    try:  # the other group's rank 0 receives into a read-only buffer
        inter.Bcast(np.zeros(2) if color == 0 else (readonly if rank == 0 else np.zeros(2)),
                    (MPI.ROOT if rank == 0 else MPI.PROC_NULL) if color == 0 else 0)
    except ValueError:
        assert color == 1 and rank == 0
    try:  # one rank's receive buffer is read-only: the other group raises, nobody waits
        inter.Allreduce(np.ones(2), readonly if (color, rank) == (0, 0) else np.zeros(2), MPI.SUM)
    except ValueError:
        assert (color, rank) == (0, 0)
    except mpish.comm.CollectiveAborted:
        assert color == 1
    inter.Barrier()  # a record left queued above would be taken here, and the sums shift
    assert inter.allreduce(1) == remote and inter.allreduce([rank]) == list(range(remote))
    ok("a_wrong_buffer_in_an_intercommunicator_collective_leaves_nothing_behind")


def check_what_an_intercommunicator_cannot_do_raises_unsupported(c: SecureComm, raw: MPI.Intracomm) -> None:
    _, inter = _halves(c)
    for name in ("Gather", "Alltoall", "Split", "Create_cart", "Bcast_init", "Ireduce"):
        assert not hasattr(inter, name), name
    ok("what_an_intercommunicator_cannot_do_raises_unsupported")


def _square(x: int) -> tuple[int, int]:
    return x * x, MPI.COMM_WORLD.Get_rank()


def check_mpi4py_futures_runs_tasks_over_the_secure_communicator(c: SecureComm, raw: MPI.Intracomm) -> None:
    """MPICommExecutor(secure) (an intercommunicator between root and workers; it hung)."""
    comm = c.Dup()
    before = comm.rejected
    with MPICommExecutor(comm, root=0) as executor:
        if executor is not None:
            results = list(executor.map(_square, range(12)))
            assert [value for value, _ in results] == [x * x for x in range(12)], results
            workers = {rank for _, rank in results}
            assert workers <= set(range(1, c.size)) or c.size == 1, workers
    assert comm.rejected == before, comm.rejected
    ok("mpi4py_futures_runs_tasks_over_the_secure_communicator")


if __name__ == "__main__":
    run_checks(
        [
            check_intercommunicators_deliver_what_raw_mpi_delivers,
            check_a_record_reflected_back_to_its_sender_is_refused,
            check_a_pending_user_message_on_the_peer_is_not_taken_for_a_key_half,
            check_a_wrong_buffer_in_an_intercommunicator_collective_leaves_nothing_behind,
            check_what_an_intercommunicator_cannot_do_raises_unsupported,
            check_mpi4py_futures_runs_tasks_over_the_secure_communicator,
        ]
    )
