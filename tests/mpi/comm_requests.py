"""Run under mpiexec: requests of mpish.secure(comm) as MPI's (synchronous sends, Cancel,
Get_status, dropped requests, MPI.Request's class-level calls), found by mpi4py's own tests.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
A receive that should complete is given a deadline (``_completes``), so a message taken
by the wrong receive fails the check instead of hanging the job.
"""

from __future__ import annotations

import gc
import time

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

from mpish.comm import SecureComm, Startall, Waitall


def ok(name: str) -> None:
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def _completes(request: object, what: str) -> None:
    """Test ``request`` until it completes; fail (not hang) after 20 s."""
    deadline = time.monotonic() + 20
    while not request.Test():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"{what} never completed"


def check_issend_completes_only_once_matched(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Issend/issend/Ssend_init do not complete before a receive matched them, as in MPI."""
    for comm in (raw, c):
        for size in (3, 300_000):  # one record; several records
            request = comm.Issend(np.full(size, 7, "u1"), comm.rank, 11)
            assert not request.Test() and request, (comm, size)
            got = np.zeros(size, "u1")
            comm.Recv(got, comm.rank, 11)
            _completes(request, "Issend")
            assert not request and np.all(got == 7)
        request = comm.issend({"a": 1}, comm.rank, 12)
        assert not request.test()[0]
        assert comm.recv(None, comm.rank, 12) == {"a": 1}
        request.wait()
        persistent = comm.Ssend_init(np.ones(4), comm.rank, 13)
        persistent.Start()
        assert not persistent.Test()
        comm.Recv(np.zeros(4), comm.rank, 13)
        persistent.Wait()
        persistent.Free()
        # Blocking Ssend in a ring: each rank's receive is posted first.
        dest, src = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
        got = np.zeros(5)
        recv = comm.Irecv(got, src, 14)
        comm.Ssend(np.full(5, float(comm.rank)), dest, 14)
        recv.Wait()
        assert np.all(got == src)
    ok("issend_completes_only_once_matched")


def check_a_probe_does_not_complete_a_synchronous_send(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Issend/issend (one record and several) probed by Probe, Iprobe, Mprobe stay pending until
    the receive: the receiver acknowledges (comm/synchronous.py). Was: the probe completed them."""
    dest, src = (c.rank + 1) % c.size, (c.rank - 1) % c.size
    for comm in (raw, c):
        cases = ((8, "Probe"), (300_000, "Probe"), (8, "Iprobe"), (8, "Mprobe"), (300_000, "Mprobe"))
        for size, how in cases:
            request = comm.Issend(np.full(size, comm.rank % 250, "u1"), dest, 60)
            status = MPI.Status()
            message = None
            if how == "Probe":
                comm.Probe(src, 60, status)
            elif how == "Iprobe":
                while not comm.Iprobe(src, 60, status):
                    pass
            else:
                message = comm.Mprobe(src, 60, status)
            assert status.Get_count(MPI.BYTE) == size
            MPI.COMM_WORLD.Barrier()  # every rank has probed its message, none received it
            for _ in range(3):
                assert not request.Test() and request, (comm, size, how)
            MPI.COMM_WORLD.Barrier()
            got = np.zeros(size, "u1")
            if message is None:
                comm.Recv(got, src, 60)
            else:
                message.Recv(got)
            _completes(request, f"Issend probed by {how}")
            assert not request and np.all(got == src % 250)
        request = comm.issend({"to": dest}, dest, 61)
        assert comm.probe(src, 61) and not request.test()[0]
        MPI.COMM_WORLD.Barrier()
        assert not request.test()[0]
        MPI.COMM_WORLD.Barrier()
        assert comm.recv(None, src, 61) == {"to": c.rank}
        request.wait()
    ok("a_probe_does_not_complete_a_synchronous_send")


def check_textbook_synchronous_programs_complete(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Every rank Issends then Recvs then Waits; Ssend to itself with a posted Irecv; an Ssend
    whose receive was posted before the receiver blocked in another secure call, or in a raw
    MPI call (the progress thread receives and acknowledges it): all complete, as on MPI."""
    dest, src = (c.rank + 1) % c.size, (c.rank - 1) % c.size
    for comm in (raw, c):
        for size in (8, 300_000):
            request = comm.Issend(np.full(size, 3, "u1"), dest, 62)
            got = np.zeros(size, "u1")
            comm.Recv(got, src, 62)
            request.Wait()
            assert np.all(got == 3)
        got = np.zeros(4)
        posted = comm.Irecv(got, comm.rank, 63)
        comm.Ssend(np.full(4, 5.0), comm.rank, 63)
        posted.Wait()
        assert np.all(got == 5.0)
        # Every rank's receive is posted, then every rank is in its own Ssend (a secure call)
        # when the message for that receive arrives.
        posted = comm.Irecv(got, src, 64)
        comm.Ssend(np.full(4, 6.0), dest, 64)
        send = comm.Isend(np.full(4, 7.0), dest, 65)  # (a blocking Send to itself may never return)
        later = np.zeros(4)
        comm.Recv(later, src, 65)
        posted.Wait()
        send.Wait()
        assert np.all(got == 6.0) and np.all(later == 7.0)
    # The receiver waits in a raw MPI Barrier while the sender is in Ssend: only the progress
    # thread, watching the posted Irecv, can receive and acknowledge it.
    got = np.zeros(4)
    posted = c.Irecv(got, src, 66)
    raw.Barrier()  # every receive is posted
    if c.rank % 2 == 0:
        c.Ssend(np.full(4, 8.0), dest, 66)
        raw.Barrier()
    else:
        raw.Barrier()
        c.Ssend(np.full(4, 8.0), dest, 66)
    posted.Wait()
    assert np.all(got == 8.0)
    ok("textbook_synchronous_programs_complete")


def check_cancel_and_get_status(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Cancel of a receive and of an unmatched synchronous send, Get_status without completing."""
    for comm in (raw, c):
        status = MPI.Status()
        request = comm.Irecv(np.zeros(4), comm.rank, 21)
        assert not request.Get_status()
        request.Cancel()
        assert request  # active until completed
        request.Wait(status)
        assert status.Is_cancelled() and not request
        # A later message with that tag goes to a later receive.
        send = comm.Isend(np.arange(4.0), comm.rank, 21)  # to itself: never a blocking Send
        got = np.zeros(4)
        comm.Recv(got, comm.rank, 21)
        send.Wait()
        assert np.array_equal(got, np.arange(4.0))
        # Get_status: complete, not yet completed.
        request = comm.Irecv(got, comm.rank, 22)
        send = comm.Isend(np.ones(4), comm.rank, 22)
        while not request.Get_status(status):
            pass
        send.Wait()
        assert request and status.Get_source() == comm.rank and status.Get_tag() == 22
        request.Wait()
        assert not request and np.all(got == 1)
        # An unmatched Issend: cancelled, or (MPI may refuse) received as usual; as mpi4py's testCancel.
        request = comm.Issend(np.ones(2), comm.rank, 23)
        request.Cancel()
        status = MPI.Status()
        done = request.Get_status(status)
        assert request
        if status.Is_cancelled():
            assert done
            request.Free()
        else:
            comm.Recv(np.zeros(2), comm.rank, 23)
            request.Wait()
        assert not request
    ok("cancel_and_get_status")


def check_dropped_request_leaves_no_posted_receive(c: SecureComm, raw: MPI.Intracomm) -> None:
    """A request garbage-collected while its receive is posted is cancelled: it takes no later message."""
    dest, src = (c.rank + 1) % c.size, (c.rank - 1) % c.size
    request = c.Irecv(np.zeros(8), src, 31)
    obj_request = c.irecv(None, src, 32)
    del request, obj_request
    gc.collect()
    c.Barrier()  # every rank dropped its receives before any sends
    sends = [c.Isend(np.full(8, 5.0), dest, 31), c.isend("later", dest, 32)]
    got = np.zeros(8)
    _completes(c.Irecv(got, src, 31), "the later Irecv")
    assert np.all(got == 5.0)
    assert c.recv(None, src, 32) == "later"
    Waitall(sends)
    ok("dropped_request_leaves_no_posted_receive")


def check_mpi_class_level_calls_complete_secure_requests(c: SecureComm, raw: MPI.Intracomm) -> None:
    """MPI.Request.Waitall/waitall/Testall/waitany/testany/Waitsome/testsome complete secure
    requests, mixed with raw ones, with objects and statuses as mpi4py's (were TypeErrors)."""
    dest, src = (c.rank + 1) % c.size, (c.rank - 1) % c.size
    got, got_raw = np.zeros(3), np.zeros(3)
    requests = [c.Irecv(got, src, 41), c.Isend(np.full(3, 2.0), dest, 41),
                raw.Irecv(got_raw, src, 42), raw.Isend(np.full(3, 5.0), dest, 42)]
    statuses = [MPI.Status() for _ in requests]
    assert MPI.Request.Waitall(requests, statuses) is True
    assert np.all(got == 2.0) and np.all(got_raw == 5.0) and not any(requests)
    assert all(r == MPI.REQUEST_NULL for r in requests)
    first = statuses[0]
    assert (first.Get_source(), first.Get_tag(), first.Get_count(MPI.DOUBLE)) == (src, 41, 3)
    # objects, to oneself, received by a call that blocks inside MPI (the progress thread's work)
    receives = [c.irecv(source=c.rank, tag=43 + i) for i in range(3)]
    sends = [c.isend({"n": i, "big": b"x" * (i * 200_000)}, c.rank, 43 + i) for i in (2, 1, 0)]
    assert [o["n"] for o in MPI.Request.waitall(receives)] == [0, 1, 2]
    MPI.Request.Waitall(sends)
    request = c.irecv(source=c.rank, tag=47)
    assert MPI.Request.testany([request]) == (MPI.UNDEFINED, False, None)
    assert MPI.Request.Testall([request]) is False
    c.send("late", c.rank, 47)
    deadline = time.monotonic() + 20
    while True:
        index, flag, obj = MPI.Request.testany([request])
        if flag:
            break
        assert time.monotonic() < deadline, "testany never completed"
    assert (index, obj, bool(request)) == (0, "late", False)
    assert request.wait() is None  # completed by MPI: inactive
    receives = [c.irecv(source=src, tag=48), c.irecv(source=src, tag=49)]
    c.send("a", dest, 48)
    c.send("b", dest, 49)
    done: dict[int, object] = {}
    while len(done) < 2:
        indices, objects = MPI.Request.waitsome(receives)
        done.update(zip(indices, objects, strict=True))
    assert done == {0: "a", 1: "b"}, done
    assert MPI.Request.Waitany(receives) == MPI.UNDEFINED
    ok("mpi_class_level_calls_complete_secure_requests")


def check_thousands_of_pending_requests_complete_through_mpi_waitall(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """3000 receives and 3000 sends pending at once (an unstructured halo, a master with one
    Irecv per task) all complete through MPI.Request.Waitall with the right data; the handles'
    polling takes a bounded batch per call (tests/unit/test_handle_polling.py), so posting them
    no longer costs time in the square of their number."""
    dest, src = (c.rank + 1) % c.size, (c.rank - 1) % c.size
    count = 3000
    buffers = [np.zeros(2) for _ in range(count)]
    receives = [c.Irecv(buffers[i], src, 1000 + i) for i in range(count)]
    sends = [c.Isend(np.array([i, c.rank], "d"), dest, 1000 + i) for i in range(count)]
    MPI.Request.Waitall(receives + sends)
    assert all(b[0] == i and b[1] == src for i, b in enumerate(buffers))
    ok("thousands_of_pending_requests_complete_through_mpi_waitall")


def check_mpi_starts_and_completes_persistent_requests(c: SecureComm, raw: MPI.Intracomm) -> None:
    """MPI.Prequest.Startall starts secure persistent requests, MPI.Prequest.Waitany completes
    them (was ERR_REQUEST), MPI.Prequest(request) copies one, as mpi4py's testPersistent and
    testConstructor do; the request's own Wait still gives the message's status."""
    dest, src = (c.rank + 1) % c.size, (c.rank - 1) % c.size
    for comm in (raw, c):
        got = np.zeros(4)
        send = comm.Send_init(np.full(4, 3.0), dest, 50)
        recv = comm.Recv_init(got, src, 50)
        for _ in range(3):
            got[:] = 0
            MPI.Prequest.Startall([send, recv])
            done = [MPI.Prequest.Waitany([send, recv]) for _ in range(2)]
            assert sorted(done) == [0, 1], (comm, done)
            assert MPI.Prequest.Waitany([send, recv]) == MPI.UNDEFINED
            assert np.all(got == 3.0) and send and recv != MPI.REQUEST_NULL
        got[:] = 0
        recv.Start()
        send.Start()
        MPI.Request.Waitall([send, recv])
        assert np.all(got == 3.0)
        MPI.Prequest.Startall([recv, send])
        status = MPI.Status()
        recv.Wait(status)
        send.Wait()
        assert (status.Get_source(), status.Get_tag(), status.Get_count(MPI.DOUBLE)) == (src, 50, 4)
        dupe = MPI.Prequest(send)
        assert type(dupe) is MPI.Prequest and dupe == send and MPI.Request(send) == send
        send.Free()
        recv.Free()
        assert send == MPI.REQUEST_NULL and recv == MPI.REQUEST_NULL and not send
    ok("mpi_starts_and_completes_persistent_requests")


def check_persistent_collectives_start_by_any_start_and_complete_by_any_wait_as_mpis(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Bcast_init & co. (MPI 4): each start (its own Start, mpish.comm.Startall, MPI's
    Startall: refused with ERR_REQUEST before they were started collectives) starts the
    collective on the buffers' data of that moment; each wait (MPI's too) completes it."""
    got, total, mine = np.zeros(3), np.zeros(3), np.zeros(3)
    # mpi4py's arguments, info included (positional or by name); a bad root fails at the call
    bcast = c.Bcast_init(got, c.size - 1, MPI.INFO_NULL)
    allreduce = c.Allreduce_init(mine, total, info=MPI.INFO_NULL)
    # idle, it is inactive for MPI's calls (Waitany took it for done), and true, as MPI's
    receive = c.Irecv(np.zeros(1), (c.rank - 1) % c.size, 31)
    c.Send(np.ones(1), (c.rank + 1) % c.size, 31)
    assert MPI.Request.Waitany([allreduce, receive]) == 1 and allreduce and allreduce != MPI.REQUEST_NULL
    for bad in (lambda: c.Bcast_init(got, root=c.size), lambda: c.Reduce_init(mine, total, MPI.SUM, -1)):
        try:
            bad()
        except MPI.Exception as exc:
            assert exc.Get_error_class() == MPI.ERR_ROOT, exc
        else:
            raise AssertionError("a persistent collective with a bad root was made")
    starts = (lambda: (allreduce.Start(), bcast.Start()), lambda: Startall([allreduce, bcast]),
              lambda: (MPI.Prequest.Startall([allreduce]), bcast.Start()),
              lambda: (MPI.Prequest.Startall([allreduce]), MPI.Prequest.Startall([bcast])))
    waits = (lambda: MPI.Request.Waitall([allreduce, bcast]), lambda: Waitall([allreduce, bcast]),
             lambda: (bcast.Wait(), allreduce.Wait()), lambda: MPI.Request.Waitall([bcast, allreduce]))
    for round_ in range(4):
        mine[:] = c.rank + round_
        if c.rank == c.size - 1:
            got[:] = 10 + round_
        # a rank's starts by MPI and another's by Start, then a blocking collective: one order
        starts[(round_ + c.rank) % 4]()
        assert c.allreduce(round_) == round_ * c.size
        waits[round_]()
        assert np.all(total == sum(range(c.size)) + round_ * c.size) and np.all(got == 10 + round_), total
    bcast.Free()
    allreduce.Free()
    assert bcast == MPI.REQUEST_NULL
    ok("persistent_collectives_start_by_any_start_and_complete_by_any_wait_as_mpis")


def check_a_persistent_collective_started_by_mpi_runs_though_dropped_and_outlives_its_comms_free(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """helper-106: a request started by MPI.Prequest.Startall and dropped before mpish noticed
    the start never ran (the next collective read its records: UnpicklingError); and a
    persistent request's Start after its communicator's Free found its lane freed ("Invalid
    communicator"), where MPI keeps a communicator until its requests are freed."""
    for comm in (raw, c):
        mine, total = np.full(4, comm.Get_rank() + 1, dtype="i8"), np.zeros(4, dtype="i8")
        request = comm.Allreduce_init(mine, total, MPI.SUM)
        if comm.Get_rank() == 0:
            MPI.Prequest.Startall([request])
            del request
            gc.collect()
        else:
            request.Start()
            request.Wait()
        assert comm.allreduce(comm.Get_rank()) == sum(range(comm.Get_size()))
    dup = c.Dup()  # (raw Open MPI 5 crashes in this Start after Free: SIGSEGV; raw MPICH works)
    request = dup.Allreduce_init(mine, total, MPI.SUM)
    request.Start()
    request.Wait()
    dup.Free()
    total[:] = 0
    request.Start()
    request.Wait()
    assert np.all(total == sum(range(1, c.Get_size() + 1))), total
    request.Free()
    ok("a_persistent_collective_started_by_mpi_runs_though_dropped_and_outlives_its_comms_free")


def check_compare(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Compare: IDENT with itself, CONGRUENT with its Dup and the communicator it was made from."""
    dup = c.Dup()
    assert c.Compare(c) == MPI.IDENT
    assert c.Compare(dup) == MPI.CONGRUENT == dup.Compare(c)
    assert c.Compare(MPI.COMM_WORLD) == MPI.CONGRUENT
    dup.Free()
    ok("compare")


def check_empty_message_is_received_as_none(c: SecureComm, raw: MPI.Intracomm) -> None:
    """recv/irecv/mprobe of an empty message give None, as mpi4py's (was EOFError from pickle)."""
    for comm in (raw, c):
        sends = [comm.Isend([None, 0, MPI.BYTE], comm.rank, tag) for tag in (51, 52, 53)]
        assert comm.recv(None, comm.rank, 51) is None
        assert comm.irecv(None, comm.rank, 52).wait() is None
        assert comm.mprobe(comm.rank, 53).recv() is None
        for send in sends:
            send.Wait()
    ok("empty_message_is_received_as_none")


def _nbx(comm: MPI.Intracomm | SecureComm) -> list[int]:
    """The NBX sparse exchange (synchronous sends, then Ibarrier while probing), the last
    rank sending late: the sources heard from, in order."""
    rank, size = comm.Get_rank(), comm.Get_size()
    targets = sorted({(rank + 1) % size, (rank + 2) % size} - {rank})
    late = rank == size - 1 and size > 1  # receives at once, sends 0.3 s later: once the
    start = time.monotonic()  # others' sends are all received and their barriers started
    sends = [] if late else [comm.issend(rank, dest, 21) for dest in targets]
    heard: list[int] = []
    barrier = None
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, f"NBX did not complete on rank {rank}: heard {heard}"
        status = MPI.Status()
        if comm.iprobe(MPI.ANY_SOURCE, 21, status):
            heard.append(comm.recv(None, status.Get_source(), 21))
        if late and time.monotonic() > start + 0.3:
            sends, late = [comm.issend(rank, dest, 21) for dest in targets], False
        if barrier is None:
            if not late and all(send.Test() for send in sends):
                barrier = comm.Ibarrier()
        elif barrier.Test():
            return sorted(heard)


def check_nbx_sparse_exchange_completes_with_a_late_sender(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Ibarrier ran a blocking Barrier at the call: a rank done with its own sends could no
    longer receive a late rank's issend, and NBX (PETSc's two-sided exchange) hung."""
    assert _nbx(c) == _nbx(raw)
    # the barrier's records are never taken by a collective started before it completes
    request = c.Ibarrier()
    value = c.bcast({"from": 0} if c.rank == 0 else None, 0)
    assert value == {"from": 0} and c.allreduce(c.rank) == sum(range(c.size))
    request.Wait()
    assert not request
    c.Ibarrier().Wait()
    ok("nbx_sparse_exchange_completes_with_a_late_sender")


def check_started_ibarriers_keep_their_records_from_collectives_and_from_each_other(
        c: SecureComm, raw: MPI.Intracomm) -> None:
    """Review: Alltoall (whose blocks go straight to the lane) took a pending Ibarrier's release
    record (MPI "Message truncated"); a second Ibarrier waited at its start for the first to
    complete everywhere, so a rank that sends only after its two Ibarriers deadlocked its peer."""
    for comm in (raw, c):
        r, n = comm.Get_rank(), comm.Get_size()
        pending = comm.Ibarrier()
        send, got = np.arange(n, dtype="i4") + 10 * r, np.zeros(n, dtype="i4")
        comm.Alltoall(send, got)
        assert list(got) == [10 * k + r for k in range(n)], (comm, got)
        assert comm.gather(r, 0) == (list(range(n)) if r == 0 else None)
        assert comm.scatter(list(range(n)) if r == 0 else None, 0) == r
        value = np.array([r], dtype="i4")
        comm.Ibcast(value, 0).Wait()
        assert value[0] == 0
        pending.Wait()
        if r == 1:  # rank 1 starts its barriers only once rank 0 has started both and sent
            assert comm.recv(None, 0, 31) == "after two barriers"
        first, second = comm.Ibarrier(), comm.Ibarrier()
        if n > 1 and r == 0:
            comm.send("after two barriers", 1, 31)
        _completes(second, "the second Ibarrier")
        _completes(first, "the first Ibarrier")
        for request in reversed([comm.Ibarrier() for _ in range(5)]):
            request.Wait()
        assert comm.allreduce(1) == n
    ok("started_ibarriers_keep_their_records_from_collectives_and_from_each_other")


def check_a_freed_send_completes_in_the_background(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Isend, then Free before the peer's Recv (legal MPI: the send completes on its own): Free
    waited for the send, so every rank waited in Free for a receive posted after it (a porter's
    fire-and-forget idiom: a deadlock at -n 1 and -n 2 under both MPIs)."""
    r, n = c.rank, c.size
    for comm in (raw, c):
        for count in (1000, 200_000):  # one record, and a long message (continuation records)
            sent = np.full(count, float(r))
            request = comm.Isend(sent, (r + 1) % n, 31)
            request.Free()
            assert not request, comm
            got = np.zeros(count)
            comm.Recv(got, (r - 1) % n, 31)
            assert (got == float((r - 1) % n)).all(), (comm, count)
            del sent
            gc.collect()
        comm.Barrier()
    ok("a_freed_send_completes_in_the_background")


def check_freed_receives_synchronous_and_persistent_sends_complete_in_the_background(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Irecv, Issend or a started Send_init, then Free, then the exchange the peer's side needs
    (legal MPI: a freed operation completes on its own): Free waited for the operation, so
    every rank waited in Free for a call made after it (a reviewer's free1.py: deadlock at
    -n 1 and -n 2 under both MPIs). A freed receive still lands in its buffer."""
    r, n = c.rank, c.size
    right, left = (r + 1) % n, (r - 1) % n
    base = c.rejected
    for comm in (raw, c):
        for count in (1000, 200_000):  # one record, and a long message (continuation records)
            sent, got = np.full(count, float(r)), np.zeros(count)
            request = comm.Irecv(got, left, 32)
            request.Free()
            assert not request, comm
            comm.Send(sent, right, 32)
            rounds = 0
            while not comm.allreduce(bool((got == float(left)).all()), op=MPI.LAND):
                rounds += 1  # every call progresses the freed receive (its message is there)
                assert rounds < 10_000, (comm, count, "a freed receive never completed")
            request = comm.Issend(sent, right, 33)
            request.Free()
            assert not request, comm
            comm.Recv(got, left, 33)
            request = comm.Send_init(sent, right, 34)
            request.Start()
            request.Free()
            comm.Recv(got, left, 34)
            assert (got == float(left)).all(), (comm, count)
            comm.Barrier()  # every freed send was received: its buffer may go (raw MPI reads it late)
        strided = MPI.DOUBLE.Create_vector(1000, 1, 2).Commit()  # a datatype with gaps: was waited for
        got = np.zeros(2000)
        request = comm.Irecv([got, 1, strided], left, 35)
        request.Free()
        comm.Send(np.full(1000, float(r)), right, 35)  # Free waited for this send's message: deadlock
        rounds = 0
        while not comm.allreduce(bool((got[::2] == float(left)).all()), op=MPI.LAND):
            rounds += 1
            assert rounds < 10_000, (comm, "a freed receive into a strided datatype never completed")
        assert not got[1::2].any(), comm  # the gaps untouched
        strided.Free()
    c.Barrier()  # the acknowledgements of the freed Issends are taken, not rejected
    assert c.rejected == base, c.rejected - base
    ok("freed_receives_synchronous_and_persistent_sends_complete_in_the_background")


def check_a_freed_receive_completes_while_its_rank_waits_in_mpi_waitall(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Rank 1 frees an Irecv of a long message, then waits in MPI.Request.Waitall for a later
    small one; rank 0 sends both. The freed receive was progressed only by blocking secure
    calls, which rank 1 never made: rank 0's long Send waited for it to be drained, for ever
    (a porter; N >= 10,000 doubles). The progress thread now completes freed receives too."""
    count = 100_000
    for comm in (raw, c) if c.size > 1 else ():
        if comm.rank == 1:
            big, small = np.zeros(count), np.zeros(1)
            request = comm.Irecv(big, 0, 51)
            request.Free()
            MPI.Request.Waitall([comm.Irecv(small, 0, 52)])
            assert small[0] == 1.0
        elif comm.rank == 0:
            time.sleep(0.2)
            comm.Send(np.arange(count, dtype="f8"), 1, 51)
            comm.Send(np.ones(1), 1, 52)
        comm.Barrier()
    ok("a_freed_receive_completes_while_its_rank_waits_in_mpi_waitall")


def check_mpi_waitall_completes_secure_requests_next_to_null_and_completed_requests(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """The non-periodic halo exchange: ``[MPI.REQUEST_NULL] * 4`` filled for the neighbours that
    exist, then ``MPI.Request.Waitall``; also a raw request already complete in the list, and
    objects through ``MPI.Request.waitall``. MPICH aborted the job on its own assertion
    (``kind != MPIR_REQUEST_KIND__GREQUEST``) for a pending generalized request next to a null;
    secure handles are MPICH's extended generalized requests now (comm/extended.py), which its
    Waitall completes first. A truncated receive completed by MPI reports ERR_TRUNCATE."""
    left = c.rank - 1 if c.rank > 0 else MPI.PROC_NULL
    right = c.rank + 1 if c.rank < c.size - 1 else MPI.PROC_NULL
    for round_ in range(50):
        from_left, from_right = np.full(8, -1.0), np.full(8, -1.0)
        requests = [MPI.REQUEST_NULL] * 4
        if left != MPI.PROC_NULL:
            requests[0] = c.Irecv(from_left, left, 61)
            requests[2] = c.Isend(np.full(8, float(c.rank * 100 + round_)), left, 62)
        if right != MPI.PROC_NULL:
            requests[1] = c.Irecv(from_right, right, 62)
            requests[3] = c.Isend(np.full(8, float(c.rank * 100 + round_)), right, 61)
        statuses = [MPI.Status() for _ in requests]
        MPI.Request.Waitall(requests, statuses)
        if left != MPI.PROC_NULL:
            assert np.all(from_left == left * 100 + round_), from_left
            assert (statuses[0].Get_source(), statuses[0].Get_tag(), statuses[0].Get_count(MPI.DOUBLE)) == (
                left, 61, 8)
        if right != MPI.PROC_NULL:
            assert np.all(from_right == right * 100 + round_), from_right
    done = raw.Isend(b"", c.rank, 63)  # complete, not yet waited on, next to pending secure ones
    late = raw.Irecv(bytearray(0), c.rank, 63)
    while not done.Get_status():
        pass
    receive = c.irecv(source=c.rank, tag=64)
    send = c.isend({"halo": c.rank}, c.rank, 64)
    objects = MPI.Request.waitall([MPI.REQUEST_NULL, done, receive, MPI.REQUEST_NULL, send, late])
    assert objects[2] == {"halo": c.rank}, objects
    small = bytearray(2)
    truncated = c.Irecv(small, c.rank, 65)
    c.Send(b"far too long", c.rank, 65)
    statuses = [MPI.Status(), MPI.Status()]
    try:
        MPI.Request.Waitall([MPI.REQUEST_NULL, truncated], statuses)
    except MPI.Exception as exc:
        assert exc.Get_error_class() in (MPI.ERR_IN_STATUS, MPI.ERR_TRUNCATE), exc
    else:
        raise AssertionError("a truncated secure receive completed by MPI_Waitall reported no error")
    ok("mpi_waitall_completes_secure_requests_next_to_null_and_completed_requests")


def check_mpi_request_cancel_cancels_a_secure_receive_as_a_raw_one(c: SecureComm, raw: MPI.Intracomm) -> None:
    """``MPI.Request.Cancel(request)`` (mpi4py's class-level call, MPI_Cancel on the handle) did
    nothing to a secure Irecv: it never completed, and stayed posted, taking the next message
    (a porter). It is the request's own Cancel now: completed by MPI's Test/Waitall, cancelled."""
    for comm in (raw, c):
        for complete in ("test", "waitall"):
            into = np.zeros(4)
            request = comm.Irecv(into, comm.rank, 66)
            MPI.Request.Cancel(request)
            status = MPI.Status()
            if complete == "test":
                deadline = time.monotonic() + 20
                while not MPI.Request.Test(request, status):
                    assert time.monotonic() < deadline, f"{type(comm).__name__}: a cancelled Irecv hung"
            else:
                MPI.Request.Waitall([MPI.REQUEST_NULL, request], [MPI.Status(), status])
            assert status.Is_cancelled(), (type(comm).__name__, complete)
            send = comm.Isend(np.ones(4), comm.rank, 66)  # not for the cancelled receive any more
            later = np.zeros(4)
            comm.Recv(later, comm.rank, 66)
            send.Wait()
            assert np.all(later == 1.0) and np.all(into == 0.0), (type(comm).__name__, into)
    ok("mpi_request_cancel_cancels_a_secure_receive_as_a_raw_one")


def check_a_communicator_freed_with_receives_pending_still_delivers_them(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """MPI's Comm_free leaves the operations under way to complete: rank 1 posts an Irecv,
    frees the communicator, then waits; rank 0 sends later. Secure: MPICH said "Invalid
    communicator" (and a long message's sender hung), Open MPI aborted (Mprobe on
    MPI_COMM_NULL): the lanes' communicators went at once (a porter). They go once the last
    posted receive is done now."""
    for count in (4, 100_000) if c.size > 1 else ():  # one record; several (continuation records)
        for base in (raw, c):
            comm = base.Dup()
            if comm.rank == 1:
                got = np.zeros(count)
                request = comm.Irecv(got, 0, 67)
                comm.Free()
                request.Wait()
                assert got[-1] == count - 1, (type(base).__name__, count, got[-3:])
            elif comm.rank == 0:
                time.sleep(0.2)
                comm.Send(np.arange(count, dtype="f8"), 1, 67)
                comm.Free()
            else:
                comm.Free()
            base.Barrier()
    ok("a_communicator_freed_with_receives_pending_still_delivers_them")


def check_free_of_a_completed_or_freed_request_is_err_request_as_raw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """A completed request is MPI's null, and MPI_Request_free refuses it (ERR_REQUEST); secure
    requests were silent (a porter). So is a second Free of a persistent request."""
    for comm in (raw, c):
        send = comm.Isend(np.ones(2), comm.rank, 71)
        receive = comm.Irecv(np.zeros(2), comm.rank, 71)
        receive.Wait()
        send.Wait()
        persistent = comm.Send_init(np.ones(2), comm.rank, 72)
        persistent.Free()
        for request in (send, receive, persistent):
            try:
                request.Free()
            except MPI.Exception as exc:
                assert exc.Get_error_class() == MPI.ERR_REQUEST, (type(comm).__name__, exc)
            else:
                raise AssertionError(f"{type(comm).__name__}: Free of a null request was silent")
    ok("free_of_a_completed_or_freed_request_is_err_request_as_raw")


CHECKS = [
    check_issend_completes_only_once_matched,
    check_a_probe_does_not_complete_a_synchronous_send,
    check_textbook_synchronous_programs_complete,
    check_cancel_and_get_status,
    check_dropped_request_leaves_no_posted_receive,
    check_mpi_class_level_calls_complete_secure_requests,
    check_thousands_of_pending_requests_complete_through_mpi_waitall,
    check_mpi_starts_and_completes_persistent_requests,
    check_persistent_collectives_start_by_any_start_and_complete_by_any_wait_as_mpis,
    check_a_persistent_collective_started_by_mpi_runs_though_dropped_and_outlives_its_comms_free,
    check_compare,
    check_empty_message_is_received_as_none,
    check_nbx_sparse_exchange_completes_with_a_late_sender,
    check_started_ibarriers_keep_their_records_from_collectives_and_from_each_other,
    check_a_freed_send_completes_in_the_background,
    check_freed_receives_synchronous_and_persistent_sends_complete_in_the_background,
    check_a_freed_receive_completes_while_its_rank_waits_in_mpi_waitall,
    check_mpi_waitall_completes_secure_requests_next_to_null_and_completed_requests,
    check_mpi_request_cancel_cancels_a_secure_receive_as_a_raw_one,
    check_a_communicator_freed_with_receives_pending_still_delivers_them,
    check_free_of_a_completed_or_freed_request_is_err_request_as_raw,
]


if __name__ == "__main__":
    run_checks(CHECKS)
