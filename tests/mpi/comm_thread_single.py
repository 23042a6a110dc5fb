"""Run under mpiexec: with MPI initialized below MPI_THREAD_MULTIPLE there is no progress
thread. Under MPICH, MPI's class-level calls complete secure requests all the same (through
its extended generalized requests' callbacks, in the calling thread); under other MPIs they
refuse a secure request that is not complete yet (``ERR_REQUEST``; the first secure request
given to MPI warns once, on the program's line, naming the level) instead of hanging.
MPI.Prequest.Startall refuses a secure persistent request; mpish.comm.Waitall and the
requests' own methods still complete them.

Prints ``OK <check>`` and ``ALL OK``; any failure aborts the job.
"""

from __future__ import annotations

import threading
import warnings

import mpi4py

mpi4py.rc.thread_level = "single"

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402
from mpi_main import run  # noqa: E402

import mpish  # noqa: E402
from mpish.comm import Waitall, extended  # noqa: E402


def main() -> None:
    assert MPI.Query_thread() < MPI.THREAD_MULTIPLE
    c = mpish.secure(MPI.COMM_WORLD)
    if extended.available():
        mpich_class_level_calls_complete_secure_requests_in_the_calling_thread(c)
    else:
        class_level_calls_refuse_a_pending_secure_request(c)
    persistent_requests_are_refused_by_mpi_and_started_by_their_own_start(c)
    test_loops_progress_the_other_posted_receives(c)
    c.Free()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print("OK class_level_calls_without_thread_support", flush=True)
        print("ALL OK", flush=True)


def mpich_class_level_calls_complete_secure_requests_in_the_calling_thread(c: mpish.SecureComm) -> None:
    """Under MPICH a secure handle is an extended generalized request, which MPI's own waits
    complete through mpish's callbacks in the thread that waits (comm/extended.py): no progress
    thread is needed, so MPI.Request.Waitall & co. work below MPI_THREAD_MULTIPLE too (hybrid
    MPI+OpenMP codes run at "funneled"); the Waitsome that refused them left mpi4py's handles
    set on requests MPI had freed, and freeing them again crashed the process (a porter)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        peer, source = (c.rank + 1) % c.size, (c.rank - 1) % c.size
        for _ in range(3):
            got = [np.zeros(4) for _ in range(3)]
            raw = MPI.COMM_WORLD.Irecv(bytearray(2), source, 42)
            requests = [MPI.REQUEST_NULL, c.Irecv(got[0], source, 40), c.Irecv(got[1], source, 41), raw,
                        c.Irecv(got[2], source, 43), MPI.REQUEST_NULL]
            sends = [c.Isend(np.full(4, float(tag)), peer, tag) for tag in (43, 40, 41)]
            sends.append(MPI.COMM_WORLD.Isend(b"rr", peer, 42))
            done: list[int] = []
            while (indices := MPI.Request.Waitsome(requests)) is not None:
                done += indices
            assert sorted(done) == [1, 2, 3, 4] and [g[0] for g in got] == [40.0, 41.0, 43.0], (done, got)
            MPI.Request.Waitall(sends)
            assert MPI.Request.waitall([c.irecv(source=c.rank, tag=44), c.isend("x", c.rank, 44)])[0] == "x"
    assert said == [], said  # nothing refused: no warning
    assert not any(t.name == "mpish-progress" for t in threading.enumerate())


def class_level_calls_refuse_a_pending_secure_request(c: mpish.SecureComm) -> None:
    got = np.zeros(4)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        receive = c.Irecv(got, c.rank, 5)  # nothing sent yet: only mpish can complete it
        other = c.Irecv(np.zeros(4), c.rank, 8)
        c.Sendrecv(b"abcd", c.rank, 7, bytearray(4), c.rank, 7)  # its own requests: no warning
        assert said == [], said
        for request in (receive, other):
            try:
                MPI.Request.Waitall([request])
            except MPI.Exception as exc:  # MPI_Waitall reports the request's error in its status
                assert exc.Get_error_class() in (MPI.ERR_REQUEST, MPI.ERR_IN_STATUS), exc
            else:
                raise AssertionError("MPI.Request.Waitall returned on an incomplete secure request")
    assert len(said) == 1 and "thread level 'single'" in str(said[0].message), said  # once, named
    assert "mpish.comm.Waitall" in str(said[0].message) and said[0].filename == __file__, said[0]
    assert not any(t.name == "mpish-progress" for t in threading.enumerate())
    c.Send(np.full(4, 3.0), c.rank, 5)
    c.Send(np.full(4, 1.0), c.rank, 8)
    Waitall([receive, other])
    assert np.all(got == 3.0) and not receive


def persistent_requests_are_refused_by_mpi_and_started_by_their_own_start(c: mpish.SecureComm) -> None:
    got = np.zeros(4)
    persistent = c.Recv_init(got, c.rank, 6)  # MPI cannot start it: no thread would notice
    try:
        MPI.Prequest.Startall([persistent])
    except MPI.Exception:
        pass
    else:
        raise AssertionError("MPI.Prequest.Startall accepted a persistent request without a thread")
    persistent.Start()
    c.Send(np.full(4, 4.0), c.rank, 6)
    persistent.Wait()
    persistent.Free()
    assert np.all(got == 4.0)
    total = np.zeros(1)  # a persistent collective too: started by its Start, progressed by its Wait
    allreduce = c.Allreduce_init(np.ones(1), total)
    for _ in range(2):
        allreduce.Start()
        allreduce.Wait()
        assert total[0] == c.size, total
    allreduce.Free()


def test_loops_progress_the_other_posted_receives(c: mpish.SecureComm) -> None:
    """The poll-and-compute loop ``while not r.Test(): ...`` while another posted Irecv, q, is
    matched by a synchronous send: without a thread, only a blocking secure call progressed q,
    so the Ssend was never acknowledged and the Test loop spun for ever (a porter). A Test, as
    MPI's, progresses every posted receive; so do Iprobe, Testany and Testsome."""
    if c.size < 2 or c.rank > 1:
        return
    for poll in ("Test", "Iprobe"):
        if c.rank == 1:
            first, last = np.zeros(4), np.zeros(1)
            q = c.Irecv(first, 0, 21)
            r = c.Irecv(last, 0, 22)
            if poll == "Test":
                while not r.Test():
                    pass
                c.Recv(np.zeros(1), 0, 23)
            else:
                while not c.Iprobe(0, 23):
                    pass
                c.Recv(np.zeros(1), 0, 23)
                r.Wait()
            q.Wait()
            assert np.all(first == 7.0) and last[0] == 1.0
        else:
            c.Ssend(np.full(4, 7.0), 1, 21)  # acknowledged only once rank 1's q took it
            c.Send(np.ones(1), 1, 22)
            c.Send(np.ones(1), 1, 23)


if __name__ == "__main__":
    run(main)
