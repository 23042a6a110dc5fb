"""Starting an MPI shell session: roles, spawn, key check, KK handshakes, clean finalize.

Theory of operation
-------------------
Two ways to start, one session protocol:

* ``mpiexec -n N mpish`` (or ``srun mpish``): rank 0 of COMM_WORLD is the console, ranks
  1..N-1 are shell servers.
* ``mpish -n K`` (embedded, the default): the user's own process is the console and
  spawns K shell servers with ``MPI.COMM_SELF.Spawn``, then merges the intercommunicator
  (parent = rank 0). Spawn rather than re-running under mpiexec because the console must
  stay the user's process: it owns the terminal (line editing, Ctrl-C, job control),
  its stdin is not forwarded by an MPI launcher, and no launcher is needed at all.
  MPICH's singleton init runs ``mpiexec`` from PATH, so the mpiexec of the MPI that
  mpi4py uses (the mpich wheel's, next to the Python executable) is put first on PATH.

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

Steps 1-3 are point-to-point, not Gather/Bcast: in a collective's tree a rank relays
other ranks' data, and one that sends a wrong size makes the root's call fail for
everyone. Here each rank speaks only for itself: a message of the wrong size is refused
before allocation and names its sender, and the console waits for each server at
each step (key, verdict, handshake and Hello) at most :func:`handshake_timeout`
seconds (``MPISH_HANDSHAKE_TIMEOUT``), then goes on without it and says which rank
stalled (THREAT-MODEL attack 10: a rank that claims the user's key and stays silent
costs the start those seconds, not a hang). Every rank has already entered the
collective Dup (or Merge) by then, so a genuine server answers within milliseconds.
Until a handshake completes nothing a rank sent is trusted: its host name only ever
appears escaped (:func:`mpish.wire.text.escape`).

A server that dies: by default MPICH's launcher (hydra) kills every process of the job,
the console included, with SIGKILL, so nothing could be reported. In embedded mode the
singleton's mpiexec is therefore started through a wrapper, in its own session
(``setsid``, so that hydra's signals never reach the user's shell or script in our
process group) and with ``-disable-auto-cleanup`` (through ``HYDRA_CONFIG_FILE``,
unless the user set one); hydra then tells the other processes with SIGUSR1, which
the console keeps blocked (so it cannot kill it) and reads as a notice
(:func:`failure_notice`). The console also looks at its servers' pids (from
their Hello) on this host; it reports a dead one and goes on with the others. At the
end MPI cannot finalize with a dead rank, so the console says so and aborts the job
(non-zero exit, bounded time). A server checks now and then that its console (same
host) is alive, and ends its session if not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpish import keys
from mpish.transport.link import Link
from mpish.transport.mpi import Backoff, MpiLink, mpi
from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import MpishError, TransportBroken
from mpish.wire.events import HandshakeComplete, Message
from mpish.wire.text import escape

from .shell import protocol as p

KEY_SIZE = 32
HOST_SIZE = 64
SERVICE = "shell"
ENTRY_SIZE = KEY_SIZE + HOST_SIZE  # step 1: public key, host name (NUL-padded)
ANNOUNCE_SIZE = 16 + KEY_SIZE + 1  # step 2: session id, console key, admitted flag
KEY_TAG, ANNOUNCE_TAG, VERDICT_TAG = 0x4B59, 0x414E, 0x5644  # "KY" "AN" "VD": steps 1-3
HANDSHAKE_TIMEOUT = 5.0  # default of handshake_timeout()
SERVER_WAIT = 60.0  # a server's wait for the console's handshake (the console is trusted)
FINAL_TIMEOUT = 20.0
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_FD", "PMIX_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


class LaunchError(MpishError):
    """The session could not be set up (no server left, MPI failure at start)."""


@dataclass
class Peer:
    """A shell server as the console sees it."""

    rank: int
    channel: SecureChannel
    host: str
    cwd: str = ""
    alive: bool = True
    ready: bool = False
    pid: int = 0  # from its Hello
    lost: str = ""  # why it was lost during the session ("" = not lost)


@dataclass
class Session:
    """The console's side of a started session."""

    comm: Any
    link: Link  # MpiLink here; a pipe link for ssh sessions (shell/ssh_session.py)
    identity: keys.Identity
    session_id: bytes
    peers: dict[int, Peer]
    refused: dict[int, str] = field(default_factory=dict)  # rank -> reason
    parent_intercomm: Any = None  # embedded mode: the spawn intercommunicator

    def finish(self) -> None:
        lost = {rank: peer.lost for rank, peer in self.peers.items() if peer.lost}
        if lost:
            ranks = ", ".join(str(rank) for rank in sorted(lost))
            print(f"mpish: rank {ranks} was lost, so MPI cannot end the job normally; aborting it",
                  file=sys.stderr)
            sys.stderr.flush()
            abort(self.comm)
        assert isinstance(self.link, MpiLink)
        _finish(self.comm, self.link, self.parent_intercomm)


