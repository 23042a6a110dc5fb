"""A shell server rank of an MPI session: admission, handshake, serve, finalize.

Started by the console's spawn (``python -m mpish.shell.mpi_server CONSOLE_PID HOST``,
embedded mode) or as a rank >= 1 under ``mpiexec``/``srun``. The console's side and the
theory of operation are in ``shell/mpi_session.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, NoReturn

from mpish import keys
from mpish.transport.mpi import MpiLink, mpi
from mpish.transport.procfs import alive as local_process_alive
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import MpishError
from mpish.wire.events import HandshakeComplete

from .admission import join_console
from .mpi_session import ORPHAN_GRACE, SERVER_WAIT, SERVICE, finish_session_comm, load_identity
from .orphan import end_session_launcher
from .session import Terminated, raise_terminated


def run_server(comm: Any, parent_intercomm: Any = None, console_pid: int = 0) -> int:
    """A shell server rank: key exchange, handshake, serve, finalize. Returns exit status."""
    from .server import ShellServer

    rank = comm.Get_rank()
    identity, problem = load_identity(sys.stderr, f"rank {rank}: ")
    if identity is None:
        print(f"mpish: rank {rank}: {problem}", file=sys.stderr)
    invitation = join_console(comm, identity)
    link = MpiLink(comm)
    status = 0
    if invitation.accepted and identity is not None:
        channel = SecureChannel(
            role=Role.RESPONDER,
            binding=Binding(invitation.session_id, 0, rank, SERVICE),
            static_key=identity.private,
            remote_static=invitation.console_pub,
        )
        server = ShellServer(link, channel)
        if console_pid:
            server.console_alive = lambda: local_process_alive(console_pid)
            _watch_console(console_pid, rank)
        if _server_handshake(link, channel):
            server.hello()
            try:
                server.serve()  # its end kills the running command and the shell
            except Terminated as exc:  # the launcher ends the job (Open MPI: console gone)
                os._exit(128 + exc.signum)
        else:
            status = 1
        if console_pid and not local_process_alive(console_pid):
            _end_orphaned_job(rank)
    elif invitation.admitted:
        print(f"mpish: rank {rank}: the console's key {keys.fingerprint(invitation.console_pub)} "
              "is not trusted here", file=sys.stderr)
    finish_session_comm(comm, link, parent_intercomm)
    return status


def _server_handshake(link: MpiLink, channel: SecureChannel) -> bool:
    deadline = time.monotonic() + SERVER_WAIT
    while time.monotonic() < deadline:
        item = link.poll()
        if item is None:
            link.wait(deadline - time.monotonic())
            continue
        source, record = item
        if source != 0:
            continue
        try:
            events = channel.receive_record(record)
        except MpishError as exc:
            print(f"mpish: rank {link.rank}: handshake failed: {exc}", file=sys.stderr)
            return False
        link.send_all(0, channel.records_to_send())
        if any(isinstance(e, HandshakeComplete) for e in events):
            return True
    return False


def _end_orphaned_job(rank: int) -> NoReturn:
    """The console died unannounced (SIGKILL): end this server and the launcher it left.

    MPI cannot finalize with a dead peer, and MPICH's singleton launcher never learns
    that the console is gone: its proxy and mpiexec would stay forever. They were
    started for this session alone (the singleton's mpiexec: ``-pmi_args``, its
    proxy: our parent), so the server kills them, then leaves without finalizing.
    """
    print(f"mpish: rank {rank}: the console is gone; ending the session and its launcher",
          file=sys.stderr)
    sys.stderr.flush()
    end_session_launcher(os.getpid())
    os._exit(1)


def _watch_console(console_pid: int, rank: int) -> None:
    """Start :mod:`mpish.shell.orphan`, which ends this server ORPHAN_GRACE s after the console died.

    The serve loop notices too and ends the command and the shell first; the watcher is
    a separate process because this one may be stuck in an MPI call that never returns
    once its peer is gone (MPICH over TCP spins in one, holding the interpreter, so not
    even a thread of ours would run). It calls no MPI and ends when this server ends.
    """
    del rank
    subprocess.Popen(
        [sys.executable, "-m", "mpish.shell.orphan", str(console_pid), str(os.getpid()), str(ORPHAN_GRACE)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True,
    )


def _ignore_sigint() -> None:
    """A server outlives a terminal's Ctrl-C (the console forwards it as an Interrupt).

    A no-op handler, not SIG_IGN: an ignored signal stays ignored across exec, and the
    user's commands must keep the default SIGINT so that an Interrupt can stop them.
    """
    signal.signal(signal.SIGINT, lambda signum, frame: None)


def server_main() -> int:
    """Entry point of a spawned server (``python -m mpish.shell.mpi_server``)."""
    _ignore_sigint()
    MPI = mpi()
    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        print("mpish.shell.mpi_server: not started by an mpish console", file=sys.stderr)
        return 2
    comm = parent.Merge(high=True)
    # hydra's notice that another rank failed must not kill this one (a handler, not
    # SIG_IGN, so that the user's commands start with the default disposition)
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, raise_terminated)
    console_pid = 0
    if len(sys.argv) >= 3 and sys.argv[1].isdigit() and sys.argv[2] == socket.gethostname():
        console_pid = int(sys.argv[1])
    return run_server(comm, parent, console_pid)


def world_server_main() -> int:
    """A rank >= 1 under mpiexec."""
    _ignore_sigint()
    MPI = mpi()
    return run_server(MPI.COMM_WORLD.Dup())


if __name__ == "__main__":
    sys.exit(server_main())
