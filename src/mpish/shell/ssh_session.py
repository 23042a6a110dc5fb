"""A shell session over ssh: the MPI shell's Console and ShellServer, ssh pipes for MPI.

Theory of operation
-------------------
:func:`start_ssh_session` runs ``ssh HOST exec PYTHON -c STUB RANK SIZE`` for every host
(through :class:`~mpish.transport.ssh.SshProcess`: the user's ssh, ``BatchMode``, errors
classified as unreachable / authentication refused / Python missing or too old) and
writes the shell server's code on its stdin (:mod:`mpish.transport.ship`): the hosts
need Python 3.10+ and bash, nothing of mpish. Host ``i`` of the node set (in NodeSet
order) is rank ``i``; the console is rank 0.

No keys: ssh authenticates the user and protects the pipes (THREAT-MODEL "Over SSH"),
so each host's records travel on its pipe link's plain channel
(:meth:`~mpish.transport.pipe.PipeLink.plain_channel`, framing only; see
:mod:`mpish.shell.remote`). The console's first message to a host is its code, and the
host's first is its Hello: joining costs no round trip beyond ssh's own. ``mpish ssh -c``
also queues its Run right behind the code (``first``), so each host starts the command in
ssh's first round trip instead of after its Hello; what a host answers before every host
has greeted is kept (``early``) and handed to the console in order
(:meth:`~mpish.shell.console.Console.run`'s ``sent``).

``-f`` (clush's fan-out) bounds the hosts being connected at once; under ``-c`` with
nothing to broadcast on stdin (``rolling``), it bounds the connections *open* at once, as
clush does: the first ``-f`` hosts are started (not awaited: they greet the console, so a
host whose login hangs holds back nobody's result, whatever the number of hosts), the others wait in
``later`` and the console connects each when a place frees (:meth:`SshSession.join`: code and Run in one
write, the host JOINING until its Hello) and hangs a host up as soon as its command is done
or it is lost (:meth:`SshSession.release`: its close record, then EOF; the ssh process is
reaped as it exits; it holds its place in ``-f`` until then, :meth:`SshSession.closing`).
2,000 hosts at ``-f 64`` are at most 64 ssh processes, not 2,000.

The result is an :class:`SshSession`, a :class:`~mpish.shell.session.Session` whose link is a
:class:`~mpish.transport.pipe.MultiLink` and whose peers are named by their host
aliases, so :class:`~mpish.shell.console.Console` and the Repl work on it unchanged. A
host whose pipe ends is marked lost (its Peer is shared with the Console) with ssh's
classified reason, and the others go on.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, ClassVar

from mpish import report
from mpish.transport import ship
from mpish.transport.pipe import MALFORMED, MAX_FRAME, MultiLink, PipeLink, closed_channel
from mpish.transport.ssh import SshError, SshProcess, ssh_argv, wait_for_exits
from mpish.wire.errors import MpishError
from mpish.wire.framing import NO_START, PREAMBLE_LIMIT, FrameDecoder
from mpish.wire.text import escape

from .names import fold_reasons
from .session import INTERRUPTED_CONNECTING, NOT_REACHED, Peer, Session

if TYPE_CHECKING:
    from . import protocol as p
    from .conversation import Event
    from .receive import Deliver

HELLO_TIMEOUT_SLACK = 30.0  # beyond ssh's ConnectTimeout: Python's start and the Hello (a loaded node)
REMOTE_ENTRY = "mpish.shell.remote"  # the module shipped and run on each host
# shipped too, imported by the server only at a session's first transfer (ship.closure
# follows only the imports a module makes when it loads)
REMOTE_ALSO = ("mpish.shell.server.transfer_files", "mpish.shell.orphan")  # imported late
CLOSE_WAIT = 5.0
NO_HELLO = "no Hello in time; the connection was closed"
FLUSH_WAIT = 1.0  # for the close records still queued to all hosts (a host that reads nothing: EOF anyway)


RECONNECT_HINT = "At the mpish ssh console, :reconnect connects to it again."


class SshSession(Session):
    """The console's side of an ssh session: one ssh process per host."""

    __match_args__ = ("link", "peers", "refused", "processes", "failed", "err", "report_losses", "sent_first",
                      "early")
    link: MultiLink
    later: dict[int, str]
    awaits_close: ClassVar[bool] = False  # finish() waits until each ssh has exited: no round trip more

    def __init__(
        self,
        link: MultiLink,
        peers: dict[int, Peer],
        refused: dict[int, str] | None = None,
        processes: dict[int, SshProcess] | None = None,
        failed: dict[str, str] | None = None,
        err: IO[str] | None = None,
        report_losses: bool = True,
        sent_first: list[int] | None = None,
        early: list[tuple[int, Event, object]] | None = None,
    ) -> None:
        super().__init__(link, peers, refused)
        self.processes: dict[int, SshProcess] = {} if processes is None else processes
        self.failed: dict[str, str] = {} if failed is None else failed  # host -> why it could not join
        self.err: IO[str] = sys.stderr if err is None else err
        self.report_losses = report_losses  # say "host: lost: why" at once (-c folds them at the end instead)
        # ranks whose code was followed by ``first``, and their answers before every host greeted
        self.sent_first: list[int] = [] if sent_first is None else sent_first
        self.early: list[tuple[int, Event, object]] = [] if early is None else early
        # how the hosts were reached (start_ssh_session), to reach a lost one again (reconnect)
        self.connect_args: tuple[Sequence[str], Sequence[str], float] = (("python3",), (), 30.0)
        self.again = RECONNECT_HINT  # what a lost host's message advises
        # a joining host's failure in the caller's words (mpish ssh: --python, its -o options)
        self.advise: Callable[[str, str], str] = lambda why, host: why
        self.later: dict[int, str] = {}  # rank -> host: connected in its turn (start_ssh_session)
        self.deadlines: dict[int, float] = {}  # joining rank -> when it is given up without a Hello
        self.ending: list[tuple[SshProcess, float]] = []  # released, hung up (when), not reaped yet

    def join(self, rank: int, first: bytes | None) -> str:
        """Connect the host of ``later[rank]`` now (the code, then ``first`` if any, in one write)."""
        self._reap()
        host = self.later.pop(rank)
        python, ssh_options, connect_timeout = self.connect_args
        if not _connect(self, rank, host, python, ssh_options, connect_timeout):
            return self.advise(self.failed[host], host)
        self.deadlines[rank] = time.monotonic() + connect_timeout + HELLO_TIMEOUT_SLACK
        with contextlib.suppress(MpishError):  # a pipe that ended is reported as lost
            self.link.links[rank].send_raw(ship.payload(REMOTE_ENTRY, also=REMOTE_ALSO))
            if first is not None:
                self.link.send_all(rank, self.peers[rank].channel.send(first))
        return ""

    def login_output(self, host: str, data: bytes) -> None:
        """What a host's login wrote to stdout before the shipped code started (a ``.bashrc``
        that echoes, a forced command's banner): shown once, as ``host: line`` on stderr,
        escaped (it must not drive the terminal), as clush and ``ssh host cmd`` show it."""
        with contextlib.suppress(OSError, ValueError):
            lines = escape(data, keep_newlines=True).splitlines()
            self.err.write("".join(f"{host}: {line}\n" for line in lines))
            self.err.flush()

    def greeted(self, rank: int) -> None:
        """Its losses are now told as a joined host's, and ssh's stderr so far is shown (SshProcess)."""
        process = self.processes.get(rank)
        if process is not None:
            process.greeted = True

    def overdue(self, now: float) -> dict[int, str]:
        """Joining hosts without a Hello by their deadline (ssh's ConnectTimeout and
        :data:`HELLO_TIMEOUT_SLACK`), as :func:`start_ssh_session` gives them up."""
        gone: dict[int, str] = {}
        for rank, deadline in list(self.deadlines.items()):
            peer, process = self.peers.get(rank), self.processes.get(rank)
            if peer is None or process is None or not peer.alive or peer.ready:
                if process is not None and peer is not None and peer.ready:
                    process.greeted = True  # its losses are told as a joined host's
                del self.deadlines[rank]
            elif now >= deadline:
                del self.deadlines[rank]
                self.failed.setdefault(peer.host, NO_HELLO)
                gone[rank] = self.advise(NO_HELLO, peer.host)
        return gone

    def release(self, rank: int) -> None:
        """Hang up a host whose turn is over: its queued close record written (if it still
        reads), EOF on its stdin; the ssh process is reaped once it has exited."""
        peer = self.peers.get(rank)
        link = self.link.links.get(rank)
        if link is not None and peer is not None and peer.alive:
            with contextlib.suppress(MpishError):
                link.flush(FLUSH_WAIT)
        self.link.remove(rank)
        self.deadlines.pop(rank, None)
        process = self.processes.pop(rank, None)
        if process is not None:
            process.hang_up()
            if peer is None or not peer.alive:  # lost or given up: nothing more will be read from it
                process.signal_group(signal.SIGTERM)
            self.ending.append((process, time.monotonic()))
        self._reap()

    def closing(self) -> int:
        self._reap()
        return len(self.ending)

    def _reap(self) -> None:
        """Close the released ssh processes that have exited (their pipes and thread); end
        one still there :data:`CLOSE_WAIT` s after its hang-up (a host that froze after its
        Done: its place in -f is not held for ever)."""
        still = []
        now = time.monotonic()
        for process, since in self.ending:
            if process.ended():
                process.close(wait=0.0)
                continue
            if now - since > CLOSE_WAIT:
                process.signal_group(signal.SIGKILL)
            still.append((process, since))
        self.ending = still

    def reconnect(self, hosts: Mapping[int, str], others: Deliver | None = None) -> dict[int, str]:
        """Connect again to these hosts (rank -> host, lost ranks), each as the same rank, with
        a new shell server (its shell starts afresh: the old one's cwd and variables are gone
        with it); rank -> why for those that could not join (the others are ready in ``peers``;
        the failed ones are in neither ``peers`` nor the link). ``others``: what the live hosts
        send meanwhile (late output of an abandoned command: its credit must be returned).
        A Ctrl-C gives up the hosts not greeted yet."""
        python, ssh_options, connect_timeout = self.connect_args
        deadlines: dict[int, float] = {}
        for rank, host in hosts.items():
            self._drop(rank)
            self.failed.pop(host, None)
            if _connect(self, rank, host, python, ssh_options, connect_timeout):
                deadlines[rank] = time.monotonic() + connect_timeout + HELLO_TIMEOUT_SLACK
                with contextlib.suppress(MpishError):  # a pipe that ended: failed below
                    self.link.links[rank].send_raw(ship.payload(REMOTE_ENTRY, also=REMOTE_ALSO))
        try:
            _await_hellos(self, deadlines, lambda: None, lambda: False, others=others)
        except KeyboardInterrupt:
            self.abandon_connecting()
        return {rank: cli_advice(self.failed.get(host, "it did not join"), host, python_flag=True,
                                 ssh_options=ssh_options)
                for rank, host in hosts.items() if rank not in self.peers}

    def keep_unreached(self, hosts: Mapping[int, str]) -> None:
        """Hosts that could not be reached at the start, kept as lost peers of their ranks
        (``hosts``: rank -> host): the console's :targets names them and :reconnect tries them
        again, as clush's interactive mode keeps a node that was down in its set."""
        for rank, host in hosts.items():
            if rank not in self.peers and host in self.failed:
                self.peers[rank] = Peer(rank, closed_channel(), host, alive=False, lost=NOT_REACHED)

    def abandon_connecting(self, pending: Sequence[tuple[int, str]] = ()) -> None:
        """A Ctrl-C while hosts connect: those not greeted yet are given up at once, their ssh
        terminated (waiting for its end held the console until ssh's ConnectTimeout, 8 s
        after the Ctrl-C, a clush user's review) with what it started (its ProxyCommand ran on:
        :meth:`SshProcess.signal_group <mpish.transport.ssh.SshProcess.signal_group>`), and noted as
        interrupted, as are the ``pending`` ones (not started yet, -f); the console goes on
        with the others."""
        connecting = {rank: peer.host for rank, peer in self.peers.items() if peer.alive and not peer.ready}
        for rank in connecting:
            process = self.processes.get(rank)
            if process is not None:
                process.hang_up()
                process.signal_group(signal.SIGTERM)
        for rank, host in connecting.items():
            self._drop(rank)
            self.failed[host] = INTERRUPTED_CONNECTING
        for _, host in pending:
            self.failed[host] = INTERRUPTED_CONNECTING

    def _drop(self, rank: int) -> None:
        """Forget a host's connection: unwatched, its ssh ended, no peer."""
        self.link.remove(rank)
        process = self.processes.pop(rank, None)
        if process is not None:
            process.close(wait=1.0)
        self.peers.pop(rank, None)

    def give_up(self, rank: int) -> None:
        """A host that stopped answering: unwatched and its ssh ended (the remote side ends at
        the hang-up once it runs again); its peer stays, lost, for :reconnect."""
        self.link.remove(rank)
        process = self.processes.pop(rank, None)
        if process is not None:
            process.close(wait=0.2)

    def lost(self, rank: int, why: str) -> None:
        """MultiLink's report that a host's pipe ended: mark it lost, say why (once)."""
        process = self.processes.get(rank)
        reason = why
        link = self.link.links.get(rank)
        started = link is not None and link.frames.started
        if (process is not None and link is not None and started and link.received_bytes > link.frames.skipped
                and not why.startswith(MALFORMED)):
            process.greeted = True  # its Hello was read (a joining host's: the console has not seen it yet)
        if process is not None and why.startswith(MALFORMED) and not process.greeted:
            began = why.rpartition("; it began ")[2]  # PipeLink's words: the bytes, escaped
            reason = (f"its login wrote more than {PREAMBLE_LIMIT} bytes to stdout before mpish started, "
                      f"beginning with {began}: does a shell startup file (.bashrc) or a forced command "
                      "print that much?" if NO_START in why else
                      f"its output was not mpish's, from {began}: the stream is corrupt")
        elif process is not None:
            reason = _why(process.failure(wait=2.0))
            if link is not None and not started and link.frames.buffered:  # a forced command's words
                printed = link.frames.peek(80)
                reason = reason.rstrip(".") + (f"; before mpish started, its login printed {printed!r} "
                                               "(a forced command that does not run the one given?)")
        peer = self.peers.get(rank)
        if peer is None:
            return
        joined = peer.ready or (process is not None and process.greeted)
        if joined and peer.alive and self.report_losses:
            report.say(f"{peer.host}: lost: {reason}", self.err)
            self.err.flush()
        elif not joined:
            self.failed.setdefault(peer.host, reason)
            reason = self.advise(reason, peer.host)  # a joining host's result says it so
        peer.alive = False
        peer.lost = reason

    def finish(self) -> None:
        """End every ssh process: stdin closed (the remote ends on EOF), then terminate.
        Every host hears the end first, so they end together, not one after the other; what
        was queued for them (the console's close records) is written before."""
        with contextlib.suppress(MpishError):
            self.link.flush(FLUSH_WAIT)
        processes = [*self.processes.values(), *(process for process, _ in self.ending)]
        for process in processes:
            process.hang_up()
        wait_for_exits([process.process for process in processes], CLOSE_WAIT)
        for process in processes:
            process.close(wait=CLOSE_WAIT)
        self.ending = []


