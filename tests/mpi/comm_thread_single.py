"""Run under mpiexec: with MPI initialized below MPI_THREAD_MULTIPLE there is no progress
thread (the first secure request given to MPI warns once, on the program's line, naming the level), so
MPI's class-level calls refuse a secure request that is not complete yet (``ERR_REQUEST``)
instead of hanging, and MPI.Prequest.Startall a secure persistent request; mpish.comm.Waitall
and the requests' own methods still complete them.

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
from mpish.comm import Waitall  # noqa: E402


def main() -> None:
    assert MPI.Query_thread() < MPI.THREAD_MULTIPLE
    c = mpish.secure(MPI.COMM_WORLD)
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
    test_loops_progress_the_other_posted_receives(c)
    c.Free()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print("OK class_level_calls_refuse_without_thread_support", flush=True)
        print("ALL OK", flush=True)


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
