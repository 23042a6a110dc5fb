"""Run under mpiexec: started (nonblocking) collectives of mpish.secure(comm) progress as MPI's,
overlapped with point-to-point traffic that only completes if they do (an HPC porter's review:
every I-collective ran whole at the call, so a rank that started one and then waited for a
rank that had not started it yet hung where raw MPI completes).

Each program runs on the raw communicator first (it completes there: the pattern is legal MPI
and both MPIs progress it), then on the secure one, and both must give the same results. A
hang fails the check after a deadline (faulthandler ends the process, mpiexec the job) instead
of waiting for the test's timeout. Prints ``OK <check>`` per check and ``ALL OK`` at the end.
"""

from __future__ import annotations

import faulthandler
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

from mpish.comm import CollectiveAborted, SecureComm

DEADLINE = 120  # seconds a check may take before it counts as hung


def ok(name: str) -> None:
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def _each(raw: MPI.Intracomm, c: SecureComm, program: Callable[[Any], Any]) -> None:
    """``program`` on raw MPI, then on the secure communicator: the same results."""
    faulthandler.dump_traceback_later(DEADLINE, exit=True)
    try:
        expected = program(raw)
        got = program(c)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert _plain(got) == _plain(expected), (got, expected)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _started(comm: Any, name: str) -> tuple[Any, Any]:
    """(request, result buffer) of collective ``name`` started on ``comm`` (root 0 where one is)."""
    r, n = comm.Get_rank(), comm.Get_size()
    mine = np.arange(4, dtype="i8") + 10 * r
    if name == "Ibcast":
        buf = mine.copy() if r == 0 else np.zeros(4, dtype="i8")
        return comm.Ibcast(buf, 0), buf
    if name in ("Iallreduce", "Iscan", "Iexscan"):
        out = np.zeros(4, dtype="i8")
        return getattr(comm, name)(mine, out, MPI.SUM), out
    if name == "Ireduce":
        out = np.zeros(4, dtype="i8")
        return comm.Ireduce(mine, out if r == 0 else None, MPI.SUM, 0), out
    if name in ("Igather", "Iallgather"):
        out = np.zeros(4 * n, dtype="i8")
        args = (mine, out, 0) if name == "Igather" else (mine, out)
        return getattr(comm, name)(*args), out
    if name == "Iscatter":
        out = np.zeros(4, dtype="i8")
        return comm.Iscatter(np.arange(4 * n, dtype="i8") if r == 0 else None, out, 0), out
    if name == "Ialltoall":
        out = np.zeros(n, dtype="i8")
        return comm.Ialltoall(np.arange(n, dtype="i8") + 10 * r, out), out
    if name == "Ireduce_scatter_block":
        out = np.zeros(2, dtype="i8")
        return comm.Ireduce_scatter_block(np.arange(2 * n, dtype="i8") + r, out, MPI.SUM), out
    if name == "Ibarrier":
        return comm.Ibarrier(), None
    raise AssertionError(name)


STARTED = ("Ibcast", "Iallreduce", "Iscan", "Iexscan", "Ireduce", "Igather", "Iallgather", "Iscatter",
           "Ialltoall", "Ireduce_scatter_block", "Ibarrier")


def _overlapped(comm: Any, tag: int, *, started_first: bool) -> list[Any]:
    """Each collective of STARTED overlapped with a message from rank 1 to rank 0 on ``tag``:
    ``started_first``, rank 0 starts it, then receives what rank 1 sends after its Wait; else
    rank 0 receives what rank 1 sends right after starting it, then starts it."""
    r, n = comm.Get_rank(), comm.Get_size()
    results = []
    for name in STARTED:
        if r == 0 and n > 1 and not started_first:
            assert comm.recv(None, 1, tag) == name
        request, out = _started(comm, name)
        if r == 1 and not started_first:
            comm.send(name, 0, tag)
        if r == 0 and n > 1 and started_first:
            assert comm.recv(None, 1, tag) == name
        request.Wait()
        if r == 1 and started_first:
            comm.send(name, 0, tag)
        results.append(out)
    return results


