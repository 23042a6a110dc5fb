"""``mpish ssh HOSTS [-c COMMAND]``: a command on many hosts over ssh, clush-style.

Theory of operation
-------------------
HOSTS is a ClusterShell node set (``node[1-8],login1``), expanded with
:class:`ClusterShell.NodeSet.NodeSet`. Both modes run on the MPI shell's machinery over
ssh pipes (:mod:`mpish.shell.ssh_session`): one ``ssh HOST python3 -m mpish.shell.remote``
per host, host ``i`` in NodeSet order being rank ``i``, each running the unchanged
:class:`~mpish.shell.server.ShellServer` (one long-lived bash per host: ``cd``,
variables, functions, aliases and options persist) behind a Noise KK SecureChannel that
runs inside ssh. mpish must be installed on the remote hosts (its cryptography is
compiled); where it is not, that host fails with a message saying how to install it.
Output arrives per rank and goes, through :class:`RankSink`, to one host sink:

* grouped (default, ``clush -b``): each host's stdout and stderr are spooled (memory up to
  1 MiB, then disk) with a SHA-256; hosts with identical outputs are printed once under
  their node set. One host: its output is streamed as is, as ssh would.
* live (``-v``): lines as they come, prefixed ``host: ``.
* JSON (``--json``): one object per host per line: host, exit, signal, stdout, stderr,
  seconds (the MPI shell's fields minus rank, plus host), and ``error`` when ssh or the
  remote side failed.

The exit status is the largest remote one (``clush -S``); a command killed by signal N
counts as 128+N, and a host that could not run it (unreachable, authentication refused,
Python or mpish missing, lost during the command) is reported as ``host: <message>``
and counts as 255, as with ssh. At most ``-f`` hosts (default 64, as clush) are being
connected at once; the next one starts when one has joined or failed.

Without ``-c``, the MPI shell's console (:class:`~mpish.shell.ssh_session.SshRepl`):
prompt ``[hosts] cwd#>``, targets ``@host2`` / ``@node[1-2]``, ``:put``/``:get``,
Ctrl-C interrupts the running command on every host and the session goes on;
``:quit``, ``exit`` or Ctrl-D end it with status 0.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from mpish.shell.grouping import Result, Style, signal_name
from mpish.wire.errors import MpishError

DEFAULT_FANOUT = 64  # clush's default
SPOOL_IN_MEMORY = 1 << 20
LIVE_LINE_LIMIT = 1 << 16
FAILED = 255  # what ssh returns when it could not run the command


class HostsError(MpishError):
    """The HOSTS argument is not a valid node set."""


def expand_hosts(text: str) -> list[str]:
    """``"node[1-3],login1"`` -> the hosts, in NodeSet order; HostsError if malformed."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        hosts = list(NodeSet(text))
    except (NodeSetException, ValueError) as exc:
        raise HostsError(f"bad host set {text!r}: {exc}") from None
    if not hosts:
        raise HostsError(f"no host in {text!r}")
    return [str(h) for h in hosts]


def fold_hosts(hosts: Sequence[str]) -> str:
    """The inverse of :func:`expand_hosts`: ``host1,host2,host3`` -> ``host[1-3]``."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(hosts)))


@dataclass(frozen=True, slots=True)
class HostOutcome:
    """How the command ended on one host."""

    host: str
    exit: int
    signal: int = 0
    seconds: float = 0.0
    error: str = ""  # set when ssh or the remote side failed (exit is then 255)
    timed_out: bool = False  # killed by the -t timeout


# --- where output goes --------------------------------------------------------------------


class HostSink(Protocol):
    """Receives output chunks (from several threads) and each host's outcome."""

    def output(self, host: str, stream: str, data: bytes) -> None: ...

    def done(self, outcome: HostOutcome) -> None: ...

    def finish(self) -> None: ...


