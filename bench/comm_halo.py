"""A 1-D halo exchange's request patterns: secure(comm) against raw mpi4py, side by side.

Each iteration exchanges one double with each neighbour (``MPI.PROC_NULL`` at the ends), the
way real codes write it:

  waitall      Irecv, Irecv, Isend, Isend, then ``MPI.Request.Waitall`` (MPI completes the
               secure handles while a progress thread authenticates: comm/handles.py)
  startall     persistent requests: ``MPI.Prequest.Startall`` + ``MPI.Request.Waitall``
  wait_each    Irecv, Irecv, Isend, Isend, then ``Wait`` on each
  sendrecv     two ``Sendrecv`` calls

Rounds alternate raw and secure (ROUNDS times), so a change in the machine's load hits both;
the table gives each mode's median µs per iteration and the ratio secure/raw (median of the
per-round ratios). Run: ``python bench/comm_halo.py [--ranks N] [--rounds R]`` (not under
mpiexec: it starts its own job with this venv's mpiexec). MPISH_HOME must hold a key, else a
temporary one is made.
"""

from __future__ import annotations

import json
import time

from mpi_job import job, medians

ITERATIONS = 500
MODES = ("waitall", "startall", "wait_each", "sendrecv")


def rank_main(rounds: int) -> None:
    import numpy as np
    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    secure = mpish.secure(world)
    rank, size = world.Get_rank(), world.Get_size()
    left = rank - 1 if rank > 0 else MPI.PROC_NULL
    right = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    u = np.zeros(18)
    lo, hi, first, last = u[0:1], u[17:18], u[1:2], u[16:17]

    def run(comm: object, mode: str) -> float:
        c: object = comm
        persistent = []
        if mode == "startall":
            persistent = [c.Recv_init(lo, left, 1), c.Recv_init(hi, right, 2),  # type: ignore[attr-defined]
                          c.Send_init(last, right, 1), c.Send_init(first, left, 2)]  # type: ignore[attr-defined]
        world.Barrier()
        start = time.perf_counter()
        for _ in range(ITERATIONS):
            if mode == "startall":
                MPI.Prequest.Startall(persistent)
                MPI.Request.Waitall(persistent)
            elif mode == "sendrecv":
                c.Sendrecv(last, right, 1, lo, left, 1)  # type: ignore[attr-defined]
                c.Sendrecv(first, left, 2, hi, right, 2)  # type: ignore[attr-defined]
            else:
                requests = [c.Irecv(lo, left, 1), c.Irecv(hi, right, 2),  # type: ignore[attr-defined]
                            c.Isend(last, right, 1), c.Isend(first, left, 2)]  # type: ignore[attr-defined]
                if mode == "waitall":
                    MPI.Request.Waitall(requests)
                else:
                    for request in requests:
                        request.Wait()
        seconds = (time.perf_counter() - start) / ITERATIONS
        for request in persistent:
            request.Free()
        return float(world.allreduce(seconds, op=MPI.MAX))

    samples: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            samples[mode].append((run(world, mode), run(secure, mode)))
    if rank == 0:
        print(json.dumps(samples), flush=True)


def main() -> None:
    ran = job(__doc__, __file__, rank_main, rounds=5)
    if ran is None:
        return
    rounds, ranks, samples = ran
    print(f"{ranks} ranks, {ITERATIONS} iterations per round, {rounds} rounds")
    print(f"{'pattern':<10} {'raw us':>8} {'secure us':>10} {'ratio':>7}")
    ratios = {}
    for mode in MODES:
        raw, sec, ratios[mode] = medians(samples[mode])
        print(f"{mode:<10} {raw:>8.1f} {sec:>10.1f} {ratios[mode]:>7.1f}")
    print("RESULT " + " ".join(f"{mode}_ratio={ratio:.1f}" for mode, ratio in ratios.items()))


if __name__ == "__main__":
    main()
