"""What each new tag costs secure(comm): memory kept and time, against raw MPI.

secure(comm) kept a record channel (key, counter, replay state) per peer, tag and direction
for the communicator's life until 2026-12-07 (~2 KB each); since then every tag of a lane
shares one key and counter (wire/shared.py). MPI keeps nothing per tag. Rank 0 sends rank 1 one 8-byte
message on each of TAGS new tags, then as many on one tag, raw and then secure; each rank
measures its resident memory (RSS, /proc/self/statm) before and after the new tags. The
table gives bytes per tag on the sender and the receiver and the time per message; the
RESULT line the secure bytes per tag (raw's are in the same run, for the floor) and
``new_tag_cost``: a secure message on a new tag over one on a tag already used. Run:
``python bench/comm_tags.py [--rounds R]`` (R x 20,000 tags; its own 2-rank job).
"""

from __future__ import annotations

import gc
import json
import os
import time

from mpi_job import job

TAGS = 20_000


def rank_main(rounds: int) -> None:
    import array

    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    secure = mpish.secure(world)
    rank, tags = world.Get_rank(), rounds * TAGS
    buf = array.array("b", bytes(8))

    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def run(comm: object, first_tag: int, same: bool) -> float:
        c: object = comm
        world.Barrier()
        start = time.perf_counter()
        for i in range(tags):
            tag = first_tag if same else first_tag + i
            if rank == 0:
                c.Send(buf, 1, tag)  # type: ignore[attr-defined]
            else:
                c.Recv(buf, 0, tag)  # type: ignore[attr-defined]
        return (time.perf_counter() - start) / tags

    results = {}
    for name, comm in (("raw", world), ("secure", secure)):
        run(comm, 1 << 20, same=True)  # the lanes and the first channel exist before
        gc.collect()
        before = resident()
        new = run(comm, 0, same=False)
        gc.collect()
        grown = (resident() - before) / tags
        same = run(comm, 1 << 20, same=True)
        results[name] = world.gather((grown, new, same), root=0)
    if rank == 0:
        print(json.dumps({"tags": tags, **results}), flush=True)


def main() -> None:
    ran = job(__doc__, __file__, rank_main, rounds=1, ranks=None)
    if ran is None:
        return
    _, _, samples = ran
    print(f"2 ranks, {samples['tags']} new tags, then as many messages on one tag")
    print(f"{'':>7} {'sender B/tag':>13} {'receiver B/tag':>15} {'new tag us':>11} {'same tag us':>12}")
    for name in ("raw", "secure"):
        (sent, new, same), (received, _, _) = samples[name]
        print(f"{name:>7} {sent:>13.0f} {received:>15.0f} {new * 1e6:>11.1f} {same * 1e6:>12.1f}")
    (sent, new, same), (received, _, _) = samples["secure"]
    (raw_sent, _, _), (raw_received, _, _) = samples["raw"]
    print(f"RESULT secure_sender_bytes_per_tag={sent:.0f} secure_receiver_bytes_per_tag={received:.0f} "
          f"raw_bytes_per_tag={max(raw_sent, raw_received):.0f} new_tag_cost={new / same:.1f}")


if __name__ == "__main__":
    main()
