"""PipeLink / MultiLink: records framed on byte streams (wire/framing), lost peers."""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish.transport.pipe import MultiLink, PipeLink
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import TransportBroken
from mpish.wire.events import HandshakeComplete, Message
from mpish.wire.framing import encode_frame
from mpish.wire.noise import public_bytes


@pytest.fixture
def pipes() -> Iterator[list[int]]:
    fds: list[int] = []
    yield fds
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _pipe(fds: list[int]) -> tuple[int, int]:
    r, w = os.pipe()
    fds += [r, w]
    return r, w


def _channels(rank: int) -> tuple[SecureChannel, SecureChannel]:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    binding = Binding(bytes(16), 0, rank, "test")
    console = SecureChannel(role=Role.INITIATOR, binding=binding, static_key=a, remote_static=public_bytes(b))
    server = SecureChannel(role=Role.RESPONDER, binding=binding, static_key=b, remote_static=public_bytes(a))
    return console, server


def _pump(link: MultiLink | PipeLink) -> list[tuple[int, bytes | bytearray | memoryview]]:
    return list(link.drain())


def test_records_cross_a_pipe_pair_whatever_the_chunking(pipes: list[int]) -> None:
    (r1, w1), (r2, w2) = _pipe(pipes), _pipe(pipes)
    console_ch, server_ch = _channels(1)
    console = MultiLink({1: PipeLink(r2, w1, rank=0, size=2, peer=1)})
    server = PipeLink(r1, w2, rank=1, size=2, peer=0)
    console.send_all(1, console_ch.initiate())
    [(source, record)] = _pump(server)
    assert source == 0
    server_ch.receive_record(record)
    server.send_all(0, server_ch.records_to_send())
    [(source, record)] = _pump(console)
    assert source == 1 and any(isinstance(e, HandshakeComplete) for e in console_ch.receive_record(record))
    big = os.urandom(3 << 20)  # several records, each larger than one pipe read
    sent = console_ch.send(big, channel=1)
    got = bytearray()
    console.send_all(1, sent)  # more than the pipe holds: the rest goes out as it drains
    for _ in range(10_000):
        if len(got) == len(big):
            break
        console.progress()
        for _, data in _pump(server):
            for event in server_ch.receive_record(data):
                assert isinstance(event, Message)
                got += event.data
    assert bytes(got) == big


def test_an_oversize_length_breaks_the_peer_before_any_allocation(pipes: list[int]) -> None:
    r, w = _pipe(pipes)
    _, sink = _pipe(pipes)
    lost: list[tuple[int, str]] = []
    link = MultiLink({3: PipeLink(r, sink, rank=0, size=4, peer=3)},
                     on_lost=lambda rank, why: lost.append((rank, why)))
    os.write(w, struct.pack(">I", 2**32 - 1) + b"mpish")
    assert _pump(link) == []
    assert lost and lost[0][0] == 3 and "malformed" in lost[0][1]
    with pytest.raises(TransportBroken):
        link.send_all(3, [b"x"])


def test_a_closed_pipe_is_a_lost_peer_and_the_others_go_on(pipes: list[int]) -> None:
    (r1, w1), (r2, w2) = _pipe(pipes), _pipe(pipes)
    _, s1 = _pipe(pipes)
    _, s2 = _pipe(pipes)
    lost: list[int] = []
    links = {1: PipeLink(r1, s1, rank=0, size=3, peer=1), 2: PipeLink(r2, s2, rank=0, size=3, peer=2)}
    link = MultiLink(links, on_lost=lambda rank, why: lost.append(rank))
    console_ch, server_ch = _channels(2)
    os.close(w1)
    pipes.remove(w1)
    for record in console_ch.initiate():
        os.write(w2, encode_frame(record))
    items = _pump(link)
    assert lost == [1]
    assert [source for source, _ in items] == [2]
    server_ch.receive_record(items[0][1])
    assert _pump(link) == [] and lost == [1]  # reported once


def test_a_lone_pipe_link_raises_when_its_peer_is_gone(pipes: list[int]) -> None:
    r, w = _pipe(pipes)
    _, sink = _pipe(pipes)
    link = PipeLink(r, sink, rank=1, size=2, peer=0)
    os.write(w, struct.pack(">B", 1))  # a partial header, then the end
    os.close(w)
    pipes.remove(w)
    assert link.poll() is None
    with pytest.raises(TransportBroken):
        link.poll()
