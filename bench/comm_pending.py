"""A 1 KiB ping-pong beside N posted receives that never match: secure(comm) against raw.

A master with one Irecv per task, or an unstructured halo, keeps hundreds or thousands of
receives posted while it exchanges other messages. MPI's progress engine matches an
arriving message against them in C; mpish tests every posted receive from Python at every
spin of a blocking call, and a blocking receive is itself posted behind them (comm/posted.py:
so a forged record taken by one of them shifts no message). The table gives the median round
trip in us with 0, 100 and 1,000 posted receives, raw and secure (rounds alternate), and the
RESULT line each ratio secure/raw and how much 1,000 pending receives slow secure down
(``pending_cost_1000``: round trip with them / without). Run: ``python bench/comm_pending.py
[--rounds R]`` (it starts its own 2-rank job with this venv's mpiexec).
"""

from __future__ import annotations

import json
import time

from mpi_job import job, medians

ROUND_TRIPS = 300
PENDING = (0, 100, 1000)


def rank_main(rounds: int) -> None:
    import numpy as np
    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    secure = mpish.secure(world)
    peer = 1 - world.Get_rank()
    buf = np.zeros(128)

    def run(comm: object, pending: int) -> float:
        c: object = comm
        waiting = [c.Irecv(np.zeros(1), peer, 1000 + i) for i in range(pending)]  # type: ignore[attr-defined]
        world.Barrier()
        start = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            if world.Get_rank() == 0:
                c.Send(buf, 1, 1)  # type: ignore[attr-defined]
                c.Recv(buf, 1, 2)  # type: ignore[attr-defined]
            else:
                c.Recv(buf, 0, 1)  # type: ignore[attr-defined]
                c.Send(buf, 0, 2)  # type: ignore[attr-defined]
        seconds = (time.perf_counter() - start) / ROUND_TRIPS
        for request in waiting:
            request.Cancel()
            request.Wait()
        return float(world.allreduce(seconds, op=MPI.MAX))

    samples: dict[str, list[tuple[float, float]]] = {str(n): [] for n in PENDING}
    for _ in range(rounds):
        for n in PENDING:
            samples[str(n)].append((run(world, n), run(secure, n)))
    if world.Get_rank() == 0:
        print(json.dumps(samples), flush=True)


def main() -> None:
    ran = job(__doc__, __file__, rank_main, rounds=3, ranks=None)
    if ran is None:
        return
    rounds, _, samples = ran
    print(f"2 ranks, {ROUND_TRIPS} round trips of 1 KiB per round, {rounds} rounds")
    print(f"{'pending':>8} {'raw us':>8} {'secure us':>10} {'ratio':>7}")
    ratios, secure = {}, {}
    for n in PENDING:
        raw, secure[n], ratios[n] = medians(samples[str(n)])
        print(f"{n:>8} {raw:>8.1f} {secure[n]:>10.1f} {ratios[n]:>7.1f}")
    print("RESULT " + " ".join(f"ratio_{n}={ratio:.1f}" for n, ratio in ratios.items())
          + f" pending_cost_1000={secure[1000] / secure[0]:.1f}")


if __name__ == "__main__":
    main()