class _Spool:
    """One host's stream: spooled to memory then disk, with a digest for grouping."""

    def __init__(self) -> None:
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)

    def copy_to(self, out: IO[bytes]) -> None:
        self.file.seek(0)
        while chunk := self.file.read(1 << 20):
            out.write(chunk)


def _report_error(err: IO[bytes], outcome: HostOutcome, style: Style) -> None:
    if outcome.error:
        err.write(style.error(f"{outcome.host}: {outcome.error}").encode() + b"\n")
        err.flush()


class GroupedHosts:
    """Identical (stdout, stderr) of several hosts printed once under their node set."""

    def __init__(self, hosts: Sequence[str], out: IO[bytes], err: IO[bytes], style: Style) -> None:
        self.hosts = list(hosts)  # the order groups are printed in
        self.out, self.err, self.style = out, err, style
        self._lock = threading.Lock()
        self._spools: dict[tuple[str, str], _Spool] = {}
        self.outcomes: dict[str, HostOutcome] = {}

    def output(self, host: str, stream: str, data: bytes) -> None:
        with self._lock:
            spool = self._spools.get((host, stream))
            if spool is None:
                spool = self._spools[(host, stream)] = _Spool()
            spool.write(data)

    def done(self, outcome: HostOutcome) -> None:
        with self._lock:
            self.outcomes[outcome.host] = outcome
            _report_error(self.err, outcome, self.style)

    def finish(self) -> None:
        groups: dict[tuple[bytes, bytes], list[str]] = {}
        for host in self.hosts:
            key = tuple(
                self._spools[(host, s)].digest.digest() if (host, s) in self._spools else b""
                for s in ("stdout", "stderr")
            )
            groups.setdefault((key[0], key[1]), []).append(host)
        line = "-" * 15
        for members in groups.values():
            out, err = (self._spools.get((members[0], s)) for s in ("stdout", "stderr"))
            if out is None and err is None:
                continue
            title = f"{line}\n{fold_hosts(members)} ({len(members)})\n{line}\n"
            self.out.write(self.style.header(title).encode())
            if out is not None:
                out.copy_to(self.out)
            self.out.flush()
            if err is not None:
                err.copy_to(self.err)
                self.err.flush()
        for spool in self._spools.values():
            spool.file.close()
        self._spools.clear()
        self.out.flush()


class RawHost:
    """One host: its output streamed as is, as ssh would."""

    def __init__(self, out: IO[bytes], err: IO[bytes], style: Style) -> None:
        self.out, self.err, self.style = out, err, style
        self.outcomes: dict[str, HostOutcome] = {}

    def output(self, host: str, stream: str, data: bytes) -> None:
        target = self.err if stream == "stderr" else self.out
        target.write(data)
        target.flush()

    def done(self, outcome: HostOutcome) -> None:
        self.outcomes[outcome.host] = outcome
        _report_error(self.err, outcome, self.style)

    def finish(self) -> None:
        self.out.flush()
        self.err.flush()


class LiveHosts:
    """Output as produced, each line prefixed ``host: `` (clush without -b)."""

    def __init__(self, out: IO[bytes], err: IO[bytes], style: Style) -> None:
        self.out, self.err, self.style = out, err, style
        self._lock = threading.Lock()
        self._partial: dict[tuple[str, str], bytes] = {}
        self.outcomes: dict[str, HostOutcome] = {}

    def _emit(self, host: str, stream: str, line: bytes) -> None:
        target = self.err if stream == "stderr" else self.out
        target.write(self.style.prefix(f"{host}: ").encode() + line)
        target.flush()

    def output(self, host: str, stream: str, data: bytes) -> None:
        with self._lock:
            *lines, rest = (self._partial.pop((host, stream), b"") + data).split(b"\n")
            for line in lines:
                self._emit(host, stream, line + b"\n")
            if len(rest) > LIVE_LINE_LIMIT:
                self._emit(host, stream, rest + b"\n")
                rest = b""
            if rest:
                self._partial[(host, stream)] = rest

    def done(self, outcome: HostOutcome) -> None:
        with self._lock:
            for stream in ("stdout", "stderr"):
                rest = self._partial.pop((outcome.host, stream), b"")
                if rest:
                    self._emit(outcome.host, stream, rest + b"\n")
            self.outcomes[outcome.host] = outcome
            _report_error(self.err, outcome, self.style)

    def finish(self) -> None:
        self.out.flush()
        self.err.flush()


