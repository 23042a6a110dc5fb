"""MpiLink's record buffers (record_buffer, send_buffer), on a loopback link under mpiexec -n 1.

Run by test_mpi_record_pool.py; prints ``ok NAME`` per check.
"""

from __future__ import annotations

import sys
import time

from mpi4py import MPI

from mpish.transport.mpi import BUFFER_STEP, POOL_BYTES, MpiLink, buffer_size
from mpish.wire.noise import TAGLEN
from mpish.wire.record import HEADER_SIZE

LARGE = 900 * 1024  # a large record (MPI's rendezvous path: the send stays pending until received)
LARGE_BUFFER = buffer_size(HEADER_SIZE + LARGE + TAGLEN)
KEEP = POOL_BYTES // LARGE_BUFFER  # idle large buffers the pool keeps


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
        buffer = link.record_buffer(LARGE)
        assert len(buffer) == LARGE_BUFFER
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
    for i in range(3 * KEEP):  # one at a time: each comes back before the next is lent
        buffer = link.record_buffer(4)
        if all(buffer is not other for other in seen):
            seen.append(buffer)
        buffer[:4] = i.to_bytes(4, "big")
        link.send_buffer(0, buffer, 4)
        assert take(link, 1) == [i.to_bytes(4, "big")]
        assert link.flush(5.0)
    assert len(seen) == 1, f"{len(seen)} buffers for one record at a time"
    many = [link.record_buffer(LARGE) for _ in range(2 * KEEP)]
    for buffer in many:
        link.send_buffer(0, buffer, LARGE)
    take(link, len(many))
    assert link.flush(5.0)
    kept = []
    while True:  # the pool gives back what it kept, then fresh buffers
        buffer = link.record_buffer(LARGE)
        if all(buffer is not other for other in many):
            break
        kept.append(buffer)
    assert len(kept) == KEEP, f"{len(kept)} idle buffers kept ({KEEP} fit in {POOL_BYTES} bytes)"


def check_a_small_record_does_not_pin_a_large_buffer() -> None:
    """While MPI sends a 4-byte record, it holds one buffer step, not a large idle buffer;
    a large record reuses the large one."""
    link = loopback()
    large = link.record_buffer(LARGE)
    link.send_buffer(0, large, LARGE)
    take(link, 1)
    assert link.flush(5.0)
    small = link.record_buffer(4)
    assert small is not large and len(small) == BUFFER_STEP, len(small)
    assert link.record_buffer(LARGE - BUFFER_STEP) is large


CHECKS = [check_a_buffer_is_not_lent_again_while_its_send_is_pending,
          check_a_sent_buffer_is_reused_and_the_idle_ones_are_bounded,
          check_a_small_record_does_not_pin_a_large_buffer]


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