def _why(error: SshError) -> str:
    message = str(error)
    prefix = f"{error.host}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def cli_advice(message: str, host: str, *, python_flag: bool, ssh_options: Sequence[str]) -> str:
    """A failure's advice in ``mpish ssh``'s words: ``--python`` for the API's ``python=``, and
    the user's ssh options in the ``ssh HOST true`` it suggests (so that it reaches the same host)."""
    if python_flag:
        message = re.sub(r"\bpython= ?", "--python ", message)
    if ssh_options:
        message = message.replace(f"`ssh {host} ", f"`{shlex.join(['ssh', *ssh_options, host])} ")
    return message


def fold_failures(
    failed: Mapping[str, str], *, python_flag: bool = False, ssh_options: Sequence[str] = ()
) -> list[str]:
    """``host: why`` for hosts that could not join, in ``mpish ssh``'s words
    (:func:`cli_advice`), identical reasons once under a node set
    (:func:`~mpish.shell.names.fold_reasons`)."""
    return fold_reasons({host: cli_advice(why, host, python_flag=python_flag, ssh_options=ssh_options)
                         for host, why in failed.items()})


def start_ssh_session(
    hosts: Sequence[str] | Mapping[int, str],
    *,
    size: int = 0,
    python: Sequence[str] = ("python3",),
    ssh_options: Sequence[str] = (),
    connect_timeout: float = 30.0,
    fanout: int = 64,
    err: IO[str] | None = None,
    first: Callable[[], bytes] | None = None,
    report_losses: bool = True,
    again: str = RECONNECT_HINT,
    rolling: bool = False,
) -> SshSession:
    """Connect to every host, handshake, read every Hello; hosts that fail are in ``failed``.

    ``hosts``: rank -> host (a list: host ``i`` is rank ``i + 1``); ranks left out (``-x``)
    stay vacant, and ``size`` (default: the highest rank + 1) is what every server is told.

    At most ``fanout`` hosts are being connected at once (clush's ``-f``): the next host's
    ssh starts when one of them has joined or failed. Joined hosts stay connected.
    ``first``: the encoded message each host gets right behind its code (called once, after
    the first wave's ssh processes have started); those hosts are in ``sent_first``, and
    what they send after their Hello while others are still greeting is in ``early``.
    ``report_losses``: say at once that a joined host was lost (else the caller does).
    ``again``: the advice after a host's connection ended (:reconnect only at the console).
    ``rolling`` (``-c``, ``--copy``): the first ``fanout`` hosts are started (with ``first``,
    if any) and not awaited (their Hellos come to the console: JOINING, or GREETING without
    ``first``); the others are in ``later``, for the console to connect in their turn (module doc).
    """
    if fanout < 1:
        raise ValueError("fanout must be at least 1")
    if len(hosts) > fanout and not rolling:
        first = None  # -f: a host must not start the command before one of the first wave is done
    err = err or sys.stderr
    session = SshSession(MultiLink({}), {}, processes={}, failed={}, err=err, report_losses=report_losses)
    session.link.on_lost = session.lost
    numbered = dict(hosts) if isinstance(hosts, Mapping) else dict(enumerate(hosts, 1))
    session.link.size = max(size, max(numbered, default=0) + 1)
    session.connect_args = (python, ssh_options, connect_timeout)
    session.again = again
    pending = sorted(numbered.items())
    if rolling:  # the others join in their turn (turns.py)
        session.later = dict(pending[fanout:])
        del pending[fanout:]
    deadlines: dict[int, float] = {}  # rank -> when its connection attempt gives up

    def start_next() -> None:
        connecting = sum(1 for rank in deadlines if _connecting(session, rank))
        started = []
        while pending and connecting < fanout:
            rank, host = pending.pop(0)
            if _connect(session, rank, host, python, ssh_options, connect_timeout):
                deadlines[rank] = time.monotonic() + connect_timeout + HELLO_TIMEOUT_SLACK
                started.append(rank)
                connecting += 1
        for rank in started:  # every ssh of the wave is connecting while the code is built
            with contextlib.suppress(MpishError):  # a pipe that ended is reported as lost
                session.link.links[rank].send_raw(ship.payload(REMOTE_ENTRY, also=REMOTE_ALSO))
        message = first_message() if started else None
        if message is not None:  # right behind the code: no round trip before the command starts
            for rank in started:
                with contextlib.suppress(MpishError):
                    session.link.send_all(rank, session.peers[rank].channel.send(message))
                    session.sent_first.append(rank)

    built: list[bytes] = []

    def first_message() -> bytes | None:
        if first is None:
            return None
        if not built:
            built.append(first())
        return built[0]

    try:
        start_next()
        if rolling:  # -c, --copy: no barrier on the first wave's slowest Hello: they greet the console
            session.deadlines.update(deadlines)  # (JOINING, or GREETING without a first message)
            return session
        _await_hellos(session, deadlines, start_next, lambda: bool(pending), first is not None,
                      slow_note=True)
    except KeyboardInterrupt:  # the console's start: it opens with the hosts greeted so far
        session.abandon_connecting(pending)
        if not any(peer.ready for peer in session.peers.values()):
            session.finish()
            raise
    except BaseException:  # end every ssh started so far
        session.finish()
        raise
    return session


