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
from typing import TYPE_CHECKING, NoReturn

from mpish import keys
from mpish.report import Diagnostics, Reporter, setup_logging
from mpish.transport.mpi import MpiLink, mpi
from mpish.transport.procfs import alive as local_process_alive
from mpish.transport.procfs import children, cmdline, environ, parent
from mpish.transport.shm import memory_problem
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import MpishError, RemoteProtocolError
from mpish.wire.events import CloseReceived, HandshakeComplete, Message

from . import protocol as p
from .admission import join_console
from .exit_relay import relay_exit, under_hydra
from .launch_env import adopt_console_environ, forget_launch_variables
from .mpi_session import (
    ORPHAN_GRACE,
    SAFE_PATH,
    SERVER_WAIT,
    SERVICE,
    RankFailed,
    finish_session_comm,
    load_identity,
    records_until,
)
from .orphan import end_session_launcher
from .segments import mapped_segments, remove_ours
from .session import Terminated, raise_terminated

if TYPE_CHECKING:  # mpi4py is imported at run time by mpi() alone: it initialises MPI
    from mpi4py import MPI

log = Diagnostics("mpish.shell.mpi_server")  # not __name__: run as __main__ too


def run_server(
    comm: MPI.Intracomm, parent_intercomm: MPI.Intercomm | None = None, console_pid: int = 0
) -> int:
    """A shell server rank: key exchange, handshake, serve, finalize. Returns exit status.

    A spawned server (``parent_intercomm``) sends its Hello, then takes the console's
    environment (:class:`~mpish.shell.protocol.Environ`) before its shell starts: its
    launcher was given the launch environment only (``shell/launch_env.py``)."""
    from .server import ShellServer
    from .server.loop import hello_message

    rank = comm.Get_rank()
    report = Reporter(who=f"rank {rank}: ")
    identity, problem = load_identity(report)
    if identity is None and not _said_by_console(console_pid or _local_console()):
        report.say(problem)
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
        spawned = parent_intercomm is not None
        ready = _server_handshake(link, channel, report)
        if ready and spawned:
            link.send_all(0, channel.send(p.CODEC.encode(hello_message(os.getcwd()))))
            ready = _adopt_console_environ(link, channel, report)
        if ready:
            server = ShellServer(link, channel, console_alive=(lambda: local_process_alive(console_pid))
                                 if console_pid else (lambda: True))
            log.debug("rank %d: handshake complete; serving", rank)
            if not spawned:
                server.hello()
            try:
                server.serve()  # its end kills the running command and the shell
            except Terminated as exc:  # the launcher ends the job (Open MPI: console gone; scancel)
                # no rank will finalize: MPICH's shared memory names stayed in /dev/shm for good
                remove_ours(mapped_segments([os.getpid()]))
                os._exit(128 + exc.signum)
        else:
            status = 1
        if console_pid and not local_process_alive(console_pid):
            _end_orphaned_job(rank)
    elif invitation.admitted:
        report.say(f"the console's key {keys.fingerprint(invitation.console_pub)} is not trusted here")
    try:
        finish_session_comm(comm, link, parent_intercomm)
    except RankFailed as exc:  # Open MPI with fault tolerance: the console says it and aborts
        log.debug("rank %d: %s; leaving without finalizing", rank, exc)
        os._exit(1)
    return status


def _server_handshake(link: MpiLink, channel: SecureChannel, report: Reporter) -> bool:
    for source, record in records_until(link, time.monotonic() + SERVER_WAIT):
        if source != 0:
            continue
        try:
            events = channel.receive_record(record)
        except MpishError as exc:
            report.say(f"handshake failed: {exc}")
            return False
        link.send_all(0, channel.records_to_send())
        if any(isinstance(e, HandshakeComplete) for e in events):
            return True
    log.debug("rank %d: no handshake from the console within %g s", link.rank, SERVER_WAIT)
    return False


def _adopt_console_environ(link: MpiLink, channel: SecureChannel, report: Reporter) -> bool:
    """Read the console's Environ messages (the first after the Hello) and take that
    environment; False if it did not come whole within SERVER_WAIT (or the console ended)."""
    data = bytearray()
    for source, record in records_until(link, time.monotonic() + SERVER_WAIT):
        if source != 0:
            continue
        try:
            events = channel.receive_record(record)
            for event in events:
                if isinstance(event, CloseReceived):
                    return False
                if not isinstance(event, Message) or event.channel != p.CONTROL:
                    raise RemoteProtocolError("the console sent something before its environment")
                message = p.CODEC.decode(event.data)
                if not isinstance(message, p.Environ):
                    raise RemoteProtocolError(f"the console sent {type(message).__name__} "
                                              f"before its environment")
                data += message.data
                if len(data) > p.ENVIRON_MAX:
                    raise RemoteProtocolError(f"the console's environment exceeds {p.ENVIRON_MAX} bytes")
                if message.last:
                    adopt_console_environ(bytes(data))
                    return True
        except MpishError as exc:
            report.say(f"no environment from the console: {exc}")
            return False
    log.debug("rank %d: no environment from the console within %g s", link.rank, SERVER_WAIT)
    return False


