"""A shell server whose link lends record buffers (as MpiLink does) seals a command's output
straight into them: the bytes arrive exact, authenticated by the console's channel, and a
few buffers serve a whole stream. Real bash, real SecureChannel, pipes for the link."""

from __future__ import annotations

import hashlib
import threading
import time

from mpish.shell import protocol as p
from mpish.shell.conversation import Event, Local
from mpish.shell.receive import Output, receive
from mpish.shell.server import ShellServer
from mpish.transport.pipe import PipeLink
from wirepair import pipe_pair

SIZE = 3 << 20  # several windows' worth: credit has to come back for it to finish


class LendingPipeLink(PipeLink):
    """A pipe link that lends record buffers and sends them as MpiLink's send_buffer does."""

    def __init__(self, base: PipeLink) -> None:
        self.__dict__.update(base.__dict__)
        self.lent: list[bytearray] = []
        self.sent_from_buffers = 0

    def record_buffer(self, payload: int) -> bytearray:
        return self.lent.pop() if self.lent else bytearray(1 << 21)

    def send_buffer(self, dest: int, buffer: bytearray, size: int) -> None:
        self.send_all(dest, [bytes(buffer[:size])])  # a pipe copies; MPI would keep it until sent
        self.sent_from_buffers += 1
        self.lent.append(buffer)


def test_output_is_sealed_into_the_links_lent_buffers_and_arrives_exact() -> None:
    with pipe_pair() as pipes:
        link = LendingPipeLink(pipes.server_link)
        server = ShellServer(link, pipes.server)
        server.hello()
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        console, channel = pipes.console_link, pipes.console
        seen: list[tuple[Event, object]] = []
        output = hashlib.sha256()
        received = 0

        def deliver(rank: int, event: Event, payload: object) -> None:
            nonlocal received
            seen.append((event, None if isinstance(payload, Output) else payload))
            if isinstance(payload, Output):
                assert payload.stream == p.STDOUT
                output.update(payload.data)
                received += len(payload.data)
                console.send_all(1, channel.send(p.CODEC.encode(p.Credit(len(payload.data)))))

        def lost(rank: int, why: str) -> None:
            raise AssertionError(why)

        run = p.Run(1, f"yes 0123456789abcdef | head -c {SIZE}", 0, False)
        console.send_all(1, channel.send(p.CODEC.encode(run)))
        deadline = time.monotonic() + 60
        while not any(isinstance(m, p.Done) for _, m in seen):
            assert time.monotonic() < deadline, "the command did not finish"
            if not receive(console, lambda rank: channel, deliver, lost):
                console.wait(0.05)
        console.send_all(1, channel.close())
        while not any(e is Local.CLOSED for e, _ in seen):
            assert time.monotonic() < deadline, "the server did not close"
            if not receive(console, lambda rank: channel, deliver, lost):
                console.wait(0.05)
        thread.join(timeout=10)
    assert received == SIZE
    assert output.digest() == hashlib.sha256((b"0123456789abcdef\n" * SIZE)[:SIZE]).digest()
    assert link.sent_from_buffers >= SIZE // p.CHUNK
    assert len(link.lent) <= 2, f"{len(link.lent)} buffers for one stream sent in order"
