"""Run under mpiexec (2 ranks or more, an even number): several threads per rank use one
secure communicator at once (mpi4py asks for MPI_THREAD_MULTIPLE), each on its own tags,
with blocking and nonblocking point-to-point calls that wait on the other rank's threads
(a thread's Recv is matched by a Send the peer's same thread makes only after its own Recv),
then collectives, each thread on its own duplicate. Every message arrives exactly, no
genuine record is rejected, nothing hangs.

The first phase runs before any nonblocking call, when no progress thread exists yet.

Prints ``OK <check>`` and ``ALL OK``; any failure aborts the job.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run

import mpish

THREADS = 4
ROUNDS = 40
SIZES = (64, 1024, 20_000, 300_000)  # one small record, a 16 KiB+ record, a long message


def _payload(rank: int, thread: int, index: int, size: int) -> Any:
    return (np.arange(size, dtype=np.uint32) * 2654435761 + rank * 7919 + thread * 104729 + index) % 251


def _in_threads(work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as exc:  # reported by the main thread, which aborts the job
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def check_blocking_ping_pongs_in_threads(c: Any) -> None:
    peer = c.rank ^ 1
    first = c.rank % 2 == 0

    def work(t: int) -> None:
        tag = 10 + t
        for i in range(ROUNDS):
            size = SIZES[(i + t) % len(SIZES)]
            out = _payload(c.rank, t, i, size).astype(np.uint8)
            got = np.empty(size, dtype=np.uint8)
            if first:
                c.Send(out, peer, tag)
                c.Recv(got, peer, tag)
            else:
                c.Recv(got, peer, tag)
                c.Send(out, peer, tag)
            assert np.array_equal(got, _payload(peer, t, i, size).astype(np.uint8)), (t, i, size)

    _in_threads(work)


def check_nonblocking_and_object_messages_in_threads(c: Any) -> None:
    peer = c.rank ^ 1

    def work(t: int) -> None:
        tag = 20 + t
        for i in range(ROUNDS):
            size = SIZES[(i * 3 + t) % len(SIZES)]
            got = np.empty(size, dtype=np.uint8)
            receive = c.Irecv(got, peer, tag)
            send = c.Isend(_payload(c.rank, t, i, size).astype(np.uint8), peer, tag)
            receive.Wait()
            send.Wait()
            assert np.array_equal(got, _payload(peer, t, i, size).astype(np.uint8)), (t, i, size)
            c.send({"thread": t, "index": i, "from": c.rank}, peer, tag + 100)
            assert c.recv(None, peer, tag + 100) == {"thread": t, "index": i, "from": peer}

    _in_threads(work)


def check_collectives_in_threads_each_on_its_duplicate(c: Any) -> None:
    duplicates = [c.Dup() for _ in range(THREADS)]  # collective: made by the main thread

    def work(t: int) -> None:
        d = duplicates[t]
        for i in range(ROUNDS // 4):
            total = np.zeros(3, dtype=np.int64)
            d.Allreduce(np.array([d.rank, t, i], dtype=np.int64), total, op=MPI.SUM)
            assert list(total) == [d.size * (d.size - 1) // 2, d.size * t, d.size * i], total
            data = np.full(5000, t + i, dtype=np.int32) if d.rank == 0 else np.empty(5000, dtype=np.int32)
            d.Bcast(data, root=0)
            assert np.all(data == t + i)
            assert d.allgather((t, i, d.rank)) == [(t, i, r) for r in range(d.size)]
            d.Barrier()

    _in_threads(work)
    rejected = sum(d.rejected for d in duplicates)
    for d in duplicates:
        d.Free()
    assert rejected == 0, f"{rejected} genuine records were rejected on the duplicates"


def check_persistent_collectives_in_threads_each_on_its_duplicate(c: Any) -> None:
    """Each thread starts and waits its own Allreduce_init, by Start or by MPI's Startall and
    Waitall (helper-106: a thread's Start found another thread noticing starts and returned
    with its collective not started: Wait gave the receive buffer untouched, or hung)."""
    duplicates = [c.Dup() for _ in range(THREADS)]
    requests = []
    for t, d in enumerate(duplicates):  # collective: made by the main thread, in one order
        mine, total = np.full(4, d.rank + t, dtype=np.int64), np.zeros(4, dtype=np.int64)
        requests.append((d.Allreduce_init(mine, total, MPI.SUM), total))

    def work(t: int) -> None:
        request, total = requests[t]
        for i in range(ROUNDS):
            total[:] = -1
            if i % 2:
                MPI.Prequest.Startall([request])
                MPI.Request.Waitall([request])
            else:
                request.Start()
                request.Wait()
            want = duplicates[t].size * (duplicates[t].size - 1) // 2 + duplicates[t].size * t
            assert np.all(total == want), (t, i, total)

    _in_threads(work)
    for (request, _), d in zip(requests, duplicates, strict=True):
        request.Free()
        d.Free()


def check_a_start_run_and_completed_by_another_thread_ends_its_own_start(c: Any) -> None:
    """Start waits until its own start was run. When it runs an older start first (MPI's
    Startall queued it), that run's progress lets other threads in; one of them may notice
    this start, run it and complete it (its message received): Start then waited in MPI for
    that message for good, holding the lock (helper-122: a CI hang under Open MPI). Made
    deterministic on a one-rank communicator: the older run's start (where its progress
    would let the lock go) starts a thread that does exactly that, holding the lock as any
    secure call does, and joins it before the older run goes on. The progress thread may be
    the one that runs the older start; then the newer one is run by Start or by that thread,
    and both results must still be right (the CI of 956bdd5 caught an earlier form of this
    check, whose stand-in run left the older request idle while it let the lock go)."""
    from mpish.comm import handles, persistent

    alone = c.Split(c.rank)
    ones, older_out, mine_out = np.ones(2), np.zeros(2), np.zeros(2)
    older = alone.Allreduce_init(ones, older_out, MPI.SUM)
    mine = alone.Allreduce_init(ones * 3, mine_out, MPI.SUM)
    start_older = older._start

    def other_thread() -> None:
        with handles.LOCK:
            persistent.notice_starts()  # takes mine's start (if made) and runs it
            assert mine._advance(block=True)  # and completes it: its message received

    def older_start() -> Any:
        older._start = start_older  # once
        helper = threading.Thread(target=other_thread)
        depth, handles._DEPTH[0] = handles._DEPTH[0], 0  # the lock let go, as progress() does
        state = handles.LOCK._release_save()
        try:
            helper.start()
            helper.join()
        finally:
            handles.LOCK._acquire_restore(state)
            handles._DEPTH[0] = depth
        return start_older()

    older._start = older_start
    MPI.Prequest.Startall([older])  # queued first
    mine._sync = lambda: None  # (Start's own notice of older starts: left to notice_starts(until))
    mine.Start()
    del mine._sync
    mine.Wait()
    older.Wait()
    assert list(mine_out) == [3.0, 3.0] and list(older_out) == [1.0, 1.0], (mine_out, older_out)
    for request in (older, mine):
        request.Free()
    alone.Free()


def main() -> None:
    assert MPI.Query_thread() == MPI.THREAD_MULTIPLE
    assert MPI.COMM_WORLD.Get_size() % 2 == 0, "run with an even number of ranks"
    sys.setswitchinterval(1e-5)  # the interpreter switches threads often
    c = mpish.secure(MPI.COMM_WORLD)
    for check, name in (
        (check_blocking_ping_pongs_in_threads, "blocking_ping_pongs_in_threads"),
        (check_a_start_run_and_completed_by_another_thread_ends_its_own_start,
         "a_start_run_and_completed_by_another_thread_ends_its_own_start"),
        (check_nonblocking_and_object_messages_in_threads, "nonblocking_and_object_messages_in_threads"),
        (check_collectives_in_threads_each_on_its_duplicate, "collectives_in_threads_each_on_its_duplicate"),
        (check_persistent_collectives_in_threads_each_on_its_duplicate,
         "persistent_collectives_in_threads_each_on_its_duplicate"),
    ):
        check(c)
        c.Barrier()
        assert c.rejected == 0, f"{name}: {c.rejected} genuine records were rejected"
        if c.rank == 0:
            print(f"OK {name}", flush=True)
    c.Free()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print("ALL OK", flush=True)


if __name__ == "__main__":
    run(main)
