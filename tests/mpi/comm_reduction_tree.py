"""Run under mpiexec (-n 6 or 7: a tree of depth 3 that is not full; 7 ranks pair up 3 of
them before the recursive doubling of 4): reductions fold in log2 of the size steps
(reductions.py: Reduce up the binomial tree rooted at rank 0, Allreduce by recursive
doubling), not linearly at rank 0, and keep rank order: a non-commutative operation (2x2
matrix products) gives the product in rank order, as raw MPI gives it, in Reduce (to rank 0
and to another root), Allreduce, Iallreduce, Allreduce_init and Reduce_scatter_block. A wrong
argument on a rank deep in the tree, or on one of rank 0's children, fails the call on every
rank (Reduce: on its root) and leaves nothing queued for the next one.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

from mpish.comm import SecureComm
from mpish.comm.collectives import CollectiveAborted

PRIME = 1_000_003  # the products are taken modulo this, exact in int64


def ok(name: str) -> None:
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def matmul(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
    """inout = in x inout, for each 2x2 matrix of the buffers (MPI's order: in op inout)."""
    del datatype
    left = np.frombuffer(inbuf, dtype="i8").reshape(-1, 2, 2)
    right = np.frombuffer(inoutbuf, dtype="i8").reshape(-1, 2, 2)
    right[:] = (left @ right) % PRIME


def matrices(rank: int, count: int) -> np.ndarray:
    """``count`` matrices of ``rank``, none commuting with another rank's."""
    out = np.empty((count, 2, 2), dtype="i8")
    for k in range(count):
        out[k] = [[rank + 2 + k, 1], [1, (rank * 7 + k) % 5]]
    return out


def in_rank_order(size: int, count: int) -> np.ndarray:
    product = matrices(0, count)
    for rank in range(1, size):
        product = (product @ matrices(rank, count)) % PRIME
    return product


def check_a_non_commutative_operation_is_folded_in_rank_order_as_raw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    op = MPI.Op.Create(matmul, commute=False)
    n, r, count = c.size, c.rank, 3
    want = in_rank_order(n, count)
    mine = matrices(r, count)
    for comm in (raw, c):
        got = np.zeros_like(mine)
        comm.Allreduce(mine, got, op)
        assert np.array_equal(got, want), (type(comm).__name__, got, want)
        for root in (0, n - 2 if n > 1 else 0):
            got = np.zeros_like(mine)
            comm.Reduce(mine, got if r == root else None, op, root)
            assert r != root or np.array_equal(got, want), (type(comm).__name__, root, got)
        got = np.zeros_like(mine)
        comm.Iallreduce(mine, got, op).Wait()
        assert np.array_equal(got, want), (type(comm).__name__, got)
        got = np.zeros_like(mine)
        persistent = comm.Allreduce_init(mine, got, op)
        for _ in range(2):
            persistent.Start()
            persistent.Wait()
            assert np.array_equal(got, want), (type(comm).__name__, got)
        persistent.Free()
        blocks = np.concatenate([matrices(r, 1)] * n)  # one matrix per rank's block
        got = np.zeros((1, 2, 2), dtype="i8")
        comm.Reduce_scatter_block(blocks, got, op)
        assert np.array_equal(got, in_rank_order(n, 1)), (type(comm).__name__, got)
    op.Free()
    ok("a_non_commutative_operation_is_folded_in_rank_order_as_raw")


def check_a_wrong_argument_anywhere_in_the_tree_fails_every_rank_and_leaves_nothing_queued(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    del raw
    n, r = c.size, c.rank
    # the last rank (a leaf, deep), rank 1 (a leaf under rank 0), rank 2 (its own subtree: 3),
    # rank 4 (a subtree of its own at -n 6: 5), rank 0 (the top)
    for bad in sorted({n - 1, 1 % n, 2 % n, 4 % n, 0}):
        root = n - 1
        calls = {  # Allreduce's fail on every rank; Reduce's at least at its root
            "Allreduce": lambda bad=bad: c.Allreduce(np.ones(4), np.empty(3 if r == bad else 4), MPI.SUM),
            "Iallreduce": lambda bad=bad: c.Iallreduce(np.ones(2), np.empty(1 if r == bad else 2),
                                                       MPI.SUM).Wait(),
            "Reduce": lambda bad=bad, root=root: c.Reduce(np.ones(3 if r == bad else 4), np.empty(4),
                                                          MPI.SUM, root),
        }
        for name, call in calls.items():
            try:
                call()
            except CollectiveAborted as exc:  # (Reduce: a wrong block is the parent's to see, not its own)
                assert r != bad or name == "Reduce", (name, bad, exc)
                assert re.match(r"the collective failed on rank \d+\b", str(exc)), (name, bad, exc)
            except (ValueError, MPI.Exception) as exc:  # its own argument, or a block of the wrong size
                assert r == bad or name == "Reduce", (name, bad, r, exc)
            else:
                assert name == "Reduce" and (n == 1 or r != root), f"{name}: rank {r} succeeded"
            total = np.zeros(1)
            c.Allreduce(np.ones(1), total, MPI.SUM)  # in step: nothing of the failed call is left
            assert total[0] == n, (name, bad, total)
    ok("a_wrong_argument_anywhere_in_the_tree_fails_every_rank_and_leaves_nothing_queued")


CHECKS = [
    check_a_non_commutative_operation_is_folded_in_rank_order_as_raw,
    check_a_wrong_argument_anywhere_in_the_tree_fails_every_rank_and_leaves_nothing_queued,
]

if __name__ == "__main__":
    run_checks(CHECKS)
