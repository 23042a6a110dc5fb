"""``mpish ssh HOSTS [-c COMMAND]``: a command on many hosts over ssh, clush-style.

Theory of operation
-------------------
HOSTS is a ClusterShell node set (``node[1-8],login1``), expanded with
:class:`ClusterShell.NodeSet.NodeSet`. With ``-c``, :meth:`Group.each_once` connects to
each host, runs the command with ``/bin/sh -c`` through the agent, and closes, at most
``-f`` hosts at a time (clush's fan-out model). Output arrives as the agent's Output
frames and goes to one sink:

* grouped (default, ``clush -b``): each host's stdout and stderr are spooled (memory up to
  1 MiB, then disk) with a SHA-256; hosts with identical outputs are printed once under
  their node set. One host: its output is streamed as is, as ssh would.
* live (``-v``): lines as they come, prefixed ``host: ``.
* JSON (``--json``): one object per host per line: host, exit, signal, stdout, stderr,
  seconds (the MPI shell's fields minus rank, plus host), and ``error`` when ssh or the
  agent failed.

The exit status is the largest remote one (``clush -S``); a command killed by signal N
counts as 128+N, and a host that could not run it (unreachable, authentication refused,
Python missing) is reported as ``host: <message>`` and counts as 255, as with ssh.

Without ``-c``, a console keeps one agent per host and reads commands at the prompt
``[hosts] cwd#>``. Each command runs through :func:`mpish.agent.run_in_session`, which
keeps each host's working directory and exported environment between commands (a state
file written by an EXIT trap; see there). ``:quit``, ``exit`` or Ctrl-D end it; Ctrl-C
during a command drops the connections that ran it and reconnects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from mpish.shell.grouping import Style, signal_name
from mpish.wire.errors import MpishError

from .group import Group, HostResult
from .remote import Remote

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
    error: str = ""  # set when ssh or the agent failed (exit is then 255)


def outcome_of(result: HostResult) -> HostOutcome:
    """A Group result (value: the shell status, negative for a signal) as a HostOutcome."""
    if result.error is not None:
        message = str(result.error)
        prefix = f"{result.host}: "
        if message.startswith(prefix):  # the ssh errors name their host already
            message = message[len(prefix) :]
        return HostOutcome(result.host, FAILED, 0, result.seconds, message or type(result.error).__name__)
    status, seconds = result.value[:2]  # (shell status, seconds the command took, ...)
    if status < 0:
        return HostOutcome(result.host, 128 - status, -status, seconds)
    return HostOutcome(result.host, status, 0, seconds)


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


def _group(options: SshShellOptions, hosts: list[str], sink: HostSink) -> Group:
    return Group(
        hosts,
        fanout=options.fanout,
        on_output=sink.output,
        python=list(options.python),
        ssh_options=options.ssh_options,
        timeout=options.connect_timeout,
    )


def run_command(options: SshShellOptions, out: IO[bytes], err: IO[bytes]) -> int:
    """``-c``: run once everywhere; return the largest exit status (255 for a failed host)."""
    assert options.command is not None
    command, timeout = options.command, options.timeout
    hosts = expand_hosts(options.hosts)
    kind = "json" if options.json else "live" if options.verbose else "grouped"
    sink = make_sink(kind, hosts, out, err, Style.for_stream(out))

    def work(remote: Remote) -> tuple[int, float]:
        start = time.monotonic()
        status = remote.shell(command, timeout=timeout)
        return status, time.monotonic() - start

    results = _group(options, hosts, sink).each_once(work, on_done=lambda r: sink.done(outcome_of(r)))
    sink.finish()
    outcomes = [outcome_of(results[host]) for host in hosts]
    if not options.json:
        for line in status_lines(outcomes, Style.for_stream(err)):
            err.write(line.encode() + b"\n")
        err.flush()
    return max((o.exit for o in outcomes), default=0)


# --- the interactive console ----------------------------------------------------------------

QUIT_WORDS = frozenset({":quit", ":q", "exit"})
SESSION_FUNCTION = "mpish.agent:run_in_session"


class _Router:
    """The Group's output callback: forwards to the sink of the command running now."""

    def __init__(self) -> None:
        self.sink: HostSink | None = None

    def output(self, host: str, stream: str, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.output(host, stream, data)


def _prompt(hosts: Sequence[str], cwds: dict[str, str]) -> str:
    places = {cwds.get(h, "?") for h in hosts}
    where = places.pop() if len(places) == 1 else "*"
    return f"[{fold_hosts(hosts) if hosts else 'no host'}] {where}#> "


def run_console(options: SshShellOptions, out: IO[bytes], err: IO[bytes], read_line: Any = input) -> int:
    """The interactive loop; returns 0, or 255 when no host could be reached."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    hosts = expand_hosts(options.hosts)
    style = Style.for_stream(err)
    router = _Router()
    group = Group(
        hosts,
        fanout=options.fanout,
        on_output=router.output,
        python=list(options.python),
        ssh_options=options.ssh_options,
        timeout=options.connect_timeout,
    )
    try:
        live = _connect_all(group, err, style)
        if not live:
            return FAILED
        found = group.each(lambda r: r.call_data("os.getcwd"), live)
        cwds = {h: str(r.value) for h, r in found.items() if r.ok}
        while True:
            try:
                line = read_line(_prompt(live, cwds))
            except EOFError:
                out.write(b"\n")
                out.flush()
                return 0
            except KeyboardInterrupt:
                out.write(b"\n")
                out.flush()
                continue
            command = line.strip()
            if not command:
                continue
            if command in QUIT_WORDS:
                return 0
            kind = "json" if options.json else "live" if options.verbose else "grouped"
            sink = router.sink = make_sink(kind, live, out, err, Style.for_stream(out))
            try:
                results = group.each(_session_call(command, options.timeout), live)
            except KeyboardInterrupt:
                router.sink = None
                notice = "mpish: interrupted; reconnecting (cwd and environment start afresh)"
                err.write(style.error(notice).encode() + b"\n")
                group.close()
                live = _connect_all(group, err, style)
                cwds = {}
                continue
            outcomes = []
            for host in live:
                outcome = outcome_of(results[host])
                outcomes.append(outcome)
                sink.done(outcome)
                value = results[host].value
                if results[host].ok:
                    cwds[host] = value[2]
            sink.finish()
            router.sink = None
            if not options.json:
                for text in status_lines(outcomes, style):
                    err.write(text.encode() + b"\n")
            err.flush()
            live = [h for h in live if results[h].ok or not _connection_lost(results[h])]
    finally:
        group.close()


def _session_call(command: str, timeout: float | None) -> Any:
    def work(remote: Remote) -> tuple[int, float, str]:
        start = time.monotonic()
        status, cwd = remote.invoke_data(SESSION_FUNCTION, (command,), timeout=timeout)
        return int(status), time.monotonic() - start, str(cwd)

    return work


def _connection_lost(result: HostResult) -> bool:
    from mpish.wire.errors import TransportError

    return isinstance(result.error, TransportError)


def _connect_all(group: Group, err: IO[bytes], style: Style) -> list[str]:
    """Connect every host not connected yet; report failures; the hosts that are up."""
    results = group.connect()
    for result in results.values():
        if result.error is not None:
            _report_error(err, outcome_of(result), style)
    return [h for h in group.hosts if h in group.remotes]


def main(options: SshShellOptions) -> int:
    """``mpish ssh``: ``-c`` runs once; without it, the console."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    if options.command is not None:
        return run_command(options, out, err)
    return run_console(options, out, err)
