"""Starting an MPI shell session, the console's side (the servers': ``shell/mpi_server.py``).

Theory of operation
-------------------
Two ways to start, one session protocol:

* ``mpiexec -n N mpish`` (or ``srun mpish``): rank 0 of COMM_WORLD is the console, the rest servers.
* ``mpish -n K`` (embedded, the default): the user's own process is the console and
  spawns K shell servers with ``MPI.COMM_SELF.Spawn``, then merges the intercommunicator
  (parent = rank 0). Spawn rather than re-running under mpiexec because the console must
  stay the user's process: it owns the terminal (line editing, Ctrl-C, job control),
  its stdin is not forwarded by an MPI launcher, and no launcher is needed at all.
  MPICH's singleton init runs ``mpiexec`` from PATH, so a wrapper that runs the MPI's
  ``mpiexec.gforker`` (the mpich wheel's, next to the Python executable; hydra's ``mpiexec``
  where there is none) is put first on PATH. gforker listens on no port; hydra listens on
  0.0.0.0 with no authentication, and hands the job's environment, and the right to have
  programs run as the user, to whoever connects first. The launcher is given the launch
  environment only. Each spawned server takes the console's environment from the console
  itself, over its secure channel, after its Hello and before its shell starts
  (``protocol.Environ``; ``shell/launch_env.py``).

Then, on the session communicator (a Dup, so nobody else's messages mix with ours):

1. Each server sends the console its 32-byte public key and host name (one message of
   fixed size, buffer API).
2. The console checks each key against its trusted set (own key + authorized_keys) and
   sends each server a fresh random 16-byte session id, its own public key and that
   server's admission flag. A refused rank is named with its key's fingerprint and
   never handshakes, so it can never receive a command.
3. Each admitted server checks the console's key against *its* trusted set and sends
   its verdict.
4. KK handshakes (console = initiator) bound to (session id, 0, rank, "shell").
5. At the end: every channel closed with an authenticated close record, then a
   non-blocking barrier polled with backoff (a dead peer cannot hang us forever), then
   Disconnect (spawned) and Finalize.

Steps 1-3 (shell/admission.py) are point-to-point, each bounded per server; so is step 4
here (:func:`mpish.shell.admission.handshake_timeout`, ``MPISH_HANDSHAKE_TIMEOUT``): a server
that has not completed its handshake and sent its Hello in time is left out and named
with its host and the key it claimed (THREAT-MODEL attack 10).

A server that dies: by default MPICH's launchers end every process of the job, the console
included (gforker: SIGINT, then SIGQUIT; hydra: SIGKILL), so nothing could be reported. In
embedded mode the launcher is therefore started through a wrapper, in its own session
(``setsid``: its signals never reach the user's shell or script in our process group);
gforker is told that the console's pid is 0 (it then signals only the servers, whose exit
relays ignore it: ``shell/exit_relay.py``); hydra gets ``-disable-auto-cleanup`` and tells
the others with SIGUSR1, which the console keeps blocked and reads as a notice
(:func:`failure_notice`); one *killed by a signal* made hydra SIGKILL every process
anyway, hence the exit relay there too. Open MPI's prte ends the whole job when a rank
dies, unless fault tolerance is on (ULFM; ``mpirun --with-ft ulfm``): the embedded console
turns it on (``shell/launch_env.py``), a wildcard receive then acknowledges a failure
(:class:`~mpish.transport.mpi.MpiLink`), and the end needs no MPI_Abort
(:func:`leave_failed_job`). The console also looks at its servers' pids (from their Hello)
on this host; it reports a dead one and goes on with the others. At the end MPI cannot
finalize with a dead rank, or without its launcher (MPICH's finalize then crashes), so the
console says so in one line and ends the job (:func:`end_embedded_job`, or MPI_Abort under
a launcher; exit status 1, bounded time). A server checks now and then that its console
(same host) is alive, and ends its session if not.
"""


