"""A shell session over ssh: the MPI shell's Console and ShellServer, ssh pipes for MPI.

Theory of operation
-------------------
:func:`start_ssh_session` runs ``ssh HOST PYTHON -m mpish.shell.remote`` for every host
(through :class:`~mpish.transport.ssh.SshProcess`: the user's ssh, ``BatchMode``, errors
classified as unreachable / authentication refused / Python or mpish missing). Host
``i`` of the node set (in NodeSet order) is rank ``i``; the console is rank 0.

Keys: the console makes a fresh X25519 key for itself and one for each host, and sends
the host its key pair and the console's public key as the first bytes on ssh's stdin
(see :mod:`mpish.shell.remote`). ssh authenticates the user and protects that pipe, so
neither side needs an mpish identity; the Noise KK channel then runs inside ssh as it
runs over MPI (there is no plaintext mode).

The result is an :class:`SshSession`, a :class:`~mpish.launch.Session` whose link is a
:class:`~mpish.transport.pipe.MultiLink` and whose peers are named by their host
aliases, so :class:`~mpish.shell.console.Console` and the Repl work on it unchanged. A
host whose pipe ends is marked lost (its Peer is shared with the Console) with ssh's
classified reason, and the others go on.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish import keys
from mpish.launch import Peer, Session
from mpish.transport.pipe import MultiLink, PipeLink
from mpish.transport.ssh import SshError, SshProcess, ssh_argv
from mpish.wire.channel import Role, SecureChannel
from mpish.wire.errors import MpishError
from mpish.wire.events import HandshakeComplete, Message
from mpish.wire.noise import public_bytes

from . import protocol as p
from .grouping import Style
from .interactive import Repl
from .remote import binding as remote_binding
from .remote import pack_bootstrap

HELLO_TIMEOUT_SLACK = 15.0  # beyond ssh's ConnectTimeout: Python start and the handshake
CLOSE_WAIT = 5.0


@dataclass
class SshSession(Session):
    """The console's side of an ssh session: one ssh process per host."""

    processes: dict[int, SshProcess] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # host -> why it could not join
    err: IO[str] = field(default_factory=lambda: sys.stderr)

    def lost(self, rank: int, why: str) -> None:
        """MultiLink's report that a host's pipe ended: mark it lost, say why (once)."""
        process = self.processes.get(rank)
        reason = why
        if process is not None:
            reason = _why(process.failure(wait=2.0))
        peer = self.peers.get(rank)
        if peer is None:
            return
        if peer.ready and peer.alive:
            print(f"mpish: {peer.host}: lost: {reason}", file=self.err)
            self.err.flush()
        elif not peer.ready:
            self.failed.setdefault(peer.host, reason)
        peer.alive = False
        peer.lost = reason

    def finish(self) -> None:
        """End every ssh process: stdin closed (the remote ends on EOF), then terminate."""
        for process in self.processes.values():
            process.close(wait=CLOSE_WAIT)


def _why(error: SshError) -> str:
    message = str(error)
    prefix = f"{error.host}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def start_ssh_session(
    hosts: Sequence[str],
    *,
    python: Sequence[str] = ("python3",),
    ssh_options: Sequence[str] = (),
    connect_timeout: float = 30.0,
    err: IO[str] | None = None,
) -> SshSession:
    """Connect to every host, handshake, read every Hello; hosts that fail are in ``failed``."""
    err = err or sys.stderr
    console_key = X25519PrivateKey.generate()
    identity = keys.Identity(console_key, public_bytes(console_key), "mpish ssh console")
    session_id = secrets.token_bytes(16)
    size = len(hosts) + 1
    command = [*python, "-m", "mpish.shell.remote"]
    links: dict[int, PipeLink] = {}
    processes: dict[int, SshProcess] = {}
    peers: dict[int, Peer] = {}
    failed: dict[str, str] = {}
    host_keys: dict[int, bytes] = {}
    for rank, host in enumerate(hosts, 1):
        argv = ssh_argv(host, command, options=ssh_options, connect_timeout=connect_timeout)
        try:
            process = SshProcess(host, argv, max_frame=0)
        except SshError as exc:
            failed[host] = _why(exc)
            continue
        host_key = X25519PrivateKey.generate()
        host_keys[rank] = host_key.private_bytes_raw()
        channel = SecureChannel(
            role=Role.INITIATOR,
            binding=remote_binding(session_id, rank),
            static_key=console_key,
            remote_static=public_bytes(host_key),
        )  # a byte stream: any bad record fails the channel (no datagram to drop)
        processes[rank] = process
        peers[rank] = Peer(rank, channel, host)
        links[rank] = PipeLink(process.frames.read_fd, process.frames.write_fd, rank=0, size=size, peer=rank)
    session = SshSession(None, MultiLink(links), identity, session_id, peers,
                         processes=processes, failed=failed, err=err)
    assert isinstance(session.link, MultiLink)
    session.link.on_lost = session.lost
    for rank, link in links.items():
        try:  # the host's key pair travels inside ssh (see the module doc), then handshake 1
            link.send_raw(pack_bootstrap(session_id, rank, size, identity.public, host_keys[rank]))
            link.send_all(rank, peers[rank].channel.initiate())
        except MpishError:
            pass  # the pipe already ended: reported as lost by the link
    try:
        _await_hellos(session, time.monotonic() + connect_timeout + HELLO_TIMEOUT_SLACK)
    except BaseException:  # Ctrl-C while connecting: end every ssh started so far
        session.finish()
        raise
    return session