def _end_orphaned_job(rank: int) -> NoReturn:
    """The console died unannounced (SIGKILL): end this server and the launcher it left.

    MPI cannot finalize with a dead peer, and MPICH's singleton launcher never learns
    that the console is gone: its proxy and mpiexec would stay forever. They were
    started for this session alone (the singleton's mpiexec: ``-pmi_args``, its
    proxy: our parent), so the server kills them, then leaves without finalizing.
    """
    Reporter(who=f"rank {rank}: ").say("the console is gone; ending the session and its launcher")
    end_session_launcher(os.getpid())
    os._exit(1)


def _watch_console(console_pid: int) -> None:
    """Start :mod:`mpish.shell.orphan`, which ends this server ORPHAN_GRACE s after the console
    died (console 0: none to watch), and hangs up its shells if it is killed.

    The serve loop notices too and ends the command and the shell first; the watcher is
    a separate process because this one may be stuck in an MPI call that never returns
    once its peer is gone (MPICH over TCP spins in one, holding the interpreter, so not
    even a thread of ours would run). It calls no MPI and ends when this server ends.
    """
    subprocess.Popen(
        [sys.executable, *SAFE_PATH, "-m", "mpish.shell.orphan",
         str(console_pid), str(os.getpid()), str(ORPHAN_GRACE)],
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
    setup_logging()  # MPISH_DEBUG, inherited from the console
    _ignore_sigint()
    if under_hydra():  # hydra SIGKILLs every server when one is killed by a signal
        relay_exit()
    console_pid = 0
    if len(sys.argv) >= 3 and sys.argv[1].isdigit() and sys.argv[2] == socket.gethostname():
        console_pid = int(sys.argv[1])
        # before any MPI call: a console interrupted while this server starts (MPI_Init,
        # Merge, admission) leaves it waiting in MPI for good, and its launcher with it
        _watch_console(console_pid)
    MPI = mpi()
    problem = memory_problem(f"the shell server on {socket.gethostname()}")
    if problem:  # MPI's state is another user's to write: serve nothing (the console reports it)
        Reporter(prog="mpish").say(problem)
        return 1
    forget_launch_variables()
    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        Reporter(prog="mpish.shell.mpi_server").say("not started by an mpish console")
        return 2
    comm = parent.Merge(high=True)
    # hydra's notice that another rank failed must not kill this one (a handler, not
    # SIG_IGN, so that the user's commands start with the default disposition)
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, raise_terminated)
    return run_server(comm, parent, console_pid)


def _said_by_console(console: int) -> bool:
    """The console runs on this host with the same mpish directory (MPISH_HOME and HOME alike):
    it says what is wrong with the key itself (under srun -n 3 a corrupt key was said 3 times)."""
    def homes(pid: int) -> list[bytes]:
        return sorted(word for word in environ(pid) if word.startswith((b"MPISH_HOME=", b"HOME=")))

    ours = homes(os.getpid())
    return bool(console and ours) and ours == homes(console)


def _local_console() -> int:
    """The console's pid if it runs on this host, else 0: rank 0 among the processes the same
    launcher process started (srun's slurmstepd, hydra's proxy; under hydra this server is the
    fork of its exit relay, shell/exit_relay.py)."""
    starter = parent(os.getpid())
    if cmdline(starter) == cmdline(os.getpid()):  # the exit relay
        starter = parent(starter)
    if starter <= 1:
        return 0
    rank_0 = (b"SLURM_PROCID=0", b"PMI_RANK=0", b"OMPI_COMM_WORLD_RANK=0")
    for pid in children(starter):
        if pid != os.getpid() and any(word in rank_0 for word in environ(pid)):
            return pid
    return 0


def watch_local_console() -> None:
    """Before MPI starts in a server rank under a launcher: watch the console if it runs on this
    host. Killed (kill -9, the OOM killer, a Ctrl-C while ``srun --pty`` starts), it left the
    servers and their commands running until the step's time limit under srun; elsewhere there
    is none to watch (the shells are still hung up if this server is killed). Where srun says
    task 0 runs on this node (SLURM_GTIDS) and it is not there (looked for up to 5 s: it may not
    have started yet), it died first: this server ends at once (MPI's start would wait for it
    for good)."""
    local = "0" in os.environ.get("SLURM_GTIDS", "").split(",")
    console = _local_console()
    for _ in range(50 if local and not console else 0):
        time.sleep(0.1)
        console = _local_console()
        if console:
            break
    if local and not console:
        os._exit(1)
    _watch_console(console)


def world_server_main() -> int:
    """A rank >= 1 under mpiexec or srun (its console watched already: :func:`watch_local_console`)."""
    _ignore_sigint()
    # scancel, a job's time limit, mpiexec's own SIGTERM: the shell, its command, a transfer's
    # part files and the state directory are ended and removed first (they were left behind)
    signal.signal(signal.SIGTERM, raise_terminated)
    MPI = mpi()
    return run_server(MPI.COMM_WORLD.Dup())


if __name__ == "__main__":
    sys.exit(server_main())