def abort(comm: Any) -> None:
    """MPI_Abort with exit status 1, failure notices (SIGUSR1) blocked so they cannot kill us first."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    comm.Abort(1)


def failure_notice() -> bool:
    """True (once per notice) if mpiexec signalled a failed process (SIGUSR1, blocked)."""
    if signal.SIGUSR1 not in signal.sigpending():
        return False
    with contextlib.suppress(OSError):
        signal.sigtimedwait({signal.SIGUSR1}, 0)
    return True


def local_process_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (only meaningful on this host)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def under_launcher() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _prepare_singleton() -> Path | None:
    """Make MPICH's singleton init (which runs ``mpiexec`` from PATH) run the wheel's.

    The mpiexec it starts is wrapped in ``setsid`` and asked for
    ``-disable-auto-cleanup`` (see the module doc): in our process group, hydra would
    signal the user's shell or script too (SIGKILL when a server dies; SIGUSR1 at every
    end of a session without auto-cleanup). Returns the temporary directory of the
    wrapper and config file, removed once the servers run (None if not made).
    """
    bindir = Path(sys.executable).parent
    real = bindir / "mpiexec"
    path = os.environ.get("PATH", "")
    if real.exists() and path.split(os.pathsep)[0] != str(bindir):
        path = str(bindir) + os.pathsep + path
    os.environ["PATH"] = path
    setsid = shutil.which("setsid")
    if not real.exists() or setsid is None or "HYDRA_CONFIG_FILE" in os.environ:
        return None
    import tempfile

    wrapper = Path(tempfile.mkdtemp(prefix="mpish-mpiexec-"))
    (wrapper / "hydra.conf").write_text("-disable-auto-cleanup\n")
    script = wrapper / "mpiexec"
    script.write_text(
        "#!/bin/sh\n"
        f"PATH={shlex.quote(path)}; export PATH\n"
        f"HYDRA_CONFIG_FILE={shlex.quote(str(wrapper / 'hydra.conf'))}; export HYDRA_CONFIG_FILE\n"
        f'exec {shlex.quote(setsid)} {shlex.quote(str(real))} "$@"\n'
    )
    script.chmod(0o700)
    os.environ["PATH"] = str(wrapper) + os.pathsep + path
    return wrapper


def _load_identity(err: Any = None, who: str = "") -> tuple[keys.Identity | None, str]:
    """This user's identity, made on first use; a new key is announced on ``err``."""
    try:
        identity, created = keys.ensure_identity()
    except MpishError as exc:
        return None, str(exc)
    if created and err is not None:
        home = keys.mpish_home()
        print(
            f"mpish: {who}created identity key {home / keys.PRIVATE_KEY_NAME} ({identity.fingerprint}); "
            f"other ranks and hosts trust it through {home} (shared, or its public key in their "
            f"{keys.AUTHORIZED_KEYS_NAME})",
            file=err,
        )
        with contextlib.suppress(AttributeError, OSError):
            err.flush()
    return identity, ""


def _host_bytes() -> bytes:
    return socket.gethostname().encode()[:HOST_SIZE].ljust(HOST_SIZE, b"\0")


def handshake_timeout(err: Any = None) -> float:
    """Seconds the console waits for each server at each step of the start.

    ``MPISH_HANDSHAKE_TIMEOUT`` overrides the default (:data:`HANDSHAKE_TIMEOUT`); a
    value that is not a positive number is reported on ``err`` and the default used.
    """
    text = os.environ.get("MPISH_HANDSHAKE_TIMEOUT", "").strip()
    if not text:
        return HANDSHAKE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        print(f"mpish: MPISH_HANDSHAKE_TIMEOUT={escape(text)} is not a number of seconds > 0; "
              f"using {HANDSHAKE_TIMEOUT:g}", file=err or sys.stderr)
        return HANDSHAKE_TIMEOUT
    return value


