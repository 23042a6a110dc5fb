"""The remote end of ``mpish ssh``: the unchanged ShellServer over ssh's pipes.

Theory of operation
-------------------
The console runs ``ssh HOST python3 -m mpish.shell.remote``. The first bytes on stdin
are a fixed-size bootstrap (:func:`pack_bootstrap`): a magic line, the session id, this
host's rank and the session size, the console's public key and a one-time X25519 static
key pair made by the console for this host. It travels inside ssh's authenticated,
encrypted pipe, so the remote host needs no mpish identity of its own. Then the two
ends run a Noise KK handshake bound to (session id, 0, rank, :data:`SERVICE`) over the
pipe and the :class:`~mpish.shell.server.ShellServer` serves the console, record by
record, exactly as over MPI: one code path, no plaintext mode.

stdout must carry records only: the pipe ends are duplicated for the link, then fd 1
is pointed at stderr and fd 0 at /dev/null, so a stray print cannot corrupt the stream.
The server ends when the console closes its channel, or when the pipe ends (the
console or ssh died).
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish.transport.pipe import PipeLink
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import MpishError, TransportBroken
from mpish.wire.events import HandshakeComplete

MAGIC = b"mpish-ssh-shell/1\n"
BOOTSTRAP = struct.Struct(f">{len(MAGIC)}s16sII32s32s")
SERVICE = "shell-ssh"
HANDSHAKE_TIMEOUT = 30.0


def pack_bootstrap(session_id: bytes, rank: int, size: int, console_public: bytes,
                   host_private: bytes) -> bytes:
    """What the console writes first to one host's ssh stdin."""
    return BOOTSTRAP.pack(MAGIC, session_id, rank, size, console_public, host_private)


def binding(session_id: bytes, rank: int) -> Binding:
    return Binding(session_id, 0, rank, SERVICE)


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    data = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            raise TransportBroken("no bootstrap from the console")
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise TransportBroken("the console closed the pipe before the bootstrap")
        data += chunk
    return bytes(data)


def _handshake(link: PipeLink, channel: SecureChannel, deadline: float) -> None:
    while time.monotonic() < deadline:
        item = link.poll()
        if item is None:
            link.wait_readable(min(1.0, max(0.0, deadline - time.monotonic())))
            continue
        events = channel.receive_record(item[1])
        link.send_all(0, channel.records_to_send())
        if any(isinstance(e, HandshakeComplete) for e in events):
            return
    raise TransportBroken("no handshake from the console in time")


def serve(read_fd: int, write_fd: int) -> int:
    """Bootstrap, handshake, serve; the exit status of this process."""
    from .server import ShellServer

    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    magic, session_id, rank, size, console_public, host_private = BOOTSTRAP.unpack(
        _read_exact(read_fd, BOOTSTRAP.size, deadline))
    if magic != MAGIC:
        print("mpish: not started by an mpish ssh console (bad bootstrap)", file=sys.stderr)
        return 2
    link = PipeLink(read_fd, write_fd, rank=rank, size=size, peer=0)
    channel = SecureChannel(
        role=Role.RESPONDER,
        binding=binding(session_id, rank),
        static_key=X25519PrivateKey.from_private_bytes(host_private),
        remote_static=console_public,
    )
    _handshake(link, channel, deadline)
    server = ShellServer(link, channel, console_alive=lambda: not link.broken)
    server.hello()
    try:
        server.serve()
    except TransportBroken:
        return 1  # the console or ssh went away: nobody to report to
    return 0


def main() -> int:
    # A no-op handler, not SIG_IGN: the user's commands must keep the default SIGINT.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    read_fd, write_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to stderr, never into the record stream
    try:
        return serve(read_fd, write_fd)
    except (MpishError, struct.error) as exc:
        print(f"mpish: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
