"""Run under mpiexec: derived datatypes and matched receives where secure(comm) differed from raw
MPI (helper-107, an HPC porter's review). Each check runs the same calls on the raw duplicate
and on the secure communicator and compares what they wrote.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

import mpish.comm
from mpish.comm import CollectiveAborted, SecureComm

D = MPI.DOUBLE


def ok(name: str) -> None:
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def same(raw: MPI.Intracomm, c: SecureComm, calls: Callable[[Any], object]) -> None:
    """``calls(comm)`` gives the same result on both communicators."""
    want, got = calls(raw), calls(c)
    assert repr(got) == repr(want), (got, want)


def check_a_datatype_that_starts_past_its_buffers_start_is_read_and_written_there(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Create_indexed([2], [1]) has no gaps but starts 8 bytes in: secure read and wrote it from
    byte 0 in every call (point to point, Gather, Allgather, Bcast)."""
    inner = D.Create_indexed([2], [1]).Commit()
    past = D.Create_struct([1], [8], [D]).Commit()

    def calls(comm: Any) -> object:
        r, n = comm.rank, comm.size
        nxt, prv = (r + 1) % n, (r - 1) % n
        a, out = np.arange(4.0) + 10 * r, {}
        b = np.full(4, -1.0)
        request = comm.Irecv(b, prv, 1)
        comm.Send([a, 1, inner], nxt, 1)
        request.Wait()
        out["send"] = b.tolist()
        b = np.full(4, -1.0)
        comm.Sendrecv(a[:2].copy(), nxt, 2, [b, 1, inner], prv, 2)
        out["sendrecv"] = b.tolist()
        b = np.full(4, -1.0)
        request = comm.Irecv([b, 1, inner], prv, 3)
        comm.Send(a[:2].copy(), nxt, 3)
        request.Wait()
        out["irecv"] = b.tolist()
        g = np.full(2 * n, -1.0)
        comm.Gather([a, 1, inner], [g, 2, D] if r == 0 else None, 0)
        out["gather"] = g.tolist()
        comm.Allgather([a, 1, inner], [g, 2, D])
        out["allgather"] = g.tolist()
        b = a.copy() if r == 0 else np.full(4, -1.0)
        comm.Bcast([b, 1, inner], 0)
        out["bcast"] = b.tolist()
        s, d = np.arange(3.0) + 20 * r, np.full(3, -1.0)
        request = comm.Irecv([d, 1, past], prv, 4)
        comm.Isend([s, 1, past], nxt, 4).Wait()
        request.Wait()
        out["struct"] = d.tolist()
        return out

    same(raw, c, calls)
    inner.Free()
    past.Free()
    ok("a_datatype_that_starts_past_its_buffers_start_is_read_and_written_there")