def check_a_rank_waiting_for_a_peer_that_has_not_started_the_collective_yet(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """Rank 0 receives from rank 1 before it starts the collective; rank 1 starts it first and
    sends only then (helper-100's Iallreduce pattern): each I-collective must return at once."""
    _each(raw, c, lambda comm: _overlapped(comm, 61, started_first=False))
    ok("a_rank_waiting_for_a_peer_that_has_not_started_the_collective_yet")


def check_a_started_collective_progresses_while_its_rank_blocks_in_a_receive(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """Rank 0 starts the collective and blocks in a receive that rank 1 sends only once its
    own part completed: rank 0's part must progress inside that receive, as MPI's does."""
    _each(raw, c, lambda comm: _overlapped(comm, 62, started_first=True))
    ok("a_started_collective_progresses_while_its_rank_blocks_in_a_receive")


def _persistent(comm: Any, tag: int, *, started_first: bool) -> list[Any]:
    """_overlapped's patterns with persistent collectives (MPI 4), each started twice, by its
    Start and by MPI's Startall, waited for by its Wait and by MPI's Waitall (each start ran
    the whole collective: rank 0 blocked in its receive hung the other)."""
    r, n = comm.Get_rank(), comm.Get_size()
    mine, total = np.zeros(4, dtype="i8"), np.zeros(4, dtype="i8")
    got = np.zeros(4, dtype="i8")
    requests = {"Allreduce_init": comm.Allreduce_init(mine, total, MPI.SUM),
                "Bcast_init": comm.Bcast_init(got, 0), "Barrier_init": comm.Barrier_init()}
    results = []
    for round_ in range(2):
        for name, request in requests.items():
            mine[:] = np.arange(4) + 10 * r + round_
            got[:] = np.arange(4) + round_ if r == 0 else 0
            if r == 0 and n > 1 and not started_first:
                assert comm.recv(None, 1, tag) == name
            request.Start() if round_ == 0 else MPI.Prequest.Startall([request])
            if r == 1 and not started_first:
                comm.send(name, 0, tag)
            if r == 0 and n > 1 and started_first:
                assert comm.recv(None, 1, tag) == name
            request.Wait() if round_ == 0 else MPI.Request.Waitall([request])
            if r == 1 and started_first:
                comm.send(name, 0, tag)
            results.append((name, total.copy(), got.copy()))
    for request in requests.values():
        request.Free()
    return results


def check_a_persistent_collective_progresses_as_a_started_one_in_both_patterns(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """Each start of Allreduce_init, Bcast_init and Barrier_init is a started collective:
    in both of _overlapped's patterns it completes where raw MPI's does (it ran whole and hung)."""
    _each(raw, c, lambda comm: _persistent(comm, 63, started_first=False))
    _each(raw, c, lambda comm: _persistent(comm, 64, started_first=True))
    ok("a_persistent_collective_progresses_as_a_started_one_in_both_patterns")


def check_several_started_collectives_and_long_messages_complete_in_any_wait_order(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """Two collectives started back to back, one of them 1 MiB (many records), waited in reverse
    and through MPI.Request.Waitall next to a point-to-point receive; a blocking collective
    started meanwhile finishes their steps first."""
    def program(comm: Any) -> list[Any]:
        r, n = comm.Get_rank(), comm.Get_size()
        big = np.arange(1 << 17, dtype="i8") if r == 0 else np.zeros(1 << 17, dtype="i8")
        bcast = comm.Ibcast(big, 0)
        total = np.zeros(1, dtype="i8")
        reduce = comm.Iallreduce(np.array([r + 1], dtype="i8"), total, MPI.SUM)
        if r == 1:  # rank 1 waits for both before it sends: rank 0 is in the Waitall
            reduce.Wait()
            bcast.Wait()
            comm.send("both done", 0, 63)
        elif r == 0 and n > 1:
            receive = comm.irecv(None, 1, 63)
            assert MPI.Request.waitall([reduce, receive, bcast])[1] == "both done"
        else:
            MPI.Request.Waitall([reduce, bcast])
        started = comm.Iallreduce(np.array([r], dtype="i8"), out := np.zeros(1, dtype="i8"), MPI.MAX)
        gathered = comm.allgather(r)  # blocking: takes the started one's steps first
        started.Wait()
        return [int(big.sum()), int(total[0]), int(out[0]), gathered]

    _each(raw, c, program)
    ok("several_started_collectives_and_long_messages_complete_in_any_wait_order")


def check_a_started_neighbour_collective_progresses_while_its_rank_blocks_in_a_receive(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """On a periodic ring, both patterns above: rank 0 starts Ineighbor_alltoall and
    Ineighbor_allgather only once rank 1 started them, then blocks in a receive that rank 1
    sends once both completed there."""
    def program(comm: Any) -> list[Any]:
        ring = comm.Create_cart([comm.Get_size()], periods=[True])
        r, n = ring.Get_rank(), ring.Get_size()
        got, every = np.zeros(2, dtype="i8"), np.zeros(2, dtype="i8")
        if r == 0 and n > 1:
            assert ring.recv(None, 1, 64) == "started"
        # one value per sender, not per block: where both neighbours are one rank (-n 1, 2),
        # Open MPI's Ineighbor_alltoall orders the blocks otherwise than its Neighbor_alltoall
        requests = [ring.Ineighbor_alltoall(np.array([10 * r, 10 * r], dtype="i8"), got),
                    ring.Ineighbor_allgather(np.array([r], dtype="i8"), every)]
        if r == 1:
            ring.send("started", 0, 64)
        if r == 0 and n > 1:
            assert ring.recv(None, 1, 64) == "done"
        for request in requests:
            request.Wait()
        if r == 1:
            ring.send("done", 0, 64)
        ring.Free()
        return [got, every]

    _each(raw, c, program)
    ok("a_started_neighbour_collective_progresses_while_its_rank_blocks_in_a_receive")


def check_a_started_collective_that_fails_elsewhere_raises_at_wait_and_leaves_nothing(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """The root's buffer is wrong: the root raises at the call, every other rank at Wait (an
    abort notice); the next collectives get their own records."""
    r, n = c.Get_rank(), c.Get_size()
    faulthandler.dump_traceback_later(DEADLINE, exit=True)
    try:
        if r == 0:
            try:
                c.Ibcast("not writable, not a buffer" if n > 1 else object(), 0)
            except Exception as exc:  # the root: raised at the call
                assert not isinstance(exc, CollectiveAborted), exc
            else:
                raise AssertionError("Ibcast of a bad buffer raised nothing at the root")
        else:
            request = c.Ibcast(np.zeros(2, dtype="i8"), 0)
            try:
                request.Wait()
            except CollectiveAborted:
                pass
            else:
                raise AssertionError("the other ranks' Wait raised nothing")
        value = np.array([7 if r == 0 else 0], dtype="i8")
        c.Ibcast(value, 0).Wait()
        assert value[0] == 7 and c.allreduce(1) == n
    finally:
        faulthandler.cancel_dump_traceback_later()
    ok("a_started_collective_that_fails_elsewhere_raises_at_wait_and_leaves_nothing")


def _fails(call: Callable[[], Any], *, here: bool, told: bool = True) -> None:
    """``call()`` starts a collective in which one rank's buffers are wrong: that rank (``here``)
    raises at the call, the others get a request whose Wait raises CollectiveAborted (``told``;
    else, where no block comes from the wrong rank, it completes)."""
    try:
        request = call()
    except Exception as exc:
        assert here and not isinstance(exc, CollectiveAborted), exc
        return
    assert not here, "a wrong buffer raised nothing at the call"
    try:
        request.Wait()
    except CollectiveAborted:
        assert told, "an abort notice where none was due"
        return
    if told:
        raise AssertionError("Wait raised nothing where another rank's buffers were wrong")


def check_a_rank_with_wrong_buffers_raises_at_the_call_and_the_others_at_wait(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """helper-102: Alltoall had no abort notices (a bad buffer on one rank left another hung,
    a third reading a Barrier record as a block); Iscan's error at rank > 0 and Igather's at
    the root came at Wait (their failure protocol receives first). The next collectives get
    their own records."""
    r, n = c.Get_rank(), c.Get_size()
    bad = n - 1  # the rank with the wrong buffer
    faulthandler.dump_traceback_later(DEADLINE, exit=True)
    try:
        out = np.zeros(n, dtype="i8")
        if n > 1:
            _fails(lambda: c.Ialltoall("x" if r == bad else np.arange(n, dtype="i8"), out), here=r == bad)
            # a scan fails on the ranks after the wrong one: the wrong one is rank 0 here
            _fails(lambda: c.Iscan(np.ones(1), b"\x00" * 8 if r == 0 else np.zeros(1)), here=r == 0)
            # the root's receive buffer: the others' blocks are dropped there, they are done
            _fails(lambda: c.Igather(np.ones(1), "x" if r == bad else np.zeros(n), bad), here=r == bad,
                   told=False)
            try:
                c.Alltoall("x" if r == bad else np.arange(n, dtype="i8"), out)
            except CollectiveAborted:
                assert r != bad
            except Exception as exc:
                assert r == bad, exc
            else:
                raise AssertionError("a blocking Alltoall with a wrong buffer raised nothing")
        c.Alltoall(np.arange(n, dtype="i8") + 10 * r, out)
        assert out.tolist() == [10 * k + r for k in range(n)], out
        c.Barrier()
        assert c.allreduce(1) == n
    finally:
        faulthandler.cancel_dump_traceback_later()
    ok("a_rank_with_wrong_buffers_raises_at_the_call_and_the_others_at_wait")


def check_a_communicator_freed_while_a_collective_is_started_completes_it(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """helper-102: Free of the communicator freed its lanes at once and the started Iallreduce's
    next step probed MPI.COMM_NULL (as MPI's, an operation under way completes after Free)."""
    faulthandler.dump_traceback_later(DEADLINE, exit=True)
    try:
        comm = c.Dup()
        total = np.zeros(1, dtype="i8")
        request = comm.Iallreduce(np.array([c.Get_rank() + 1], dtype="i8"), total, MPI.SUM)
        comm.Free()
        request.Wait()
        assert int(total[0]) == sum(range(1, c.Get_size() + 1)), total
    finally:
        faulthandler.cancel_dump_traceback_later()
    ok("a_communicator_freed_while_a_collective_is_started_completes_it")


CHECKS = [
    check_a_rank_waiting_for_a_peer_that_has_not_started_the_collective_yet,
    check_a_started_collective_progresses_while_its_rank_blocks_in_a_receive,
    check_a_persistent_collective_progresses_as_a_started_one_in_both_patterns,
    check_several_started_collectives_and_long_messages_complete_in_any_wait_order,
    check_a_started_neighbour_collective_progresses_while_its_rank_blocks_in_a_receive,
    check_a_started_collective_that_fails_elsewhere_raises_at_wait_and_leaves_nothing,
    check_a_rank_with_wrong_buffers_raises_at_the_call_and_the_others_at_wait,
    check_a_communicator_freed_while_a_collective_is_started_completes_it,
]


if __name__ == "__main__":
    run_checks(CHECKS)