def _await_hellos(session: SshSession, deadline: float) -> None:
    """Complete every handshake and read every Hello, or give up on that host."""
    assert isinstance(session.link, MultiLink)
    link = session.link
    waiting = {rank for rank, peer in session.peers.items() if peer.alive}
    while True:
        waiting = {rank for rank in waiting if session.peers[rank].alive}
        if not waiting or time.monotonic() >= deadline:
            break
        busy = False
        for source, record in link.drain():
            busy = True
            peer = session.peers.get(source)
            if peer is None or source not in waiting:
                continue
            try:
                events = peer.channel.receive_record(record)
            except MpishError as exc:
                if not peer.channel.is_open:
                    session.failed.setdefault(peer.host, f"handshake failed: {exc}")
                    peer.alive = False
                continue
            for event in events:
                if isinstance(event, HandshakeComplete):
                    continue
                if isinstance(event, Message) and event.channel == p.CONTROL:
                    try:
                        hello = p.CODEC.decode(event.data)
                    except MpishError:
                        continue
                    if isinstance(hello, p.Hello):
                        peer.cwd, peer.ready = hello.cwd, True
                        session.processes[source].greeted = True
                        waiting.discard(source)
        if not busy:
            link.wait(min(0.2, max(0.0, deadline - time.monotonic())))
    for rank in waiting:
        peer = session.peers[rank]
        session.failed.setdefault(peer.host, "no handshake in time; the connection was closed")
        peer.alive = False
    for rank, peer in list(session.peers.items()):
        if not peer.ready:
            peer.alive = False
            session.processes.pop(rank).close(wait=1.0)
            del session.peers[rank]


def expand_target_words(spec: str) -> str:
    """Node sets in a target spec (``@node[1-2]``, ``host1,host3``) as ``+``-joined words
    without ``@`` (which :func:`~mpish.shell.ranks.resolve_targets` reads the same way)."""
    from mpish.calls.shell_cli import expand_hosts

    words = []
    for word in spec.replace("+", " ").split():
        name = word[1:] if word.startswith("@") else word
        if name and not name[0].isdigit() and name != "all" and ("[" in name or "," in name):
            words.extend(expand_hosts(name))
        else:
            words.append(name)
    return "+".join(words)


class SshRepl(Repl):
    """The MPI shell's Repl, with hosts instead of ranks in the prompt, targets and output."""

    sink_kind = ""  # "json" for one JSON object per host per command; else the Repl's mode

    def prompt(self) -> str:
        from mpish.calls.shell_cli import fold_hosts

        hosts = self.console.hosts
        self.targets = frozenset(r for r in self.targets if r in hosts)
        names = [hosts[r] for r in sorted(self.targets)]
        return f"[{fold_hosts(names) if names else 'no host'}] {self.console.cwd(self.targets)}#> "

    def handle(self, line: str) -> None:
        if line.startswith("@"):
            spec, _, rest = line.partition(" ")
            line = f"@{expand_target_words(spec)} {rest}"
        super().handle(line)

    def cmd_targets(self, rest: str) -> None:
        super().cmd_targets(expand_target_words(rest) if rest else rest)

    def run(self, command: str, targets: frozenset[int]) -> None:
        from mpish.calls.shell_cli import RankSink, make_sink, status_lines

        hosts = [self.console.hosts[r] for r in sorted(targets)]
        kind = "json" if self.sink_kind == "json" else self.mode
        sink = RankSink(make_sink(kind, hosts, self.out, sys.stderr.buffer, self.style), self.console.session)
        with self.keys():
            self.console.run(command, targets, sink)
        sys.stdout.flush()
        outcomes = list(sink.outcomes.values())
        for text in status_lines(outcomes, Style.for_stream(sys.stderr)):
            print(text, file=self.err)
        self.err.flush()
        self.last_status = max((o.exit for o in outcomes), default=0)

    def _report(self, what: str, verdicts: dict[int, str], size: int, seconds: float) -> None:
        from mpish.calls.shell_cli import fold_hosts

        hosts = {rank: peer.host for rank, peer in self.console.peers.items()}
        good = [hosts[r] for r, e in verdicts.items() if not e]
        if good:
            extra = f", {size / 2**20 / max(seconds, 1e-6):.1f} MiB/s" if size else ""
            print(f"mpish: {what} {fold_hosts(good)}: ok, SHA-256 verified ({seconds:.2f} s{extra})")
        failures: dict[str, list[str]] = {}
        for rank, error in verdicts.items():
            if error:
                failures.setdefault(error, []).append(hosts[rank])
        for error, names in failures.items():
            print(self.style.error(f"mpish: {what} {fold_hosts(names)}: {error}"), file=self.err)
        sys.stdout.flush()