class JsonHosts:
    """One JSON object per host per line, in host order: host, exit, signal, stdout,
    stderr, seconds (and error). Output is decoded as UTF-8 with U+FFFD for bad bytes."""

    def __init__(self, hosts: Sequence[str], out: IO[bytes]) -> None:
        self.hosts = list(hosts)  # the order records are written in
        self.out = out
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], bytearray] = {}
        self.outcomes: dict[str, HostOutcome] = {}

    def output(self, host: str, stream: str, data: bytes) -> None:
        with self._lock:
            self._data.setdefault((host, stream), bytearray()).extend(data)

    def done(self, outcome: HostOutcome) -> None:
        with self._lock:
            self.outcomes[outcome.host] = outcome

    def finish(self) -> None:
        for host in self.hosts:
            outcome = self.outcomes.get(host)
            if outcome is None:
                continue
            record: dict[str, Any] = {
                "host": host,
                "exit": outcome.exit,
                "signal": outcome.signal or None,
                "stdout": bytes(self._data.pop((host, "stdout"), b"")).decode("utf-8", "replace"),
                "stderr": bytes(self._data.pop((host, "stderr"), b"")).decode("utf-8", "replace"),
                "seconds": round(outcome.seconds, 6),
            }
            if outcome.error:
                record["error"] = outcome.error
            self.out.write(json.dumps(record).encode() + b"\n")
        self.out.flush()


def make_sink(kind: str, hosts: Sequence[str], out: IO[bytes], err: IO[bytes], style: Style) -> HostSink:
    """``json``, ``live``, or ``grouped`` (raw when there is one host)."""
    if kind == "json":
        return JsonHosts(hosts, out)
    if kind == "live":
        return LiveHosts(out, err, style)
    if len(hosts) == 1:
        return RawHost(out, err, style)
    return GroupedHosts(hosts, out, err, style)


def status_lines(outcomes: Sequence[HostOutcome], style: Style) -> list[str]:
    """One line per distinct non-zero exit, hosts folded: ``mpish: host[1-2]: exit code 1``."""
    by_text: dict[str, list[str]] = {}
    for outcome in outcomes:
        if outcome.error or not outcome.exit:
            continue  # errors were reported as they happened
        text = f"killed by {signal_name(outcome.signal)}" if outcome.signal else f"exit code {outcome.exit}"
        if outcome.timed_out:
            text = f"timed out ({text})"
        by_text.setdefault(text, []).append(outcome.host)
    return [style.error(f"mpish: {fold_hosts(hosts)}: {text}") for text, hosts in by_text.items()]


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SshShellOptions:
    """What ``mpish ssh`` was asked (built by cli.py from its arguments)."""

    hosts: str
    command: str | None = None
    fanout: int = DEFAULT_FANOUT
    json: bool = False
    verbose: bool = False
    ssh_options: tuple[str, ...] = ()
    python: tuple[str, ...] = ("python3",)  # the remote interpreter's argv words
    timeout: float | None = None
    connect_timeout: float = 30.0


def split_ssh_options(values: Sequence[str]) -> tuple[str, ...]:
    """``-o`` values as ssh words: each value is split like a shell would (``-o '-p 2222'``)."""
    return tuple(word for value in values for word in shlex.split(value))


def _start(options: SshShellOptions, hosts: list[str]) -> Any:
    from mpish.shell.ssh_session import start_ssh_session

    return start_ssh_session(
        hosts,
        python=options.python,
        ssh_options=options.ssh_options,
        connect_timeout=options.connect_timeout,
        fanout=options.fanout,
    )


