"""Every pipe link passes the Link conformance suite (tests/linkcheck.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest

from linkcheck import CHECKS, Pair
from mpish.transport.pipe import MultiLink, PipeLink


def _pipes() -> tuple[int, int, int, int]:
    down_r, down_w = os.pipe()
    up_r, up_w = os.pipe()
    return down_r, down_w, up_r, up_w


def two_pipe_links() -> Pair:
    """A server's PipeLink (rank 1) and a peer's PipeLink (rank 0)."""
    down_r, down_w, up_r, up_w = _pipes()
    console = PipeLink(up_r, down_w, rank=0, size=2, peer=1)
    server = PipeLink(down_r, up_w, rank=1, size=2, peer=0)
    return Pair(console, 1, server, 0, 0, 1, cleanup=[console.close, server.close])


def console_and_server() -> Pair:
    """The console's MultiLink (host 3 of several) and that host's PipeLink."""
    down_r, down_w, up_r, up_w = _pipes()
    pair = Pair(MultiLink({}), 3, PipeLink(down_r, up_w, rank=3, size=4, peer=0), 0, 0, 3)
    console = MultiLink({3: PipeLink(up_r, down_w, rank=0, size=4, peer=3)},
                        on_lost=lambda rank, why: pair.lost.add(rank))
    pair.a = console
    pair.cleanup = [console.close, pair.b.close]
    return pair


def server_and_console() -> Pair:
    """The same two, the other way round: the server closes, the console sees it lost."""
    forward = console_and_server()
    backward = Pair(forward.b, 0, forward.a, 3, 3, 0, cleanup=forward.cleanup)
    backward.lost = forward.lost
    return backward


FACTORIES = {"pipes": two_pipe_links, "console-server": console_and_server,
             "server-console": server_and_console}


@pytest.fixture(params=sorted(FACTORIES))
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    made = FACTORIES[request.param]()
    yield made
    for step in made.cleanup:
        with contextlib.suppress(OSError):
            step()


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__.removeprefix("check_") for c in CHECKS])
def test_pipe_links_conform(pair: Pair, check: Callable[[Pair], None]) -> None:
    check(pair)


def test_a_pipe_links_wait_wakes_when_a_record_arrives_during_it(pair: Pair) -> None:
    """An idle ssh server sleeps in wait(): the console's next record must wake it at once
    (the MPI link instead returns after its backoff, within 10 ms)."""
    import threading
    import time

    def later() -> None:
        time.sleep(0.3)
        pair.a.send_all(pair.to_b, [b"late"])
        pair.a.flush(5.0)

    sender = threading.Thread(target=later)
    sender.start()
    started = time.monotonic()
    pair.b.wait(60.0)
    sender.join()
    assert time.monotonic() - started < 30.0, "wait slept through a record that arrived"
    assert [(source, bytes(record)) for source, record in pair.b.drain()] == [(pair.from_a, b"late")]