def _receive_each(
    comm: Any, tag: int, size: int, ranks: set[int], timeout: float
) -> tuple[dict[int, bytes], dict[int, int]]:
    """One message of ``size`` bytes on ``tag`` from each of ``ranks``, within ``timeout`` s.

    Returns (what each rank sent, the wrong size each misbehaving rank sent). A message
    of another size is refused before allocation (received into an empty buffer); one
    from a rank not waited for is dropped. Missing ranks are in neither dict.
    """
    MPI = mpi()
    received: dict[int, bytes] = {}
    wrong: dict[int, int] = {}
    waiting = set(ranks)
    status = MPI.Status()
    backoff = Backoff()
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        message = comm.Improbe(MPI.ANY_SOURCE, tag, status)
        if message is None:
            backoff.wait()
            continue
        backoff.activity()
        source, count = status.Get_source(), status.Get_count(MPI.BYTE)
        if source in waiting and count == size:
            buffer = bytearray(size)
            message.Recv([buffer, MPI.BYTE])
            received[source] = bytes(buffer)
        else:
            with contextlib.suppress(MPI.Exception):  # truncated: nothing is allocated or kept
                message.Recv([bytearray(0), MPI.BYTE])
            if source in waiting:
                wrong[source] = count
        waiting.discard(source)
    return received, wrong


def _wait_request(request: Any) -> None:
    """Wait for one MPI request with backoff (MPICH's blocking calls would spin a core)."""
    backoff = Backoff()
    while not request.Test():
        backoff.wait()


def start_console(np: int | None, err: Any = None) -> Session:
    """Start the console side (embedded spawn or rank 0 under mpiexec) and all handshakes."""
    err = err or sys.stderr
    # before any server starts, so that ranks sharing this home find the key, not race to make one
    identity = _load_identity(err)
    embedded = not under_launcher()
    config = None
    if embedded:
        config = _prepare_singleton()
        # before MPI starts any thread: hydra's failure notices stay pending, never kill us
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    MPI = mpi()
    parent_intercomm = None
    world = MPI.COMM_WORLD
    if world.Get_size() > 1:
        if np is not None:
            print(f"mpish: -n {np} ignored: running as rank 0 of {world.Get_size()}", file=err)
        comm = world.Dup()
    else:
        count = np if np is not None else max(1, min(os.cpu_count() or 1, 4))
        if count < 1:
            raise LaunchError("-n needs at least one shell server")
        # the servers must not die of the terminal's Ctrl-C; they ignore SIGINT themselves
        console = [str(os.getpid()), socket.gethostname()]
        parent_intercomm = MPI.COMM_SELF.Spawn(sys.executable, ["-m", "mpish.launch", *console],
                                               maxprocs=count)
        comm = parent_intercomm.Merge(high=False)
    if config is not None:  # the singleton's mpiexec has started: PATH as it was
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]
        shutil.rmtree(config, ignore_errors=True)
    return _console_handshakes(comm, parent_intercomm, err, identity)