from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, TextIO

from mpish import keys
from mpish.report import Diagnostics, Reporter
from mpish.transport.mpi import Backoff, MpiLink, discard, mpi, probed_size, proc_failed_classes
from mpish.transport.procfs import alive as local_process_alive
from mpish.transport.procfs import children, cmdline, parent, signal_if
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import MpishError, TransportBroken
from mpish.wire.text import escape

from . import protocol
from .admission import KEY_SIZE, admit_servers, handshake_timeout
from .greeting import await_hellos
from .launch_env import (
    LAUNCHER_PID_FILE,
    SPAWN_STEPS,
    abandon_start,
    environ_messages,
    loopback_only,
    owned_launcher,
    prepare_singleton,
    remove_wrapper,
)
from .open_mpi import (
    open_mpi_fault_tolerance,
    open_mpi_refused,
    private_prte_tmpdir,
    remove_prte_tmpdir,
)
from .orphan import await_launcher_settled, is_singleton_launcher
from .segments import (
    Segment,
    clear_own_names,
    drop_singleton_segments,
    mapped_segments,
    mpi_start_directory,
    remove_ours,
)
from .segments import remember_singleton_segments as note_own_segments
from .session import Peer, Session, end_on_termination

if TYPE_CHECKING:  # mpi4py is imported at run time by mpi() alone: it initialises MPI
    from mpi4py import MPI

SERVICE = "shell"
SERVER_WAIT = 60.0  # a server's wait for the console's handshake (the console is trusted)
FINAL_TIMEOUT = 20.0
ABORT_GRACE = 5  # seconds MPI_Abort may take before the console exits by itself
# how the console starts Python for its servers and they for their watchers: never with the
# working directory first on sys.path (python -m puts it there, so a msgpack.py planted in a
# shared directory the console was started from would run as the user on every rank)
SAFE_PATH = ("-P",) if sys.version_info >= (3, 11) else ("-I",)
ORPHAN_GRACE = 3.0  # seconds a server whose console died gives its own end before it is forced
SETTLE_TIMEOUT = 5.0  # the console's wait for its servers and their launcher to end (embedded)
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_FD", "PMIX_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")

log = Diagnostics(__name__)


class LaunchError(MpishError):
    """The session could not be set up (no server left, MPI failure at start)."""


class RankFailed(TransportBroken):
    """MPI reports a failed rank (ULFM, Open MPI with fault tolerance on): no normal end."""


@dataclass
class MpiSession(Session):
    """A session over MPI: the session communicator, and in embedded mode the spawn's."""

    # Session is not a dataclass (mpish ssh's console loads no dataclasses): its fields again
    link: MpiLink
    peers: dict[int, Peer]
    refused: dict[int, str] = field(default_factory=dict)  # rank -> reason
    comm: MPI.Intracomm | None = None
    parent_intercomm: MPI.Intercomm | None = None  # embedded mode: the spawn intercommunicator
    launcher_pid: int = 0  # embedded mode under MPICH: the singleton's mpiexec (0 = unknown)
    failures_seen: int = 0  # the link's process_failures already reported by failure_notice
    segments: list[Segment] = field(default_factory=list)  # embedded: MPICH's, mapped at the start

    def failure_notice(self) -> bool:
        """hydra's notice (SIGUSR1), or a process failure MPI reported on the link (ULFM)."""
        new = self.link.process_failures > self.failures_seen
        self.failures_seen = self.link.process_failures
        return failure_notice() or new

    def abort(self) -> None:
        assert self.comm is not None
        abort(self.comm)

    def give_up(self, rank: int) -> None:  # here: killed (a stopped one would outlive the job)
        if self.peers[rank].pid and self.peers[rank].host == socket.gethostname():
            signal_if(self.peers[rank].pid, is_server, signal.SIGKILL)

    def finish(self) -> None:
        assert self.comm is not None
        here = socket.gethostname()
        local = [peer.pid for peer in self.peers.values() if peer.pid and peer.host == here and not peer.lost]
        lost = sorted(rank for rank, peer in self.peers.items() if peer.lost)
        if self.launcher_pid and not local_process_alive(self.launcher_pid):  # MPICH's end would crash
            Reporter().say(f"the session's MPI launcher ({self.launcher_pid}) is gone: ending the job")
            end_embedded_job(0, local, self.segments)
        if lost:
            ranks = ", ".join(map(str, lost))
            were = ("rank {} was" if len(lost) == 1 else "ranks {} were").format(ranks)
            Reporter().say(f"{were} lost, so MPI cannot end the job normally; aborting it")
            if self.launcher_pid:  # never a lost server: its pid may have been reused by now
                end_embedded_job(self.launcher_pid, local, self.segments, max(1, self.exit_status))
            if failed_ranks(self.comm):  # -c's status (a lost rank's 255 with -S), at least 1
                leave_failed_job(max(1, self.exit_status))
            abort(self.comm, quiet=True, code=max(1, self.exit_status))
        relays = [parent(pid) for pid in local if cmdline(parent(pid)) == cmdline(pid)]  # shell/exit_relay.py
        local += relays
        finish_session_comm(self.comm, self.link, self.parent_intercomm)
        if self.parent_intercomm is not None:
            await_launcher_settled(local, self.launcher_pid, SETTLE_TIMEOUT)


