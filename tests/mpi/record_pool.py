"""MpiLink's record buffers (record_buffer, send_buffer), on a loopback link under mpiexec -n 1.

Run by test_mpi_record_pool.py; prints ``ok NAME`` per check.
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI

from mpish.transport.mpi import POOL_KEEP, MpiLink
from mpish.wire.record import MAX_RECORD

LARGE = 900 * 1024  # a large record (MPI's rendezvous path: the send stays pending until received)


def loopback() -> MpiLink:
    return MpiLink(MPI.COMM_SELF.Dup())


def take(link: MpiLink, count: int) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records arrived"
        item = link.poll()
        if item is None:
            link.wait(0.01)
        else:
            got.append(bytes(item[1]))
    return got


def check_a_buffer_is_not_lent_again_while_its_send_is_pending() -> None:
    """Records sent from lent buffers and not yet received all arrive intact: no buffer was
    lent twice while MPI could still read it."""
    link = loopback()
    lent = []
    for i in range(12):
        buffer = link.record_buffer()
        assert len(buffer) == MAX_RECORD
        assert all(buffer is not other for other in lent), "a buffer was lent again before its send completed"
        lent.append(buffer)
        buffer[:LARGE] = bytes([i + 1]) * LARGE
        link.send_buffer(0, buffer, LARGE)
        link.send(0, b"small %d" % i)  # plain sends interleave, in order
    got = take(link, 24)
    for i in range(12):
        assert got[2 * i] == bytes([i + 1]) * LARGE, f"record {i} changed while in flight"
        assert got[2 * i + 1] == b"small %d" % i
    assert link.flush(5.0)


def check_a_sent_buffer_is_reused_and_the_idle_ones_are_bounded() -> None:
    link = loopback()
    seen: list[bytearray] = []
    for i in range(3 * POOL_KEEP):  # one at a time: each comes back before the next is lent
        buffer = link.record_buffer()
        if all(buffer is not other for other in seen):
            seen.append(buffer)
        buffer[:4] = i.to_bytes(4, "big")
        link.send_buffer(0, buffer, 4)
        assert take(link, 1) == [i.to_bytes(4, "big")]
        assert link.flush(5.0)
    assert len(seen) == 1, f"{len(seen)} buffers for one record at a time"
    many = [link.record_buffer() for _ in range(2 * POOL_KEEP)]
    for buffer in many:
        link.send_buffer(0, buffer, LARGE)
    take(link, len(many))
    assert link.flush(5.0)
    kept = []
    while True:  # the pool gives back what it kept, then fresh buffers
        buffer = link.record_buffer()
        if all(buffer is not other for other in many):
            break
        kept.append(buffer)
    assert len(kept) == POOL_KEEP, f"{len(kept)} idle buffers kept (at most {POOL_KEEP})"


CHECKS = [check_a_buffer_is_not_lent_again_while_its_send_is_pending,
          check_a_sent_buffer_is_reused_and_the_idle_ones_are_bounded]


def main() -> int:
    failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"ok {check.__name__}")
        except Exception as exc:
            failed += 1
            print(f"FAILED {check.__name__}: {exc!r}")
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
