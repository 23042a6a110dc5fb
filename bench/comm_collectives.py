"""Small collectives, blocking and started: secure(comm) against raw, and what overlap buys.

Each collective (8 bytes: Allreduce, Bcast, Barrier; their started forms waited at once) is
timed on raw MPI and on the secure communicator in alternating rounds, per call in us. The
started forms are state machines (comm/nonblocking.py): a started collective costs more than
its blocking form when waited at once (a pending request, a probe per record). The overlap
row starts an Iallreduce, computes for four times its own time I (Iallreduce then Wait),
then waits: ``overlap_hidden`` is how much of I the computation hid (1: all of it, 0: none),
``(I + compute - overlapped) / I``, secure and raw. RESULT: each
ratio secure/raw, and both overlap figures. Run: ``python bench/comm_collectives.py
[--rounds R] [--ranks N]`` (it starts its own job with this venv's mpiexec).
"""

from __future__ import annotations

import json
import statistics
import time

from mpi_job import job, medians

CALLS = 500
KINDS = ("Allreduce", "Iallreduce", "Bcast", "Ibcast", "Barrier", "Ibarrier")


def rank_main(rounds: int) -> None:
    import numpy as np
    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    secure = mpish.secure(world)
    mine, total = np.ones(1), np.zeros(1)

    def call(comm: object, kind: str) -> None:
        c: object = comm
        if kind == "Allreduce":
            c.Allreduce(mine, total)  # type: ignore[attr-defined]
        elif kind == "Iallreduce":
            c.Iallreduce(mine, total).Wait()  # type: ignore[attr-defined]
        elif kind == "Bcast":
            c.Bcast(mine, 0)  # type: ignore[attr-defined]
        elif kind == "Ibcast":
            c.Ibcast(mine, 0).Wait()  # type: ignore[attr-defined]
        elif kind == "Barrier":
            c.Barrier()  # type: ignore[attr-defined]
        else:
            c.Ibarrier().Wait()  # type: ignore[attr-defined]

    def per_call(comm: object, kind: str) -> float:
        world.Barrier()
        start = time.perf_counter()
        for _ in range(CALLS):
            call(comm, kind)
        return float(world.allreduce((time.perf_counter() - start) / CALLS, op=MPI.MAX))

    def compute(seconds: float) -> None:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    def overlapped(comm: object, seconds: float) -> float:
        world.Barrier()
        start = time.perf_counter()
        for _ in range(CALLS // 5):
            request = comm.Iallreduce(mine, total)  # type: ignore[attr-defined]
            compute(seconds)
            request.Wait()
        return float(world.allreduce((time.perf_counter() - start) / (CALLS // 5), op=MPI.MAX))

    samples: dict[str, list[list[float]]] = {kind: [] for kind in (*KINDS, "overlap")}
    for _ in range(rounds):
        for kind in KINDS:
            samples[kind].append([per_call(world, kind), per_call(secure, kind)])
        pair = []
        for comm in (world, secure):
            alone = per_call(comm, "Iallreduce")
            pair.append((5 * alone - overlapped(comm, 4 * alone)) / alone)  # the share of I hidden
        samples["overlap"].append(pair)
    if world.Get_rank() == 0:
        print(json.dumps(samples), flush=True)


def main() -> None:
    ran = job(__doc__, __file__, rank_main, rounds=5)
    if ran is None:
        return
    rounds, ranks, samples = ran
    print(f"{ranks} ranks, {CALLS} calls of 8 bytes per round, {rounds} rounds (medians)")
    print(f"{'call':>12} {'raw us':>8} {'secure us':>10} {'ratio':>7}")
    ratios = {}
    for kind in KINDS:
        raw, sec, ratios[kind] = medians(samples[kind])
        print(f"{kind:>12} {raw:>8.1f} {sec:>10.1f} {ratios[kind]:>7.1f}")
    hidden_raw, hidden_secure = (statistics.median(p[i] for p in samples["overlap"]) for i in (0, 1))
    print(f"an Iallreduce overlapped with 4x as long a computation: raw hides {hidden_raw:.0%} of it, "
          f"secure {hidden_secure:.0%}")
    print("RESULT " + " ".join(f"{kind.lower()}_ratio={ratio:.1f}" for kind, ratio in ratios.items())
          + f" overlap_hidden_raw={hidden_raw:.2f} overlap_hidden_secure={hidden_secure:.2f}")


if __name__ == "__main__":
    main()
