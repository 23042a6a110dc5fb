"""Two SecureChannels wired back to back through memory (h11's ConnectionPair), for tests;
and the same pair across two OS pipes, as a console and a shell server see each other."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish.shell.console import Console
from mpish.shell.server import ShellServer
from mpish.shell.session import Peer, Session
from mpish.transport.pipe import PipeLink
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.events import Event
from mpish.wire.noise import generate_keypair, public_bytes
from mpish.wire.record import Limits

PATTERNS = ("KK", "IK", "XX")
SUITES = tuple(
    f"{cipher}_{hash_}"
    for cipher in ("AESGCM", "ChaChaPoly")
    for hash_ in ("SHA256", "SHA512", "BLAKE2s", "BLAKE2b")
)


@dataclass
class Pair:
    """An initiator and a responder, with the events each one has seen."""

    initiator: SecureChannel
    responder: SecureChannel
    initiator_key: X25519PrivateKey
    responder_key: X25519PrivateKey
    events: dict[str, list[Event]] = field(default_factory=lambda: {"initiator": [], "responder": []})

    def handshake(self) -> None:
        """Run the handshake to completion, delivering records one by one."""
        queue = list(self.initiator.initiate())
        receiver, sender = self.responder, self.initiator
        while queue:
            name = "responder" if receiver is self.responder else "initiator"
            for record in queue:
                self.events[name] += receiver.receive_record(record)
            queue = receiver.records_to_send()
            receiver, sender = sender, receiver

    def other(self, channel: SecureChannel) -> SecureChannel:
        return self.responder if channel is self.initiator else self.initiator


PairFactory = Callable[..., Pair]


@pytest.fixture
def make_pair() -> PairFactory:
    def factory(
        pattern: str = "KK",
        suite: str = "AESGCM_SHA256",
        *,
        session: bytes | None = None,
        responder_binding: Binding | None = None,
        limits: Limits | None = None,
        handshake: bool = True,
        **options: object,
    ) -> Pair:
        k_init, k_resp = generate_keypair(), generate_keypair()
        binding = Binding(session or os.urandom(16), 0, 1, "test")
        protocol = f"Noise_{pattern}_25519_{suite}"
        init = SecureChannel(
            role=Role.INITIATOR,
            binding=binding,
            static_key=k_init,
            remote_static=public_bytes(k_resp) if pattern in ("KK", "IK") else None,
            protocol=protocol,
            limits=limits,
            **options,  # type: ignore[arg-type]
        )
        resp = SecureChannel(
            role=Role.RESPONDER,
            binding=responder_binding or binding,
            static_key=k_resp,
            remote_static=public_bytes(k_init) if pattern == "KK" else None,
            protocol=protocol,
            limits=limits,
            **options,  # type: ignore[arg-type]
        )
        pair = Pair(init, resp, k_init, k_resp)
        if handshake:
            pair.handshake()
        return pair

    return factory


@dataclass
class PipePair:
    """A console (rank 0) and a shell server (rank 1) joined by two OS pipes, their channels
    already through the KK handshake."""

    console_link: PipeLink
    server_link: PipeLink
    console: SecureChannel
    server: SecureChannel


@contextlib.contextmanager
def pipe_pair() -> Iterator[PipePair]:
    """The handshake runs in memory; the pipes are closed when the block ends."""
    to_server, to_console = os.pipe(), os.pipe()
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    binding = Binding(os.urandom(16), 0, 1, "test")
    console = SecureChannel(role=Role.INITIATOR, binding=binding, static_key=a, remote_static=public_bytes(b))
    server = SecureChannel(role=Role.RESPONDER, binding=binding, static_key=b, remote_static=public_bytes(a))
    Pair(console, server, a, b).handshake()
    try:
        yield PipePair(
            PipeLink(to_console[0], to_server[1], rank=0, size=2, peer=1),
            PipeLink(to_server[0], to_console[1], rank=1, size=2, peer=0),
            console,
            server,
        )
    finally:
        for fd in (*to_server, *to_console):
            os.close(fd)


class PipeSession(Session):
    """A console's session over a pipe pair: nothing to end but the pipes, which pipe_pair closes."""

    def finish(self) -> None:
        pass


@contextlib.contextmanager
def served_console(plain: bool = False) -> Iterator[Console]:
    """A real Console and a real ShellServer (rank 1, "pipehost", in a thread) over pipe_pair();
    the server has ended when the block ends. ``plain``: the pipes' plain channels, as over ssh."""
    with pipe_pair() as pipes:
        channels = (pipes.console_link.plain_channel(), pipes.server_link.plain_channel()) if plain else (
            pipes.console, pipes.server)
        server = ShellServer(pipes.server_link, channels[1])
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        made = Console(PipeSession(pipes.console_link, {1: Peer(1, channels[0], "pipehost", ready=True)}))
        yield made
        made.close()
        thread.join(timeout=10)
        assert not thread.is_alive()