def _console_handshakes(
    comm: Any, parent_intercomm: Any, err: Any, loaded: tuple[keys.Identity | None, str]
) -> Session:
    MPI = mpi()
    size = comm.Get_size()
    identity, problem = loaded
    timeout = handshake_timeout(err)
    servers = set(range(1, size))
    entries, wrong = _receive_each(comm, KEY_TAG, ENTRY_SIZE, servers, timeout)
    session_id = secrets.token_bytes(16)
    trusted = keys.trusted_keys(identity) if identity else frozenset()
    refused: dict[int, str] = {}
    hosts: dict[int, str] = {}
    server_keys: dict[int, bytes] = {}
    for rank in sorted(servers):
        if rank in wrong:
            refused[rank] = (f"rank {rank} sent a malformed key exchange ({wrong[rank]} bytes, "
                             f"not {ENTRY_SIZE}); it is left out")
            continue
        if rank not in entries:
            refused[rank] = f"rank {rank} sent no key within {timeout:g} s; it is left out"
            continue
        entry = entries[rank]
        # unauthenticated bytes: the host name only ever appears escaped in our messages
        pub, host = entry[:KEY_SIZE], escape(entry[KEY_SIZE:].rstrip(b"\0"))
        hosts[rank] = host
        if pub == bytes(KEY_SIZE):
            refused[rank] = f"rank {rank} ({host}) has no usable mpish key; it is left out"
        elif pub not in trusted:
            refused[rank] = (
                f"rank {rank} ({host}) refused: its key {keys.fingerprint(pub)} is not yours and "
                "not in authorized_keys; it will run no command"
            )
        elif identity is not None:
            server_keys[rank] = pub
    console_pub = identity.public if identity else bytes(KEY_SIZE)
    announces = [
        comm.Isend([session_id + console_pub + bytes([rank in server_keys]), MPI.BYTE], rank, ANNOUNCE_TAG)
        for rank in sorted(servers)
    ]
    verdicts, wrong = _receive_each(comm, VERDICT_TAG, 1, set(server_keys), timeout)
    for rank in list(server_keys):
        why = ""
        if rank in wrong:
            why = f"sent a malformed verdict ({wrong[rank]} bytes)"
        elif rank not in verdicts:
            why = (f"gave no answer within {timeout:g} s (it claimed the key "
                   f"{keys.fingerprint(server_keys[rank])})")
        elif verdicts[rank] != b"\1":
            why = (f"refused the console's key {keys.fingerprint(console_pub)} "
                   "(not in its trusted keys)")
        if why:
            refused[rank] = f"rank {rank} ({hosts[rank]}) {why}; it is left out"
            del server_keys[rank]
    for request in announces:
        _wait_request(request)
    link = MpiLink(comm)
    for reason in refused.values():
        print(f"mpish: {reason}", file=err)
    if identity is None:
        _finish(comm, link, parent_intercomm)
        raise LaunchError(problem)
    peers: dict[int, Peer] = {}
    for rank, pub in server_keys.items():
        channel = SecureChannel(
            role=Role.INITIATOR,
            binding=Binding(session_id, 0, rank, SERVICE),
            static_key=identity.private,
            remote_static=pub,
            drop_forged=True,
        )
        peers[rank] = Peer(rank, channel, hosts[rank])
        link.send_all(rank, channel.initiate())
    session = Session(comm, link, identity, session_id, peers, refused, parent_intercomm)
    _await_hellos(session, err, timeout)
    return session