def check_a_gap_free_datatype_listing_its_parts_out_of_memory_order_travels_in_its_order(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Types whose size, extent and true extent are equal but whose type map is not memory
    order (two ints swapped by Create_indexed, a struct declared backwards, mpi4py's demo
    ex-3.09 transposing a matrix with a vector of columns) travelled as their bytes lay:
    raw [20, 10], secure [10, 20], in point-to-point calls, Bcast and Allgather
    (helper-121). Now packed by MPI, as raw sends them."""
    swap = MPI.INT.Create_indexed([1, 1], [1, 0]).Commit()
    backwards = MPI.Datatype.Create_struct([1, 1], [4, 0], [MPI.INT, MPI.INT]).Commit()
    column = D.Create_vector(3, 1, 3).Commit()
    transpose = column.Create_hvector(3, 1, 8).Commit()

    def calls(comm: Any) -> object:
        r, n = comm.rank, comm.size
        nxt, prv = (r + 1) % n, (r - 1) % n
        a, out = np.array([10, 20], "i") + r, {}
        for name, send, recv in (("send swapped", [a, 1, swap], [np.zeros(2, "i"), 2, MPI.INT]),
                                 ("receive swapped", [a, 2, MPI.INT], [np.zeros(2, "i"), 1, swap]),
                                 ("struct backwards", [a, 1, backwards], [np.zeros(2, "i"), 2, MPI.INT])):
            comm.Sendrecv(send, nxt, 11, recv, prv, 11)
            out[name] = recv[0].tolist()
        b = np.zeros(2, "i")
        request = comm.Irecv([b, 1, swap], prv, 12)
        comm.Send(a, nxt, 12)
        request.Wait()
        out["irecv swapped"] = b.tolist()
        b = a.copy() if r == 0 else np.zeros(2, "i")
        comm.Bcast([b, 2, MPI.INT] if r == 0 else [b, 1, swap], 0)
        out["bcast swapped"] = b.tolist()
        m, t = np.arange(9.0).reshape(3, 3) + 10 * r, np.zeros((3, 3))
        comm.Sendrecv([m, 1, transpose], nxt, 13, [t, 9, D], prv, 13)
        out["transpose"] = t.tolist()
        g = np.zeros(2 * n, "i")
        comm.Allgather([a, 1, swap], [g, 2, MPI.INT])
        out["allgather swapped"] = g.tolist()
        return out

    same(raw, c, calls)
    for datatype in (swap, backwards, transpose, column):
        datatype.Free()
    ok("a_gap_free_datatype_listing_its_parts_out_of_memory_order_travels_in_its_order")


def check_a_single_block_at_an_absolute_address_travels_as_in_mpi(c: SecureComm, raw: MPI.Intracomm) -> None:
    """[MPI.BOTTOM, 1, hindexed of one block] was refused (Unsupported) where two blocks worked."""

    def calls(comm: Any) -> object:
        r, n = comm.rank, comm.size
        nxt, prv = (r + 1) % n, (r - 1) % n
        a, b, d = np.array([2.5 + r]), np.zeros(1), np.zeros(1)
        types = [D.Create_hindexed([1], [MPI.Get_address(x)]).Commit() for x in (a, b, d)]
        sent = comm.Isend([MPI.BOTTOM, 1, types[0]], nxt, 6)
        comm.Recv([MPI.BOTTOM, 1, types[1]], prv, 6)
        sent.Wait()
        if r == 0:
            d[:] = a
        comm.Bcast([MPI.BOTTOM, 1, types[2]], 0)
        for datatype in types:
            datatype.Free()
        return b.tolist(), d.tolist()

    same(raw, c, calls)
    ok("a_single_block_at_an_absolute_address_travels_as_in_mpi")


def check_persistent_requests_with_gaps_read_and_write_the_buffer_at_each_start(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Send_init([a, 1, column]) packed the column once, at the init: every start sent the
    values of then (zeros), where MPI reads the buffer at each start. Recv_init with gaps
    was refused."""
    column = D.Create_vector(4, 1, 4).Create_resized(0, 8).Commit()

    def calls(comm: Any) -> object:
        r, n = comm.rank, comm.size
        a, b, got = np.zeros((4, 4)), np.zeros((4, 4)), []
        send = comm.Send_init([a, 1, column], (r + 1) % n, 10)
        recv = comm.Recv_init([b.reshape(-1)[2:], 1, column], (r - 1) % n, 10)  # b's third column
        for start in range(3):
            a[:] = start + 10 * r
            recv.Start()
            send.Start()
            recv.Wait()
            send.Wait()
            got.append(b.tolist())
        send.Free()
        recv.Free()
        return got

    same(raw, c, calls)
    column.Free()
    ok("persistent_requests_with_gaps_read_and_write_the_buffer_at_each_start")


def check_persistent_requests_keep_working_after_the_program_frees_their_datatype(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """MPI lets a program free a datatype once the request that uses it was made: Send_init,
    Recv_init and a persistent Gather with a column type freed right after the _init started
    with "Invalid datatype" (the buffer spec, its datatype included, was used at each start;
    helper-132). Point-to-point is compared with raw; the collective with the expected matrix
    (raw Open MPI 5 crashes on it)."""

    def p2p(comm: Any) -> object:
        r, n = comm.rank, comm.size
        column = D.Create_vector(4, 1, 4).Create_resized(0, 8).Commit()
        a, b, got = np.zeros((4, 4)), np.zeros((4, 4)), []
        send = comm.Send_init([a, 1, column], (r + 1) % n, 11)
        recv = comm.Recv_init([b.reshape(-1)[1:], 1, column], (r - 1) % n, 11)
        column.Free()
        for start in range(2):
            a[:] = start + 10 * r
            MPI.Prequest.Startall([recv, send])
            MPI.Request.Waitall([recv, send])
            got.append(b[:, 1].tolist())
        send.Free()
        recv.Free()
        return got

    same(raw, c, p2p)
    size, rank = c.size, c.rank
    column = D.Create_vector(4, 1, size).Create_resized(0, D.extent).Commit()
    matrix, mine = np.full((4, size), -1.0), np.zeros(4)
    gather = c.Gather_init(mine, [matrix, 1, column], root=0)
    column.Free()
    for start in range(2):
        mine[:] = np.arange(4.0) + 10 * rank + 100 * start
        gather.Start()
        gather.Wait()
        if rank == 0:
            want = np.arange(4.0)[:, None] + 10 * np.arange(size)[None, :] + 100 * start
            assert matrix.tolist() == want.tolist(), (start, matrix)
    gather.Free()
    ok("persistent_requests_keep_working_after_the_program_frees_their_datatype")


def check_a_packed_numpy_struct_reduces_with_a_user_op_as_raw(c: SecureComm, raw: MPI.Intracomm) -> None:
    """helper-134: mpi4py's dtlib makes a packed numpy struct (no gaps) a resized MPI struct,
    whose own extent MPI had aligned: a reduction refused it as a datatype with gaps."""
    from mpi4py.util import dtlib

    record = np.dtype([("re", "f8"), ("im", "f8"), ("id", "i4")], align=False)
    datatype = dtlib.from_numpy_dtype(record).Commit()

    def larger(into: Any, inout: Any, _: Any) -> None:
        a, b = np.frombuffer(into, record), np.frombuffer(inout, record)
        keep = a["re"] ** 2 + a["im"] ** 2 > b["re"] ** 2 + b["im"] ** 2
        b[keep] = a[keep]

    op = MPI.Op.Create(larger, commute=True)

    def calls(comm: Any) -> object:
        r = comm.rank
        mine, got = np.zeros(3, record), np.zeros(3, record)
        mine["re"], mine["im"], mine["id"] = [r, -r, 1], [0, r, 2 + r], r  # no ties: one result in any order
        comm.Allreduce([mine, datatype], [got, datatype], op=op)
        return got.tolist()

    same(raw, c, calls)
    op.Free()
    datatype.Free()
    ok("a_packed_numpy_struct_reduces_with_a_user_op_as_raw")


def check_a_matched_messages_started_receive_gives_its_status(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Mprobe then Message.Irecv/irecv: the wait's status was ANY_SOURCE, ANY_TAG, 0 bytes."""

    def calls(comm: Any) -> object:
        r, n = comm.rank, comm.size
        out = []
        sent = comm.Isend(np.arange(3, dtype="i4") + r, (r + 1) % n, 6)  # (to itself at -n 1)
        message, status = comm.Mprobe((r - 1) % n, 6), MPI.Status()
        into = np.zeros(3, "i4")
        message.Irecv(into).Wait(status)
        sent.Wait()
        out.append((into.tolist(), status.Get_source(), status.Get_tag(), status.Get_count(MPI.INT)))
        sent = comm.isend("hello", (r + 1) % n, 7)
        message, status = comm.mprobe((r - 1) % n, 7), MPI.Status()
        out.append((message.irecv().wait(status), status.Get_source(), status.Get_tag()))
        sent.wait()
        return out

    same(raw, c, calls)
    ok("a_matched_messages_started_receive_gives_its_status")


def check_exchanges_in_place_and_matched_receives_take_datatypes_with_gaps(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Sendrecv_replace, Isendrecv, Isendrecv_replace and Message.Recv into a subarray or a
    column were refused (Unsupported) though their message named point to point as supported.
    Isendrecv_replace is held to what MPI defines: raw MPICH 5 wrote garbage there."""
    block = D.Create_subarray([4, 4], [2, 2], [1, 1]).Commit()
    column = D.Create_vector(4, 1, 4).Commit()

    def calls(comm: Any) -> object:
        r, n = comm.rank, comm.size
        nxt, prv = (r + 1) % n, (r - 1) % n
        a = np.arange(16.0).reshape(4, 4) + 100 * r
        comm.Sendrecv_replace([a, 1, block], nxt, 11, prv, 11)
        b = np.zeros((4, 4))
        comm.Isendrecv([a, 1, column], nxt, 12, [b, 1, column], prv, 12).Wait()
        f = np.zeros((4, 4))
        sent = comm.Isend(np.arange(4.0) + r, nxt, 14)
        comm.Mprobe(prv, 14).Recv([f, 1, column])
        sent.Wait()
        return [a.tolist(), b.tolist(), f.tolist()]

    same(raw, c, calls)
    e = np.arange(16.0).reshape(4, 4) - c.rank
    c.Isendrecv_replace([e, 1, column], (c.rank + 1) % c.size, 13, (c.rank - 1) % c.size, 13).Wait()
    want = np.arange(16.0).reshape(4, 4) - c.rank
    want[:, 0] = np.arange(0.0, 16.0, 4) - (c.rank - 1) % c.size  # the previous rank's first column
    assert np.array_equal(e, want), (e, want)
    block.Free()
    column.Free()
    ok("exchanges_in_place_and_matched_receives_take_datatypes_with_gaps")


def check_a_datatype_reaching_outside_its_buffer_is_refused_before_mpi_touches_memory(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """[b, column] of a column resized to one element: the count inferred (16) makes MPI reach
    96 bytes past the buffer; raw MPICH corrupted its heap (a crash at exit). Secure raises
    ValueError on the calling rank, before anything is sent or posted (raw is not run)."""
    del raw
    column = D.Create_vector(4, 1, 4).Create_resized(0, 8).Commit()
    b = np.zeros((4, 4))
    for call in (lambda: c.Irecv([b, column], 0, 3), lambda: c.Send([b, column], 0, 3),
                 lambda: c.Send([b[1:], 1, column], 0, 3)):
        try:
            call()
        except ValueError as exc:
            assert "MPI would reach outside it" in str(exc), exc
        else:
            raise AssertionError("a datatype reaching outside its buffer was taken")
    column.Free()
    # a negative extent lays the items backwards, before the buffer (helper-143: Send read,
    # Recv, Gatherv and Alltoallw wrote there; only item 0 and the last item's end were checked)
    backwards = D.Create_resized(0, -8).Commit()
    arena = np.arange(64.0)
    view = arena[32:36]
    n = c.size
    for call in (lambda: c.Send([view, 4, backwards], 0, 3), lambda: c.Irecv([view, 4, backwards], 0, 3),
                 lambda: c.Recv([view, 4, backwards], 0, 3)):
        try:
            call()
        except ValueError as exc:
            assert "MPI would reach outside it" in str(exc), exc
        else:
            raise AssertionError("a datatype laid before its buffer was taken")
    try:  # the root's receive buffer is refused there; the others' sends complete, as raw MPI's
        c.Gatherv(np.zeros(2), [view, [2] * n, [0] * n, backwards], root=0)
    except ValueError as exc:
        assert c.rank == 0 and "span bytes -8 to 8 of a buffer of 32: MPI would" in str(exc), exc
    else:
        assert c.rank != 0, "a datatype laid before its buffer was taken"
    blocks = ([2] * n, [16 * k for k in range(n)])
    try:  # every rank's receive buffer is refused, before anything is sent
        c.Alltoallw([np.zeros(2 * n), blocks, [D] * n], [arena[32:32 + 2 * n], blocks, [backwards] * n])
    except ValueError as exc:
        assert "Alltoallw: a block of 2 at byte 0 goes past the buffer" in str(exc), exc
    else:
        raise AssertionError("a datatype laid before its buffer was taken")
    assert np.array_equal(arena, np.arange(64.0)), arena  # nothing written anywhere
    backwards.Free()
    gap = D.Create_resized(0, 16).Commit()  # a type with a gap: Alltoallw's packed path
    nothing = ([0] * n, [10_000] * n)  # no item: a displacement past the buffer is not reached (helper-145)
    c.Alltoallw([np.zeros(2), nothing, [gap] * n], [np.zeros(2), nothing, [gap] * n])
    gap.Free()
    ok("a_datatype_reaching_outside_its_buffer_is_refused_before_mpi_touches_memory")


def check_a_refused_datatype_is_named_by_its_kind_not_by_mpis_name_for_it(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Open MPI names a resized MPI_DOUBLE "Dup MPI_DOUBLE", and the refusal read "a datatype
    with gaps (Dup MPI_DOUBLE: a vector, ...)" (helper-112). A derived type is named by its
    kind; raw is not run (it takes both)."""
    del raw
    resized = D.Create_resized(0, 16).Commit()
    before = D.Create_struct([1], [-8], [D]).Commit()  # gap-free, its data 8 bytes before the buffer
    b = np.zeros(8)
    gathered = (lambda: c.Allreduce([b, 1, resized], [np.zeros(8), 1, resized]), "(here a resized datatype;")
    sent = (lambda: c.Send([b[1:], 1, before], 0, 3), "cannot take a struct datatype with a negative")
    for call, words in (gathered, sent):
        try:
            call()
        except mpish.comm.Unsupported as exc:
            assert words in str(exc) and "Dup" not in str(exc), exc
        else:
            raise AssertionError("a datatype secure cannot take was taken")
    resized.Free()
    before.Free()
    assert c.allreduce(1) == c.size  # in step
    ok("a_refused_datatype_is_named_by_its_kind_not_by_mpis_name_for_it")


def check_the_block_collectives_take_datatypes_with_gaps_as_raw(c: SecureComm, raw: MPI.Intracomm) -> None:
    """The columns of a 4 x size matrix scattered, gathered (in place too, and started),
    allgathered and exchanged with a resized column type, and a scatter into every other element:
    the tutorials' "scatter the columns of a matrix" raised Unsupported (helper-128)."""
    size, rank = raw.size, raw.rank
    vector = D.Create_vector(4, 1, size)
    column = vector.Create_resized(0, D.extent).Commit()  # block k: column k
    every_other = D.Create_vector(4, 1, 2).Commit()

    def matrix(fill: float) -> np.ndarray:
        return np.full((4, size), fill)

    def scatter(comm: Any) -> object:
        a, got = np.arange(4.0 * size).reshape(4, size), np.zeros(4)
        comm.Scatter([a, 1, column], got, root=0)
        spread = np.full(8, -1.0)
        comm.Scatter([a, 1, column], [spread, 1, every_other], root=size - 1)
        return got.tolist(), spread.tolist()

    def gather(comm: Any) -> object:
        b, mine = matrix(-1.0), np.arange(4.0) + 10 * rank
        comm.Gather(mine, [b, 1, column], root=0)
        in_place = matrix(-1.0)
        in_place[:, rank] = mine
        comm.Gather(MPI.IN_PLACE if rank == 0 else mine, [in_place, 1, column], root=0)
        started = matrix(-1.0)
        comm.Igather(mine, [started, 1, column], root=size - 1).Wait()
        return b.tolist(), in_place.tolist(), started.tolist()

    def allgather_alltoall(comm: Any) -> object:
        b, mine = matrix(-1.0), np.arange(4.0) + 10 * rank
        comm.Allgather(mine, [b, np.int64(1), column])  # a numpy count, as mpi4py takes it (helper-132)
        a, t = np.arange(4.0 * size).reshape(4, size) + 100 * rank, matrix(-1.0)
        comm.Alltoall([a, 1, column], [t, 1, column])
        return b.tolist(), t.tolist()

    for calls in (scatter, gather, allgather_alltoall):
        same(raw, c, calls)
    for datatype in (column, vector, every_other):
        datatype.Free()
    ok("the_block_collectives_take_datatypes_with_gaps_as_raw")


def check_reduce_scatter_refuses_counts_that_do_not_add_up_on_every_rank(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Counts that do not add up to the send buffer's: mpi4py raises ValueError; secure wrote
    whatever the sums gave. Now the rank with the wrong count raises it, the others
    CollectiveAborted, and the next collective is in step."""
    n = c.size
    send = np.ones(2 * n, "i8")
    with np.errstate(all="ignore"):
        try:
            raw.Reduce_scatter(send, np.zeros(2, "i8"), [1] * n, MPI.SUM)
        except ValueError as exc:
            assert "mismatch" in str(exc), exc
        else:
            raise AssertionError("mpi4py took counts that do not add up")
    try:
        c.Reduce_scatter(send, np.zeros(2, "i8"), [1] * n, MPI.SUM)
    except (ValueError, CollectiveAborted) as exc:
        assert isinstance(exc, ValueError) and "mismatch in send count" in str(exc), exc
    else:
        raise AssertionError("secure took counts that do not add up")
    assert c.allreduce(1) == n  # in step
    ok("reduce_scatter_refuses_counts_that_do_not_add_up_on_every_rank")


def check_an_operation_mpi_cannot_apply_to_the_datatype_fails_on_every_rank_as_raw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """MPI.BAND of doubles: raw MPI raises ERR_OP on every rank. Secure raised it only where
    blocks were combined (rank 0, or down Scan's chain); the others went on or got
    CollectiveAborted, so a program falling back to MPI.SUM on the error hung (helper-118)."""
    def calls(comm: Any) -> dict[str, Callable[[], object]]:
        n = comm.size
        return {
            "Allreduce": lambda: comm.Allreduce(np.ones(2), np.empty(2), op=MPI.BAND),
            "Reduce": lambda: comm.Reduce(np.ones(2), np.empty(2), op=MPI.BAND, root=n - 1),
            "Scan": lambda: comm.Scan(np.ones(2), np.empty(2), op=MPI.BAND),
            "Exscan": lambda: comm.Exscan(np.ones(2), np.empty(2), op=MPI.BOR),
            "Reduce_scatter_block": lambda: comm.Reduce_scatter_block(np.ones(2 * n), np.empty(2), MPI.LOR),
            "Iallreduce": lambda: comm.Iallreduce(np.ones(2), np.empty(2), op=MPI.BAND).Wait(),
        }
    for comm in (raw, c):
        for name, call in calls(comm).items():
            try:
                call()
            except MPI.Exception as exc:
                assert exc.Get_error_class() == MPI.ERR_OP, (name, comm is c, exc)
                assert not isinstance(exc, CollectiveAborted), (name, exc)
            else:
                raise AssertionError(f"{name} took MPI.BAND of doubles ({'secure' if comm is c else 'raw'})")
            out = np.empty(2)
            comm.Allreduce(np.ones(2), out, op=MPI.SUM)  # the program's fallback: every rank in step
            assert out.tolist() == [comm.size] * 2, (name, out)
    ok("an_operation_mpi_cannot_apply_to_the_datatype_fails_on_every_rank_as_raw")


def check_the_other_ranks_of_a_failed_collective_get_an_mpi_exception(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """A collective failed on one rank (its receive buffer too small): the others raised
    CollectiveAborted, which code catching MPI.Exception did not catch (helper-118). It is one
    now, of class ERR_OTHER, naming the rank it failed on; raw is not run (it may hang)."""
    del raw
    short = c.size > 1 and c.rank == c.size - 1
    try:
        c.Allreduce(np.ones(2), np.empty(1 if short else 2))
    except MPI.Exception as exc:
        assert c.size > 1, exc
        if short:
            assert not isinstance(exc, CollectiveAborted), exc
        else:
            assert isinstance(exc, CollectiveAborted) and exc.Get_error_class() == MPI.ERR_OTHER, repr(exc)
            assert f"failed on rank {c.size - 1}" in str(exc), exc
    except ValueError as exc:
        assert short, exc
    else:
        assert c.size == 1, "a collective with a short receive buffer was taken"
    assert c.allreduce(1) == c.size  # in step
    ok("the_other_ranks_of_a_failed_collective_get_an_mpi_exception")


def check_sendrecv_of_long_messages_and_a_truncated_receive_behave_as_raw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Sendrecv seals and posts its message as plain MPI sends, receives, then waits for them
    (a secure Isend before the receive made it poll: 3x a whole ping-pong, helper-118). A
    ring of 6 MiB messages (every rank sends first) completes; a receive buffer too small is
    ERR_TRUNCATE on every rank, as raw, and the ring goes on in step."""
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    for comm in (raw, c):
        got = np.zeros(6 << 20, "u1")
        comm.Sendrecv(np.full(6 << 20, r % 251, "u1"), dest, 31, got, src, 31)
        assert np.all(got == src % 251)
        replaced = np.full(3 << 20, float(r))
        comm.Sendrecv_replace(replaced, dest, 32, src, 32)
        assert np.all(replaced == src)
        try:  # (alone, raw Open MPI truncates a message to itself without a word)
            comm.Sendrecv(np.full(8, float(r)), dest, 33, np.zeros(4), src, 33)
        except MPI.Exception as exc:
            assert exc.Get_error_class() == MPI.ERR_TRUNCATE, repr(exc)
        else:
            assert n == 1, f"a receive buffer too small was taken ({'secure' if comm is c else 'raw'})"
        small = np.zeros(2)
        comm.Sendrecv(np.full(2, float(r)), dest, 34, small, src, 34)
        assert small.tolist() == [float(src)] * 2, small
    ok("sendrecv_of_long_messages_and_a_truncated_receive_behave_as_raw")


if __name__ == "__main__":
    run_checks([
        check_a_datatype_that_starts_past_its_buffers_start_is_read_and_written_there,
        check_a_gap_free_datatype_listing_its_parts_out_of_memory_order_travels_in_its_order,
        check_a_single_block_at_an_absolute_address_travels_as_in_mpi,
        check_persistent_requests_with_gaps_read_and_write_the_buffer_at_each_start,
        check_persistent_requests_keep_working_after_the_program_frees_their_datatype,
        check_a_packed_numpy_struct_reduces_with_a_user_op_as_raw,
        check_a_matched_messages_started_receive_gives_its_status,
        check_exchanges_in_place_and_matched_receives_take_datatypes_with_gaps,
        check_a_datatype_reaching_outside_its_buffer_is_refused_before_mpi_touches_memory,
        check_a_refused_datatype_is_named_by_its_kind_not_by_mpis_name_for_it,
        check_the_block_collectives_take_datatypes_with_gaps_as_raw,
        check_reduce_scatter_refuses_counts_that_do_not_add_up_on_every_rank,
        check_an_operation_mpi_cannot_apply_to_the_datatype_fails_on_every_rank_as_raw,
        check_the_other_ranks_of_a_failed_collective_get_an_mpi_exception,
        check_sendrecv_of_long_messages_and_a_truncated_receive_behave_as_raw,
    ])