def is_server(pid: int) -> bool:
    """A spawned server, or under mpiexec/srun a rank started as this console was (same argv)."""
    command, mine = cmdline(pid), cmdline(os.getpid())
    return b"mpish.shell.mpi_server" in b" ".join(command) or (under_launcher() and command == mine)


def end_embedded_job(launcher: int, servers: list[int], known: list[Segment], code: int = 1) -> NoReturn:
    """End a session MPI cannot finalize (a rank died): its launcher, then its servers, then us.

    MPI_Abort is no good here: with ``-disable-auto-cleanup`` the singleton's mpiexec and its
    proxy outlive it, and the survivors, left in the final barrier, were ended only by their
    orphan watchers, each saying so. Both launcher processes were started for this session
    alone (checked as :func:`mpish.shell.orphan.end_session_launcher` does); every channel is
    closed, so the servers' commands and shells have ended. The shared memory removed is what
    the session mapped at its start (``known``: a segment only the lost rank mapped is in no
    living process's maps) and what the living ones map now.
    """
    segments = [*known, *mapped_segments([os.getpid(), *servers])]  # no finalize will remove them
    if is_singleton_launcher(launcher):
        for pid in (*children(launcher), launcher):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for pid in servers:  # each only if still a server (a reused pid is spared)
        signal_if(pid, is_server, signal.SIGKILL)
    remove_ours(segments)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def leave_failed_job(code: int = 1) -> NoReturn:
    """End this process of a job MPI knows has a failed rank (ULFM, Open MPI), unfinalized.

    MPI_Abort is not needed there: the launcher keeps the job going through failures, so each
    process may leave by itself (the servers do once their channel is closed, :class:`RankFailed`);
    under ``mpirun`` the abort printed its MPI_ABORT banner around our own line.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def abort(comm: MPI.Comm, quiet: bool = False, code: int = 1) -> None:
    """MPI_Abort with exit status ``code``, failure notices (SIGUSR1) blocked so they cannot kill us first.

    Over TCP, MPICH's abort can hang once a peer is gone (holding the GIL): SIGALRM, left
    to its default action, ends the process after ABORT_GRACE seconds whatever MPI does
    (the servers' watchdogs then end theirs). ``quiet``: our own line said why, so the
    library's ("Abort(1) on node 0 ... application called MPI_Abort") goes to /dev/null. The
    job's shared memory is removed first: no finalize will (srun left MPICH's in /dev/shm).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    remove_ours(mapped_segments([os.getpid()]))
    sys.stderr.flush()
    if quiet:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(ABORT_GRACE)
    comm.Abort(code)