def _await_hellos(session: Session, err: Any, timeout: float) -> None:
    """Complete every handshake and read every server's Hello, each within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    backoff = Backoff()
    waiting = set(session.peers)
    while waiting and time.monotonic() < deadline:
        item = session.link.poll()
        if item is None:
            backoff.wait()
            continue
        backoff.activity()
        source, record = item
        peer = session.peers.get(source)
        if peer is None or not peer.alive:
            continue
        try:
            events = peer.channel.receive_record(record)
        except MpishError as exc:
            if not peer.channel.is_open:
                print(f"mpish: rank {source} ({peer.host}): handshake failed ({exc}); it is left out",
                      file=err)
                peer.alive = False
                waiting.discard(source)
            continue
        for event in events:
            if isinstance(event, HandshakeComplete):
                continue
            if isinstance(event, Message):
                with contextlib.suppress(MpishError):
                    hello = p.CODEC.decode(event.data)
                    if isinstance(hello, p.Hello):
                        peer.host, peer.cwd, peer.ready = escape(hello.host), hello.cwd, True
                        peer.pid = hello.pid
                        waiting.discard(source)
    for rank in sorted(waiting):
        peer = session.peers[rank]
        claimed = keys.fingerprint(peer.channel.remote_static or bytes(KEY_SIZE))
        reason = (f"rank {rank} ({peer.host}) did not complete its handshake within {timeout:g} s "
                  f"(it claimed the key {claimed}); it is left out")
        print(f"mpish: {reason}", file=err)
        session.refused[rank] = reason
        peer.alive = False
    session.peers = {rank: peer for rank, peer in session.peers.items() if peer.alive}


def run_server(comm: Any, parent_intercomm: Any = None, console_pid: int = 0) -> int:
    """A shell server rank: key exchange, handshake, serve, finalize. Returns exit status."""
    from .shell.server import ShellServer

    MPI = mpi()
    rank = comm.Get_rank()
    identity, problem = _load_identity(sys.stderr, f"rank {rank}: ")
    if identity is None:
        print(f"mpish: rank {rank}: {problem}", file=sys.stderr)
    mine = (identity.public if identity else bytes(KEY_SIZE)) + _host_bytes()
    sent = comm.Isend([mine, MPI.BYTE], 0, KEY_TAG)
    announce = bytearray(ANNOUNCE_SIZE)
    _wait_request(comm.Irecv([announce, MPI.BYTE], 0, ANNOUNCE_TAG))
    _wait_request(sent)
    session_id, console_pub = bytes(announce[:16]), bytes(announce[16 : 16 + KEY_SIZE])
    admitted = bool(announce[16 + KEY_SIZE])
    accept = admitted and identity is not None and console_pub in keys.trusted_keys(identity)
    if admitted:
        _wait_request(comm.Isend([bytes([1 if accept else 0]), MPI.BYTE], 0, VERDICT_TAG))
    link = MpiLink(comm)
    status = 0
    if accept and identity is not None:
        channel = SecureChannel(
            role=Role.RESPONDER,
            binding=Binding(session_id, 0, rank, SERVICE),
            static_key=identity.private,
            remote_static=console_pub,
        )
        server = ShellServer(link, channel)
        if console_pid:
            server.console_alive = lambda: local_process_alive(console_pid)
        if _server_handshake(link, channel):
            server.hello()
            server.serve()
        else:
            status = 1
    elif admitted:
        print(f"mpish: rank {rank}: the console's key {keys.fingerprint(console_pub)} is not trusted here",
              file=sys.stderr)
    _finish(comm, link, parent_intercomm)
    return status


def _server_handshake(link: MpiLink, channel: SecureChannel) -> bool:
    deadline = time.monotonic() + SERVER_WAIT
    backoff = Backoff()
    while time.monotonic() < deadline:
        item = link.poll()
        if item is None:
            backoff.wait()
            continue
        backoff.activity()
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


def _finish(comm: Any, link: MpiLink, parent_intercomm: Any) -> None:
    """Wait for every rank (non-blocking barrier with backoff), then disconnect and free."""
    MPI = mpi()
    link.flush(timeout=5.0)
    try:
        request = comm.Ibarrier()
        deadline = time.monotonic() + FINAL_TIMEOUT
        backoff = Backoff()
        while not request.Test():
            if time.monotonic() > deadline:
                print("mpish: a rank did not reach the end of the session; aborting the MPI job",
                      file=sys.stderr)
                sys.stderr.flush()
                abort(comm)
            for _ in link.drain():  # records nobody reads any more: consume, never deliver
                pass
            backoff.wait()
        link.cancel_pending()
        _free_session_comm(comm)
        if parent_intercomm is not None:
            parent_intercomm.Disconnect()
    except MPI.Exception as exc:
        raise TransportBroken(f"MPI failed while ending the session: {exc}") from exc


def _free_session_comm(comm: Any) -> None:
    """Free the session communicator, first dropping what nobody will ever receive.

    MPICH refuses to free a communicator with unmatched messages, and any rank of the
    job (a rogue one) can send those on any tag: they are received into an empty buffer
    (truncated: nothing allocated or kept). One that lands after the drain only costs
    the freeing of this communicator, which is logged, not the end of the session.
    """
    MPI = mpi()
    for _ in range(100_000):  # bounded: a flooding rank cannot keep us here
        message = comm.Improbe(MPI.ANY_SOURCE, MPI.ANY_TAG)
        if message is None:
            break
        with contextlib.suppress(MPI.Exception):
            message.Recv([bytearray(0), MPI.BYTE])
    try:
        comm.Free()
    except MPI.Exception as exc:
        logging.getLogger(__name__).debug("the session communicator was not freed: %s", exc)


def _ignore_sigint() -> None:
    """A server outlives a terminal's Ctrl-C (the console forwards it as an Interrupt).

    A no-op handler, not SIG_IGN: an ignored signal stays ignored across exec, and the
    user's commands must keep the default SIGINT so that an Interrupt can stop them.
    """
    signal.signal(signal.SIGINT, lambda signum, frame: None)


def server_main() -> int:
    """Entry point of a spawned server (``python -m mpish.launch``)."""
    _ignore_sigint()
    MPI = mpi()
    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        print("mpish.launch: not started by an mpish console", file=sys.stderr)
        return 2
    comm = parent.Merge(high=True)
    # hydra's notice that another rank failed must not kill this one (a handler, not
    # SIG_IGN, so that the user's commands start with the default disposition)
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
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