class RankSink:
    """The Console's OutputSink (ranks) feeding a HostSink (hosts): rank r is host r."""

    def __init__(self, sink: HostSink, session: Any) -> None:
        self.sink = sink
        self.session = session
        self.outcomes: dict[str, HostOutcome] = {}

    def output(self, rank: int, stream: int, data: bytes) -> None:
        from mpish.shell import protocol as p

        host = self.session.peers[rank].host
        self.sink.output(host, "stderr" if stream == p.STDERR else "stdout", data)

    def done(self, result: Result) -> None:
        peer = self.session.peers[result.rank]
        if result.error == "rank lost":
            outcome = HostOutcome(peer.host, FAILED, 0, result.seconds, peer.lost or "connection lost")
        else:
            outcome = HostOutcome(peer.host, result.exit, result.signal, result.seconds,
                                  timed_out=result.timed_out)
        self.outcomes[peer.host] = outcome
        self.sink.done(outcome)

    def finish(self) -> None:
        self.sink.finish()


def _report_failed(session: Any, hosts: list[str], sink: HostSink) -> list[HostOutcome]:
    """Hosts that could not join (ssh or the remote failed), in NodeSet order."""
    failed = session.failed
    outcomes = [HostOutcome(host, FAILED, 0, 0.0, failed[host]) for host in hosts if host in failed]
    for outcome in outcomes:
        sink.done(outcome)
    return outcomes


def run_command(options: SshShellOptions, out: IO[bytes], err: IO[bytes]) -> int:
    """``-c``: run once everywhere; return the largest exit status (255 for a failed host)."""
    from mpish.shell.console import Console
    from mpish.shell.interactive import InterruptKeys

    assert options.command is not None
    hosts = expand_hosts(options.hosts)
    kind = "json" if options.json else "live" if options.verbose else "grouped"
    sink = make_sink(kind, hosts, out, err, Style.for_stream(out))
    session = _start(options, hosts)
    outcomes = _report_failed(session, hosts, sink)
    if not session.peers:
        sink.finish()
        session.finish()
    else:
        console = Console(session)
        console.timeout = options.timeout or 0.0
        ranks = RankSink(sink, session)
        try:
            with InterruptKeys() as keys:
                console.interrupt_key = keys.pressed
                console.run(options.command, list(session.peers), ranks)
        finally:
            console.close()
        outcomes += list(ranks.outcomes.values())
    order = {host: i for i, host in enumerate(hosts)}
    outcomes.sort(key=lambda o: order.get(o.host, 0))
    if not options.json:
        for line in status_lines(outcomes, Style.for_stream(err)):
            err.write(line.encode() + b"\n")
        err.flush()
    return max((o.exit for o in outcomes), default=0)


# --- the interactive console ----------------------------------------------------------------


def run_console(options: SshShellOptions, out: IO[bytes], err: IO[bytes]) -> int:
    """The interactive console (the MPI shell's Repl on ssh pipes); 255 if no host joined."""
    from mpish.shell.console import Console
    from mpish.shell.ssh_session import SshRepl

    hosts = expand_hosts(options.hosts)
    style = Style.for_stream(err)
    session = _start(options, hosts)
    for host in hosts:
        if host in session.failed:
            _report_error(err, HostOutcome(host, FAILED, 0, 0.0, session.failed[host]), style)
    if not session.peers:
        session.finish()
        return FAILED
    console = Console(session)
    console.timeout = options.timeout or 0.0
    try:
        repl = SshRepl(console, verbose=int(options.verbose))
        repl.sink_kind = "json" if options.json else repl.mode
        return repl.loop()
    finally:
        console.close()


def main(options: SshShellOptions) -> int:
    """``mpish ssh``: ``-c`` runs once; without it, the console."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        if options.command is not None:
            return run_command(options, out, err)
        return run_console(options, out, err)
    except KeyboardInterrupt:  # while connecting (later, Ctrl-C interrupts the command)
        err.write(b"mpish: interrupted\n")
        err.flush()
        return 130