def failure_notice() -> bool:
    """True (once per notice) if mpiexec signalled a failed process (SIGUSR1, blocked)."""
    if signal.SIGUSR1 not in signal.sigpending():
        return False
    with contextlib.suppress(OSError):
        signal.sigtimedwait({signal.SIGUSR1}, 0)
    return True


def under_launcher() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _library() -> str:
    """The MPI library's name and version, e.g. "Open MPI v5.0.11" or "MPICH Version: 5.0.2"."""
    return " ".join(str(mpi().Get_library_version()).splitlines()[0].split(",")[0].split())


def load_identity(report: Reporter) -> tuple[keys.Identity | None, str]:
    """This user's identity, made on first use (and announced through ``report``)."""
    try:
        identity, created = keys.ensure_identity()
    except MpishError as exc:
        return None, str(exc)
    if created:
        home = keys.mpish_home()
        report.say(
            f"created identity key {home / keys.PRIVATE_KEY_NAME} ({identity.fingerprint}); "
            f"other ranks and hosts trust it through {home} (shared, or its public key in their "
            f"{keys.AUTHORIZED_KEYS_NAME})"
        )
    log.debug("identity %s from %s", identity.fingerprint, keys.mpish_home())
    return identity, ""


def start_console(np: int | None, err: TextIO | None = None) -> MpiSession:
    """Start the console side (embedded spawn or rank 0 under mpiexec) and all handshakes."""
    report = Reporter(err)
    timeout = handshake_timeout(report.stream)
    # before any server starts, so that ranks sharing this home find the key, not race to make one
    identity = load_identity(report)
    embedded = not under_launcher()
    if embedded and identity[0] is None:  # said once, before any server starts and says it again
        raise LaunchError(identity[1])
    config = None
    if embedded:
        planted = clear_own_names()  # before MPI_Init opens them (shell/segments.py)
        if planted:
            raise LaunchError(planted)
        open_mpi_fault_tolerance()
        loopback_only()
        config = prepare_singleton()  # after the variables set for the launch: it passes them on
        # before MPI starts any thread: hydra's failure notices stay pending, never kill us
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    with mpi_start_directory() if embedded else contextlib.nullcontext():
        MPI = mpi()
    parent_intercomm = None
    world = MPI.COMM_WORLD
    if world.Get_size() > 1:
        if np is not None:
            report.say(f"-n {np} ignored: running as rank 0 of {world.Get_size()}")
        log.debug("console: rank 0 of %d under a launcher", world.Get_size())
        comm = world.Dup()
    else:
        count = np if np is not None else max(1, min(os.cpu_count() or 1, 4))
        if count < 1:
            raise LaunchError("-n needs at least one shell server")
        if not embedded and np is None:  # `mpiexec -n 1 mpish`: no rank to serve, servers of its own
            report.say(f"one rank under the launcher is the console alone: starting {count} shell "
                       f"server{'' if count == 1 else 's'} of its own (-n N chooses how many; "
                       "mpiexec -n N+1 makes ranks 1..N the servers)")
        # the servers must not die of the terminal's Ctrl-C; they ignore SIGINT themselves
        console = [str(os.getpid()), socket.gethostname()]
        refused = open_mpi_refused(_library())
        if refused:
            note_own_segments()  # Open MPI's singleton leaves its own: removed, nothing spawned
            drop_singleton_segments()
            raise LaunchError(refused)
        private_prte_tmpdir(_library())
        note_own_segments()
        log.debug("console: spawning %d shell server(s) with %s", count, _library())
        server = [*SAFE_PATH, "-m", "mpish.shell.mpi_server", *console]
        try:  # Ctrl-C from here until the session is up ends it all, with one line
            with owned_launcher(config if _library().startswith("MPICH") else None,
                                " ".join([sys.executable, *server[:3]]), SPAWN_STEPS * timeout):
                try:
                    parent_intercomm = MPI.COMM_SELF.Spawn(sys.executable, server, maxprocs=count)
                finally:
                    remove_prte_tmpdir()
            comm = parent_intercomm.Merge(high=False)
        except MPI.Exception as exc:
            drop_singleton_segments()  # no server will come: the console's alone, Open MPI leaves it
            raise LaunchError(
                f"{_library()} could not spawn {count} shell server(s) ({exc.Get_error_string()}); "
                f"start them with its launcher instead: mpiexec -n {count + 1} mpish"
            ) from None
        except KeyboardInterrupt:
            abandon_start(config)
    launcher_pid = 0
    if config is not None:  # the singleton's mpiexec has started: PATH as it was
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]
        with contextlib.suppress(OSError, ValueError):
            launcher_pid = int((config / LAUNCHER_PID_FILE).read_text())
        remove_wrapper()  # or its watcher does, once the console is gone
    try:
        session = _console_handshakes(comm, parent_intercomm, report, identity, timeout)
    except KeyboardInterrupt:
        if parent_intercomm is None:  # under mpiexec: it forwards the Ctrl-C to every rank
            raise
        abandon_start(None, launcher_pid)
    session.launcher_pid = launcher_pid
    if parent_intercomm is not None:  # every server has spoken: Open MPI's name is of no more use
        for name in drop_singleton_segments():
            log.debug("removed %s, the console's own segment, which Open MPI leaves behind", name)
    if launcher_pid:  # what the session mapped, read while every server lives (end_embedded_job)
        here = socket.gethostname()
        session.segments = mapped_segments(
            [os.getpid(), *(peer.pid for peer in session.peers.values() if peer.pid and peer.host == here)])
    end_on_termination()
    return session