def _connecting(session: SshSession, rank: int) -> bool:
    peer = session.peers.get(rank)
    return peer is not None and peer.alive and not peer.ready


def _connect(
    session: SshSession,
    rank: int,
    host: str,
    python: Sequence[str],
    ssh_options: Sequence[str],
    connect_timeout: float,
) -> bool:
    """Start ssh to ``host`` as rank ``rank`` (its code is sent once the wave has started)."""
    size = session.link.size
    debug = report.debugging()
    remote = ship.command(python, (str(rank), str(size), *([report.DEBUG_FLAG] if debug else [])))
    argv = ssh_argv(host, remote, options=ssh_options, connect_timeout=connect_timeout)
    try:
        process = SshProcess(host, argv, echo_stderr=debug, show_stderr=True,  # as clush and ssh show it
                             again=session.again)
    except SshError as exc:
        session.failed[host] = _why(exc)
        return False
    frames = FrameDecoder(max_frame=MAX_FRAME, after=ship.START_MARK,
                          on_preamble=lambda data: session.login_output(host, data))
    link = PipeLink(process.read_fd, process.write_fd, rank=0, size=size, peer=rank, frames=frames)
    session.processes[rank] = process
    session.peers[rank] = Peer(rank, link.plain_channel(), host)
    session.link.add(rank, link)
    return True


