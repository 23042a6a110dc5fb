"""Run under mpiexec (2 ranks or more): secure intercommunicators (Create_intercomm of
mpish.secure(comm)) against raw MPI's, a reflected record, and mpi4py.futures on them.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

import faulthandler
import time
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi4py.futures import MPICommExecutor
from mpi_main import run_checks

import mpish
from mpish.comm import SecureComm
from mpish.wire.errors import RemoteProtocolError


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


def _root_for(inter: Any, color: int, root_color: int, root_rank: int) -> int:
    """MPI's root argument on this rank: MPI.ROOT on the root, MPI.PROC_NULL on the rest of its
    group, the root's rank in the other group."""
    if color == root_color:
        return MPI.ROOT if inter.Get_rank() == root_rank else MPI.PROC_NULL
    return root_rank


def _rooted_results(comm: Any) -> list[Any]:
    """What every rooted collective delivers on this rank, with the root in either group."""
    color, inter = _halves(comm)
    rank, remote, me = inter.Get_rank(), inter.Get_remote_size(), comm.Get_rank()
    got: list[Any] = []
    for root_color in (0, 1):
        root_rank = 0 if root_color == 0 else (comm.Get_size() // 2) - 1  # the upper half's last rank
        root = _root_for(inter, color, root_color, root_rank)
        is_root = root == MPI.ROOT
        # Gather / Gatherv / gather: the root takes the other group's blocks, in its rank order
        recv = np.full(2 * remote, -1.0) if is_root else None
        inter.Gather(None if is_root else np.full(2, 10.0 * me + 1), recv, root)
        got.append(None if recv is None else recv.tolist())
        counts, displs = [k + 1 for k in range(remote)], [3 * k for k in range(remote)]
        vrecv = np.full(3 * remote, -1.0) if is_root else None
        inter.Gatherv(None if is_root else np.full(rank + 1, float(me)),
                      [vrecv, counts, displs, MPI.DOUBLE] if is_root else None, root)
        got.append(None if vrecv is None else vrecv.tolist())  # the gaps stay -1
        got.append(inter.gather({"rank": rank, "world": me}, root))
        # Scatter / Scatterv / scatter: rank k of the other group gets block k
        piece = np.full(2, -1.0)
        inter.Scatter(np.arange(2.0 * remote) + 100 * me if is_root else None,
                      None if is_root else piece, root)
        got.append(piece.tolist())
        vpiece = np.full(rank + 1, -1.0)
        inter.Scatterv([np.arange(3.0 * remote) + me, counts, displs, MPI.DOUBLE] if is_root else None,
                       None if is_root else vpiece, root)
        got.append(vpiece.tolist())
        got.append(inter.scatter([("to", k, me) for k in range(remote)] if is_root else None, root))
        # Reduce / reduce: the root gets the other group's reduction (list +: in rank order)
        total = np.full(3, -1.0) if is_root else None
        inter.Reduce(None if is_root else np.full(3, float(me + 1)), total, MPI.SUM, root)
        got.append(None if total is None else total.tolist())
        peak = np.zeros(2, dtype="i") if is_root else None
        inter.Reduce(None if is_root else np.array([me, -me], dtype="i"), peak, MPI.MAX, root)
        got.append(None if peak is None else peak.tolist())
        got.append(inter.reduce([me], MPI.SUM, root))
    return got


def check_rooted_collectives_from_mpi_root_deliver_what_raw_mpi_delivers(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Gather(v)/gather, Scatter(v)/scatter, Reduce/reduce with MPI.ROOT in either group (its
    other ranks MPI.PROC_NULL): on every rank, what raw MPI's intercommunicator delivers."""
    expected, got = _rooted_results(raw), _rooted_results(c)
    assert got == expected, (c.rank, got, expected)
    ok("rooted_collectives_from_mpi_root_deliver_what_raw_mpi_delivers")


def _all_to_all_results(comm: Any) -> list[Any]:
    """What every all-to-all collective delivers on this rank (each group the other's blocks)."""
    color, inter = _halves(comm)
    rank, size, remote, me = inter.Get_rank(), inter.Get_size(), inter.Get_remote_size(), comm.Get_rank()
    got: list[Any] = []
    recv = np.full(2 * remote, -1.0)
    inter.Allgather(np.array([me, 10.0 * color]), recv)
    got.append(recv.tolist())
    recv = np.full(2 * remote, -1, dtype="i")
    inter.Allgather([np.array([me, rank], dtype="i"), 2, MPI.INT], [recv, 2, MPI.INT])
    got.append(recv.tolist())
    got.append(inter.allgather(("from", color, rank)))
    counts, displs = [k + 1 for k in range(remote)], [3 * k + 1 for k in range(remote)]
    vrecv = np.full(3 * remote + 1, -1.0)
    inter.Allgatherv(np.full(rank + 1, float(me)), [vrecv, (counts, displs), MPI.DOUBLE])
    got.append(vrecv.tolist())  # the gaps stay -1
    out = np.array([100.0 * me + k for k in range(2 * remote)])
    recv = np.full(2 * remote, -1.0)
    inter.Alltoall(out, recv)
    got.append(recv.tolist())
    got.append(inter.alltoall([(me, "to", k) for k in range(remote)]))
    # Alltoallv: rank r of one group sends r + k + 1 values to rank k of the other
    scounts = [rank + k + 1 for k in range(remote)]
    sdispls = [sum(scounts[:k]) for k in range(remote)]
    out = np.arange(float(sum(scounts))) + 1000 * me
    rcounts = [k + rank + 1 for k in range(remote)]
    rdispls = [sum(rcounts[:k]) + k for k in range(remote)]  # a gap of one before each block
    vrecv = np.full(sum(rcounts) + remote, -1.0)
    inter.Alltoallv([out, (scounts, sdispls), MPI.DOUBLE], [vrecv, (rcounts, rdispls), MPI.DOUBLE])
    got.append(vrecv.tolist())
    # Reduce_scatter_block: both groups reduce vectors of size * remote * 2 values; the other
    # group's reduction is scattered in blocks of remote * 2 values over this group's ranks
    vector = np.arange(float(size * remote * 2)) * (me + 1)
    block = np.full(remote * 2, -1.0)
    inter.Reduce_scatter_block(vector, block, MPI.SUM)
    got.append(block.tolist())
    return got


def check_all_to_all_collectives_give_each_group_the_other_groups_blocks_as_raw_mpi(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Allgather(v)/allgather, Alltoall(v)/alltoall, Reduce_scatter_block: each group receives
    the other group's contributions in its rank order, on every rank as raw MPI delivers them."""
    expected, got = _all_to_all_results(raw), _all_to_all_results(c)
    assert got == expected, (c.rank, got, expected)
    ok("all_to_all_collectives_give_each_group_the_other_groups_blocks_as_raw_mpi")


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


def _raises(call: Any, *errors: type[BaseException]) -> type[BaseException] | None:
    """Which of ``errors`` ``call()`` raised (the first it is an instance of), or None if it returned."""
    try:
        call()
    except errors as exc:
        return next(error for error in errors if isinstance(exc, error))
    return None


def check_a_wrong_argument_in_a_rooted_or_all_to_all_intercollective_leaves_nothing_behind(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """A wrong buffer, item count or block size on one rank: that rank raises, so does every rank
    that waited for a block from it (CollectiveAborted, or a wrong size: RemoteProtocolError),
    the others return; then the next collectives still match (no record was left queued)."""
    color, inter = _halves(c.Dup())
    rank, remote = inter.Get_rank(), inter.Get_remote_size()
    aborted = mpish.comm.CollectiveAborted
    root = _root_for(inter, color, 0, 0)
    me = (color, rank)
    readonly = bytes(8 * 2 * remote)
    # Gather: the root's receive buffer is read-only; it drops the blocks and raises alone
    got = _raises(lambda: inter.Gather(None if root == MPI.ROOT else np.ones(2),
                                       readonly if root == MPI.ROOT else None, root), ValueError)
    assert got == (ValueError if me == (0, 0) else None), (me, got)
    # Scatter: the root's count is past its buffer; every rank of the other group is told
    bad = [np.zeros(2), 5, MPI.DOUBLE]
    got = _raises(lambda: inter.Scatter(bad if root == MPI.ROOT else None, np.zeros(5), root),
                  ValueError, aborted)
    assert got == {(0, 0): ValueError, (0, 1): None}.get(me, aborted), (me, got)
    # Reduce: one contribution (the other group's rank 0) is wrong; the root raises too
    send = bad if me == (1, 0) else np.ones(2)
    got = _raises(lambda: inter.Reduce(None if root == MPI.ROOT else send, np.zeros(2), MPI.SUM, root),
                  ValueError, aborted)
    assert got == {(0, 0): aborted, (1, 0): ValueError}.get(me), (me, got)
    # Gather: one block of another size than the root's blocks; the root drops the rest
    send = np.ones(3 if me == (1, 0) else 2)
    got = _raises(lambda: inter.Gather(None if root == MPI.ROOT else send,
                                       np.zeros(2 * remote) if root == MPI.ROOT else None, root),
                  RemoteProtocolError)
    assert got == (RemoteProtocolError if me == (0, 0) else None), (me, got)
    # alltoall: one rank gives a list of the wrong length; the other group hears of it
    items = list(range(remote + (1 if me == (0, 0) else 0)))
    got = _raises(lambda: inter.alltoall(items), ValueError, aborted)
    assert got == (ValueError if me == (0, 0) else aborted if color == 1 else None), (me, got)
    # Alltoall: one rank's receive buffer is read-only; it still sends, and drops what it gets
    recv = bytes(16 * remote) if me == (1, 0) else np.zeros(2 * remote)
    got = _raises(lambda: inter.Alltoall(np.ones(2 * remote), recv), ValueError, aborted)
    assert got == (ValueError if me == (1, 0) else aborted if color == 0 else None), (me, got)
    inter.Barrier()  # a record left queued above would be taken here, and the results shift
    assert inter.allgather(rank) == list(range(remote))
    assert inter.gather(rank, root) == (list(range(remote)) if root == MPI.ROOT else None)
    ok("a_wrong_argument_in_a_rooted_or_all_to_all_intercollective_leaves_nothing_behind")


def check_an_operation_mpi_cannot_apply_raises_err_op_where_raw_mpi_raises_it(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """MPI.BAND of doubles in an intercommunicator's Reduce and Allreduce: only the ranks that
    fold blocks met it (helper-118, on intracommunicators): the ranks raising ERR_OP are raw
    MPI's, and the next collective matches."""
    def raised(inter: Any, root: int) -> list[int | None]:
        found: list[int | None] = []
        for call in (lambda: inter.Reduce(None if root == MPI.ROOT else np.ones(2), np.zeros(2),
                                          MPI.BAND, root),
                     lambda: inter.Allreduce(np.ones(2), np.zeros(2), MPI.BAND)):
            try:
                call()
                found.append(None)
            except MPI.Exception as exc:
                assert exc.Get_error_class() == MPI.ERR_OP, repr(exc)
                found.append(MPI.ERR_OP)
        out = np.zeros(2)
        inter.Allreduce(np.ones(2), out, MPI.SUM)  # in step: the other group's sum
        assert out.tolist() == [inter.Get_remote_size()] * 2, out
        return found

    results = []
    for comm in (raw, c):
        color, inter = _halves(comm.Dup())
        results.append(raised(inter, _root_for(inter, color, 0, 0)))
    assert results[0] == results[1], results
    ok("an_operation_mpi_cannot_apply_raises_err_op_where_raw_mpi_raises_it")


def _nbx(comm: Any) -> list[Any]:
    """The NBX sparse exchange (issend to rank 0 of the other group, then Ibarrier while
    probing), a persistent send back, and an I-collective, on the halves' intercommunicator."""
    color, inter = _halves(comm)
    rank, got, barrier = inter.Get_rank(), [], None
    sends = [inter.issend((color, rank), dest=0, tag=4)]
    while True:
        status = MPI.Status()
        if inter.Iprobe(MPI.ANY_SOURCE, 4, status):
            got.append(list(inter.recv(source=status.Get_source(), tag=4)))
        if barrier is None:
            if all(send.Test() for send in sends):
                barrier = inter.Ibarrier()
        elif barrier.Test():
            break
    block = np.full(2, float(rank))
    request = inter.Send_init(block, 0, 5)  # it was refused on an intercommunicator
    request.Start()
    if rank == 0:
        back = np.empty(2)
        for peer in range(inter.Get_remote_size()):
            inter.Recv(back, peer, 5)
            got.append(back.tolist())
    request.Wait()
    request.Free()
    gathered = np.full(inter.Get_remote_size(), -1.0)
    inter.Iallgather(np.array([float(rank)]), gathered).Wait()
    return [sorted(got), gathered.tolist()]


def check_an_nbx_exchange_with_ibarrier_and_persistent_sends_cross_the_groups_as_on_raw_mpi(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """NBX hung on a secure intercommunicator: its Ibarrier waited for the other group at the
    call, so a rank could no longer receive a late issend. Send_init was refused there."""
    expected, got = _nbx(raw), _nbx(c)
    assert got == expected, (c.rank, got, expected)
    ok("an_nbx_exchange_with_ibarrier_and_persistent_sends_cross_the_groups_as_on_raw_mpi")


def check_what_an_intercommunicator_cannot_do_raises_unsupported(c: SecureComm, raw: MPI.Intracomm) -> None:
    _, inter = _halves(c)
    for name in ("Alltoallw", "Reduce_scatter", "Scan", "Split", "Create_cart", "Bcast_init", "Iscan"):
        assert not hasattr(inter, name), name
    ok("what_an_intercommunicator_cannot_do_raises_unsupported")


def _started_across(comm: Any) -> list[Any]:
    """Each started collective of an intercommunicator overlapped with point-to-point traffic
    that completes only if it progresses: group 0's rank 0 receives from group 1's rank 0 before
    it starts the collective, then waits in a receive that the other sends only after its Wait."""
    color, inter = _halves(comm)
    rank, remote = inter.Get_rank(), inter.Get_remote_size()
    leader, partner = rank == 0 and color == 0, rank == 0 and color == 1
    mine = np.array([10 * color + rank], dtype="i8")
    results = []
    # Ibarrier first: raw MPICH's intercommunicator Ibarrier right after an Ibcast from
    # MPI.ROOT hangs at -n 3 (measured, without any point-to-point traffic)
    for name in ("Ibarrier", "Iallreduce", "Iallgather", "Ialltoall", "Ibcast"):
        if leader:
            assert inter.recv(None, 0, 41) == name
        out = np.zeros(remote, dtype="i8")
        if name == "Iallreduce":
            request = inter.Iallreduce(mine, out[:1], MPI.SUM)
        elif name == "Iallgather":
            request = inter.Iallgather(mine, out)
        elif name == "Ialltoall":
            request = inter.Ialltoall(np.arange(remote, dtype="i8") + 10 * mine, out)
        elif name == "Ibcast":
            root = (MPI.ROOT if rank == 0 else MPI.PROC_NULL) if color == 0 else 0
            out = np.array([7], dtype="i8") if color == 0 else np.zeros(1, dtype="i8")
            request = inter.Ibcast(out, root)
        else:
            request = inter.Ibarrier()
        if partner:
            inter.send(name, 0, 41)
        if leader:
            assert inter.recv(None, 0, 42) == name
        request.Wait()
        if partner:
            inter.send(name, 0, 42)
        results.append(out.tolist())
    inter.Free()
    return results


def check_started_intercommunicator_collectives_progress_under_point_to_point_as_raw_mpi(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """They ran whole at the call: the leader blocked in its receive hung the other group."""
    _same_in_time(_started_across, c, raw)
    ok("started_intercommunicator_collectives_progress_under_point_to_point_as_raw_mpi")


def _key_halves_during(comm: Any) -> list[Any]:
    """Ranks 0 and 1 each alone in a group; rank 0 creates their intercommunicator (its leader
    sends its key half) while its part of a started Iallreduce of the peer communicator still
    waits for a late rank 2; rank 1 waits for that Iallreduce before it creates its side."""
    r = comm.Get_rank()
    local = comm.Split(min(r, 2), r)
    if r == 2:
        time.sleep(0.3)
    total = np.zeros(1, dtype="i8")
    request = comm.Iallreduce(np.array([r + 1], dtype="i8"), total, MPI.SUM)
    if r == 1:
        request.Wait()
    results: list[Any] = []
    if r < 2:
        inter = local.Create_intercomm(0, comm, 1 - r, 9)
        results.append(inter.allreduce(r + 10))
        inter.Free()
    request.Wait()
    local.Free()
    return [*results, int(total[0])]


def check_a_started_collective_of_the_peer_communicator_leaves_the_leaders_key_halves_alone(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Its receives took any tag of the collective lane, the leaders' key half too: rank 1's
    Iallreduce read rank 0's half as rank 0's block (helper-103: a hang; measured on 802075e:
    MPI's truncation error). Abort notices now travel in band, flagged, so collectives
    receive the collective tag only."""
    if c.size >= 3:  # (a late third rank)
        _same_in_time(_key_halves_during, c, raw)
    ok("a_started_collective_of_the_peer_communicator_leaves_the_leaders_key_halves_alone")


def _same_in_time(program: Any, c: SecureComm, raw: MPI.Intracomm) -> None:
    """``program`` gives the same results on the secure and the raw communicator, within a
    deadline: a hang ends the job with every thread's traceback (faulthandler)."""
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        assert program(c) == program(raw)
    finally:
        faulthandler.cancel_dump_traceback_later()


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
            check_rooted_collectives_from_mpi_root_deliver_what_raw_mpi_delivers,
            check_all_to_all_collectives_give_each_group_the_other_groups_blocks_as_raw_mpi,
            check_a_record_reflected_back_to_its_sender_is_refused,
            check_a_pending_user_message_on_the_peer_is_not_taken_for_a_key_half,
            check_a_wrong_buffer_in_an_intercommunicator_collective_leaves_nothing_behind,
            check_a_wrong_argument_in_a_rooted_or_all_to_all_intercollective_leaves_nothing_behind,
            check_an_operation_mpi_cannot_apply_raises_err_op_where_raw_mpi_raises_it,
            check_an_nbx_exchange_with_ibarrier_and_persistent_sends_cross_the_groups_as_on_raw_mpi,
            check_what_an_intercommunicator_cannot_do_raises_unsupported,
            check_started_intercommunicator_collectives_progress_under_point_to_point_as_raw_mpi,
            check_a_started_collective_of_the_peer_communicator_leaves_the_leaders_key_halves_alone,
            check_mpi4py_futures_runs_tasks_over_the_secure_communicator,
        ]
    )
