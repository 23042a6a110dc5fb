"""The Link conformance suite (trio's check_two_way_stream idea): every transport's link
must pass every check here. A :class:`Pair` is two connected ends built by a factory.

tests/unit/test_link_conformance.py runs it on the pipe links; tests/mpi runs it on
MpiLink (``python tests/linkcheck.py`` under mpiexec: a loopback pair on one rank).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mpish.transport.link import Link
from mpish.wire.errors import TransportBroken

LARGE = 1 << 20  # a record as large as the shell sends (1 MiB of output)
PATIENCE = 60.0  # seconds before a check gives up waiting for records (a hang guard: load is not a failure)


@dataclass
class Pair:
    """Two connected ends: ``a`` sends to ``b`` with dest ``to_b``; ``b`` sees source ``from_a``."""

    a: Link
    to_b: int
    b: Link
    to_a: int
    from_a: int
    from_b: int
    closes_visibly: bool = True  # the peer sees close() (pipes: EOF; MPI: the channel's close)
    lost: set[int] = field(default_factory=set)  # ranks a MultiLink end reported lost
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def receive(link: Link, count: int, *pumps: Link, ended: list[str] | None = None) -> list[tuple[int, bytes]]:
    """``count`` records from ``link``, waiting in its wait(); ``pumps`` are given a chance
    to write what they queued (a pipe's sender writes what the pipe takes, when called).
    A link that raises TransportBroken after its last record: the reason goes to ``ended``."""
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + PATIENCE
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records arrived"
        for pump in pumps:
            pump.flush(0.0)
        before = len(got)
        try:
            for source, record in link.drain():
                got.append((source, bytes(record)))
        except TransportBroken as exc:
            if ended is None or len(got) < count:
                raise
            ended.append(str(exc))
        if len(got) == before:
            link.wait(0.05)
    return got


def records(n: int, size: int = 100) -> list[bytes]:
    return [i.to_bytes(4, "big") + os.urandom(size) for i in range(n)]


def check_records_arrive_whole_in_order_with_their_source(pair: Pair) -> None:
    sent = records(200, 300)
    for start in range(0, 200, 7):
        pair.a.send_all(pair.to_b, sent[start : start + 7])
    assert receive(pair.b, 200, pair.a) == [(pair.from_a, r) for r in sent]


def check_both_directions_at_once(pair: Pair) -> None:
    if pair.a is pair.b:
        return  # a loopback (MPI on one rank) has one direction
    there, back = records(50, 1000), records(50, 10)
    for i in range(50):
        pair.a.send_all(pair.to_b, [there[i]])
        pair.b.send_all(pair.to_a, [back[i]])
    assert receive(pair.b, 50, pair.a) == [(pair.from_a, r) for r in there]
    assert receive(pair.a, 50, pair.b) == [(pair.from_b, r) for r in back]


def check_large_records_and_empty_ones(pair: Pair) -> None:
    sent = [os.urandom(LARGE), b"", os.urandom(LARGE - 1), b"x"]
    pair.a.send_all(pair.to_b, sent)
    assert receive(pair.b, 4, pair.a) == [(pair.from_a, r) for r in sent]


def check_wait_times_out_and_consumes_nothing(pair: Pair) -> None:
    started = time.monotonic()
    assert pair.b.wait(0.2) == ([], [])
    assert time.monotonic() - started < 5.0  # may return early (MPI: its backoff), never hang
    assert pair.b.poll() is None
    pair.a.send_all(pair.to_b, [b"after"])
    pair.a.flush(5.0)
    pair.b.wait(1.0)
    assert receive(pair.b, 1, pair.a) == [(pair.from_a, b"after")]


def check_wait_wakes_on_a_record(pair: Pair) -> None:
    pair.a.send_all(pair.to_b, [b"wake"])
    pair.a.flush(5.0)
    started = time.monotonic()
    pair.b.wait(30.0)
    assert time.monotonic() - started < 15.0, "wait slept through a record that had arrived"
    assert receive(pair.b, 1) == [(pair.from_a, b"wake")]


def check_wait_watches_the_callers_descriptors(pair: Pair) -> None:
    r, w = os.pipe()
    pair.cleanup += [lambda: os.close(r), lambda: os.close(w)]
    assert pair.b.wait(0.05, [r], [w]) == ([], [w])
    os.write(w, b"!")
    started = time.monotonic()
    assert pair.b.wait(30.0, [r]) == ([r], [])
    assert time.monotonic() - started < 15.0


def check_close_is_seen_by_the_peer_after_the_records_sent_before(pair: Pair) -> None:
    if not pair.closes_visibly:
        return
    sent = records(3, 10_000)  # what the transport takes at once (a pipe holds 64 KiB)
    pair.a.send_all(pair.to_b, sent)
    pair.a.close()
    ended: list[str] = []
    assert receive(pair.b, 3, ended=ended) == [(pair.from_a, r) for r in sent]
    deadline = time.monotonic() + PATIENCE
    while pair.from_a not in pair.lost and not ended:
        assert time.monotonic() < deadline, "the peer never saw the close"
        try:
            assert list(pair.b.drain()) == []
        except TransportBroken:
            break
        pair.b.wait(0.05)


CHECKS = [value for name, value in sorted(globals().items()) if name.startswith("check_")]


def mpi_loopback() -> Pair:
    """One MpiLink on a private duplicate of COMM_SELF, sending to itself."""
    from mpi4py import MPI

    from mpish.transport.mpi import MpiLink

    link = MpiLink(MPI.COMM_SELF.Dup())
    return Pair(link, 0, link, 0, 0, 0, closes_visibly=False)


def main() -> int:
    """Run every check on MpiLink (under mpiexec -n 1); one line per check."""
    failed = 0
    for check in CHECKS:
        try:
            check(mpi_loopback())
            print(f"ok {check.__name__}")
        except Exception as exc:  # report every check, then fail
            failed += 1
            print(f"FAILED {check.__name__}: {exc!r}")
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