SLOW_NOTE = 3.0  # seconds of connecting before the console says which hosts it waits for


def _await_hellos(
    session: SshSession,
    deadlines: dict[int, float],
    start_next: Callable[[], None],
    more_to_start: Callable[[], bool],
    keep_early: bool = False,
    others: Deliver | None = None,
    slow_note: bool = False,
) -> None:
    """Read every Hello, or give up on that host (``keep_early``: a greeted host's next
    records go to ``session.early``; ``others``: what hosts greeted before send meanwhile;
    ``slow_note``: after :data:`SLOW_NOTE` s, name once the hosts still connecting, and how to
    go on without them: the console's screen stayed blank until the connect timeout)."""
    from .greeting import await_hellos  # the console's machinery loads while ssh connects
    from .ranks import fold_hosts

    noted_at = time.monotonic() + SLOW_NOTE if slow_note else float("inf")

    def greeted(rank: int, hello: p.Hello) -> None:
        peer = session.peers[rank]
        peer.cwd, peer.ready = hello.cwd, True
        session.processes[rank].greeted = True

    def failed(rank: int, why: str) -> None:
        peer = session.peers[rank]
        session.failed.setdefault(peer.host, why or NO_HELLO)
        peer.alive = False

    def tick() -> bool:
        nonlocal noted_at
        start_next()
        if time.monotonic() >= noted_at:
            noted_at = float("inf")
            peers = session.peers.values()
            slow = [peer.host for peer in peers if peer.alive and not peer.ready]
            if slow:  # (with no host ready, Ctrl-C ends the start)
                then = "goes on without them" if any(peer.ready for peer in peers) else "gives up"
                report.say(f"still connecting to {fold_hosts(slow)} (Ctrl-C {then})")
        return more_to_start()

    def early(rank: int, event: Event, payload: object) -> None:
        session.early.append((rank, event, payload))

    await_hellos(session, greeted, failed, lambda rank: deadlines.get(rank, float("inf")), tick,
                 early if keep_early else None, others)
    for rank, peer in list(session.peers.items()):
        if not peer.ready:
            peer.alive = False
            session._drop(rank)