def _console_handshakes(
    comm: MPI.Intracomm,
    parent_intercomm: MPI.Intercomm | None,
    report: Reporter,
    loaded: tuple[keys.Identity | None, str],
    timeout: float,
) -> MpiSession:
    identity, problem = loaded
    admission = admit_servers(comm, identity, timeout)
    link = MpiLink(comm)
    if identity is None:  # the servers were told no: the problem is ours alone, said once
        finish_session_comm(comm, link, parent_intercomm)
        raise LaunchError(problem)
    for reason in admission.refused.values():
        report.say(reason)
    peers: dict[int, Peer] = {}
    for rank, pub in admission.server_keys.items():
        channel = SecureChannel(
            role=Role.INITIATOR,
            binding=Binding(admission.session_id, 0, rank, SERVICE),
            static_key=identity.private,
            remote_static=pub,
            drop_forged=True,
        )
        peers[rank] = Peer(rank, channel, admission.hosts[rank])
        link.send_all(rank, channel.initiate())
    session = MpiSession(link, peers, admission.refused, comm=comm,
                         parent_intercomm=parent_intercomm)
    _await_hellos(session, report, timeout)
    log.debug("console: %d server(s) ready", len(session.peers))
    return session


def records_until(
    link: MpiLink, deadline: float, wanted: Callable[[], object] = lambda: True
) -> Iterator[tuple[int, memoryview]]:
    """Each record that arrives before ``deadline`` (a ``time.monotonic()`` value) while
    ``wanted()`` is true, as (source, a view valid until the next); waits with ``link.wait``."""
    while wanted() and time.monotonic() < deadline:
        item = link.poll()
        if item is None:
            link.wait(deadline - time.monotonic())
            continue
        yield item


