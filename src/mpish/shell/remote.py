"""The remote end of ``mpish ssh``: the ShellServer over ssh's pipes, shipped by the console.

Theory of operation
-------------------
The console runs ``ssh HOST exec python3 -c STUB RANK SIZE`` and writes this module, with
every module it imports, on ssh's stdin (:mod:`mpish.transport.ship`); the stub reads
and runs it. So a host needs only Python 3.10+ and bash: no mpish, msgpack or
cryptography, and it always runs the console's own code, whether or not (and whichever)
mpish is installed there: the two sides' versions never skew.

Inside ssh the secure medium is ssh itself (THREAT-MODEL "Over SSH": OpenSSH
authenticates the user and encrypts, and the pipes of the session belong to that user).
So there is no second handshake and no cryptography here: the
:class:`~mpish.shell.server.ShellServer` speaks the shell protocol over the pipe link's
plain channel (:meth:`~mpish.transport.pipe.PipeLink.plain_channel`: one frame per
message, framing only), and starts with its Hello. Over MPI the same ShellServer runs a
SecureChannel (:mod:`mpish.shell.mpi_server`); a plain channel cannot exist there.

stdout must carry records only: the pipe ends are duplicated for the link, then fd 1
is pointed at stderr and fd 0 at /dev/null, so a stray print cannot corrupt the stream.
The server ends when the console closes its channel, or when the pipe ends (the
console or ssh died). A forked watcher (:func:`~mpish.shell.orphan.watch`) hangs up what its
shells left running if the server itself is killed. With ``--debug`` after RANK SIZE (the
console's ``--debug`` or ``MPISH_DEBUG``, which ssh does not pass on) its diagnostics go to
stderr, which the console shows line by line, each prefixed with the host's name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import NoReturn

from mpish import report
from mpish.transport.pipe import PIPE_SIZE, PipeLink
from mpish.wire.errors import MpishError, TransportBroken

from .server import ShellServer

USAGE = "mpish: not started by an mpish ssh console (expected: RANK SIZE [--debug], then records on stdin)"


def _rank_and_size(argv: list[str]) -> tuple[int, int] | None:
    if len(argv) != 2 or not all(word.isdigit() for word in argv):
        return None
    rank, size = int(argv[0]), int(argv[1])
    return (rank, size) if 0 < rank < size else None


def serve(read_fd: int, write_fd: int, rank: int, size: int) -> int:
    """Serve the console on these pipes; the exit status of this process."""
    link = PipeLink(read_fd, write_fd, rank=rank, size=size, peer=0, pipe_size=PIPE_SIZE)
    server = ShellServer(link, link.plain_channel(), console_alive=lambda: not link.broken,
                         tune_memory_now=False)  # ctypes and mallopt once bulk data flows
    try:
        server.hello()
        server.serve()
    except TransportBroken:
        return 1  # the console or ssh went away: nobody to report to
    return 0


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    if words[2:] == [report.DEBUG_FLAG]:  # diagnostics on stderr, which the console shows labelled
        words = words[:2]
        report.setup_logging(True)
    given = _rank_and_size(words)
    if given is None:
        print(USAGE, file=sys.stderr)
        return 2
    # A no-op handler, not SIG_IGN: the user's commands must keep the default SIGINT.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    read_fd, write_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray prints go to stderr, never into the record stream
    _watch_for_orphans(read_fd, write_fd)
    try:
        status = serve(read_fd, write_fd, *given)
    except MpishError as exc:
        report.say(str(exc))
        status = 1
    _exit_now(status)


def _watch_for_orphans(*pipes: int) -> None:
    """Fork the watcher that hangs up what this server's shells left running if the server is
    killed (``orphan.watch`` with no console: a SIGKILLed server, the OOM killer, left its bash
    and command running after ssh ended). Forked, not exec'd: the shipped code is not on the
    host's disk. The watcher holds none of ssh's pipes (ssh must end with the server) and has a
    session of its own; it ends when the server does."""
    server = os.getpid()
    if os.fork():
        return
    try:
        os.setsid()
        for fd in pipes:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        from .orphan import watch  # here, not in the server: its start loads only what it needs

        watch(0, server, 0.0)
    finally:
        os._exit(0)


def _exit_now(status: int) -> NoReturn:
    """End at once: serve() has closed bash, the state directory and the channel, so all
    Python's finalization would still do is free every loaded object one by one (~9 ms of
    CPU on each host at every session's end, while the console waits for ssh to exit)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