def _await_hellos(session: MpiSession, report: Reporter, timeout: float) -> None:
    """Complete every handshake and read every server's Hello, each within ``timeout`` s.

    Servers this console spawned are sent its environment then (their launcher was given
    the launch environment only: ``shell/launch_env.py``)."""
    deadline = time.monotonic() + timeout
    environ = [protocol.CODEC.encode(message) for message in environ_messages(os.environb)
               ] if session.parent_intercomm is not None else []

    def greeted(rank: int, hello: protocol.Hello) -> None:
        peer = session.peers[rank]
        peer.host, peer.cwd, peer.ready, peer.pid = escape(hello.host), hello.cwd, True, hello.pid
        for message in environ:
            session.link.send_all(rank, peer.channel.send(message))

    def failed(rank: int, why: str) -> None:
        peer = session.peers[rank]
        peer.alive = False
        if why:
            report.say(f"rank {rank} ({peer.host}): {why}; it is left out")
            return
        claimed = keys.fingerprint(peer.channel.remote_static or bytes(KEY_SIZE))
        reason = (f"rank {rank} ({peer.host}) did not complete its handshake within {timeout:g} s "
                  f"(it claimed the key {claimed}); it is left out")
        report.say(reason)
        session.refused[rank] = reason

    await_hellos(session, greeted, failed, lambda rank: deadline)
    session.peers = {rank: peer for rank, peer in session.peers.items() if peer.alive}


def finish_session_comm(comm: MPI.Intracomm, link: MpiLink, parent_intercomm: MPI.Intercomm | None) -> None:
    """Wait for every rank (non-blocking barrier with backoff), then disconnect and free."""
    MPI = mpi()
    link.flush(timeout=5.0)
    failed = failed_ranks(comm)
    if failed:  # the barrier would fail, and Open MPI print its own line about it
        ranks = ", ".join(map(str, failed))
        raise RankFailed(f"MPI reports rank {ranks} failed; the session cannot end normally")
    try:
        request = comm.Ibarrier()
        deadline = time.monotonic() + FINAL_TIMEOUT
        backoff = Backoff()
        while not request.Test():
            if time.monotonic() > deadline:
                Reporter().say("a rank did not reach the end of the session; aborting the MPI job")
                abort(comm)
            for _ in link.drain():  # records nobody reads any more: consume, never deliver
                pass
            backoff.wait()
        link.cancel_pending()
        _free_session_comm(comm)
        if parent_intercomm is not None:
            parent_intercomm.Disconnect()
    except MPI.Exception as exc:
        if exc.Get_error_class() in proc_failed_classes(MPI):  # a rank failed during the barrier
            raise RankFailed(f"MPI reports a failed rank while ending the session: {exc}") from exc
        raise TransportBroken(f"MPI failed while ending the session: {exc}") from exc


def failed_ranks(comm: MPI.Intracomm) -> list[int]:
    """The ranks of ``comm`` MPI knows to have failed (ULFM's MPIX_Comm_get_failed), [] if none
    or if this MPI does not say (without fault tolerance a failure ends the job anyway)."""
    MPI = mpi()
    try:
        group = comm.Get_failed()
        try:
            count = group.Get_size()
            if not count:
                return []
            ranks = MPI.Group.Translate_ranks(group, list(range(count)), comm.Get_group())
        finally:
            group.Free()
    except (MPI.Exception, NotImplementedError, AttributeError):
        return []
    return sorted(rank for rank in ranks if rank >= 0)


def _free_session_comm(comm: MPI.Intracomm) -> None:
    """Free the session communicator, first dropping what nobody will ever receive.

    MPICH refuses to free a communicator with unmatched messages, and any rank of the
    job (a rogue one) can send those on any tag: they are received and dropped
    (:func:`mpish.transport.mpi.discard`). One that lands after the drain only costs
    the freeing of this communicator, which is logged, not the end of the session.
    """
    MPI = mpi()
    status = MPI.Status()
    for _ in range(100_000):  # bounded: a flooding rank cannot keep us here
        message = comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
        if message is None:
            break
        discard(message, probed_size(status))
    try:
        comm.Free()
    except MPI.Exception as exc:
        log.debug("the session communicator was not freed: %s", exc)
