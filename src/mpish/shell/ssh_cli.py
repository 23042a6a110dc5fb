"""``mpish ssh HOSTS [-c COMMAND]``: a command on many hosts over ssh, clush-style.

Theory of operation
-------------------
HOSTS is a ClusterShell node set (``node[1-8],login1``), expanded with
:class:`ClusterShell.NodeSet.NodeSet`. Both modes run on the MPI shell's machinery over
ssh pipes (:mod:`mpish.shell.ssh_session`): one ``ssh HOST python3 -c STUB`` per host,
host ``i`` in NodeSet order being rank ``i``, each running the unchanged
:class:`~mpish.shell.server.ShellServer` (one long-lived bash per host: ``cd``,
variables, functions, aliases and options persist), whose code the console sends over
ssh's stdin (:mod:`mpish.shell.remote`): the hosts need only Python 3.10+ and bash.
Output arrives per rank and goes to the MPI shell's sinks (:mod:`mpish.shell.grouping`)
naming servers by host (:class:`~mpish.shell.grouping.HostNames`):

* grouped (default, ``clush -b``): each host's stdout and stderr are spooled (memory up to
  1 MiB, then disk) with a SHA-256; hosts with identical outputs are printed once under
  their node set. One host: its output is streamed as is, as ssh would.
* live (``-v``): lines as they come, prefixed ``host: ``.
* JSON (``--json``): one object per host per line, the MPI shell's fields: rank (the
  host's place in the node set), host, exit, signal, stdout, stderr, seconds, timed_out,
  and ``error`` only when ssh or the remote side failed.

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

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from mpish.shell.grouping import FAILED, HostNames, Result, Style, make_sink, report_error, status_lines
from mpish.shell.grouping import fold_hosts as fold_hosts
from mpish.wire.errors import MpishError

DEFAULT_FANOUT = 64  # clush's default


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


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SshShellOptions:
    """What ``mpish ssh`` was asked (built by cli.py from its arguments)."""

    hosts: str
    command: str | None = None
    fanout: int = DEFAULT_FANOUT
    json: bool = False
    nostdin: bool = False
    verbose: bool = False
    ssh_options: tuple[str, ...] = ()
    python: tuple[str, ...] = ("python3",)  # the remote interpreter's argv words
    timeout: float | None = None
    connect_timeout: float = 30.0
    tty: bool = False  # -c in a pty of the one host (attach.py)


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


def host_names(hosts: Sequence[str], session: Any) -> HostNames:
    """The sinks' names for ``mpish ssh``: host ``i`` of the node set is rank ``i + 1``."""
    return HostNames(dict(enumerate(hosts, 1)), session.peers)


def run_command(options: SshShellOptions, out: IO[bytes], err: IO[bytes]) -> int:
    """``-c``: run once everywhere; return the largest exit status (255 for a failed host)."""
    from mpish.shell.app import stdin_to_send
    from mpish.shell.console import Console
    from mpish.shell.interactive import InterruptKeys

    assert options.command is not None
    hosts = expand_hosts(options.hosts)
    kind = "json" if options.json else "live" if options.verbose else "grouped"
    session = _start(options, hosts)
    sink = make_sink(kind, len(hosts), out, err, Style.for_stream(out), host_names(hosts, session))
    for rank, host in enumerate(hosts, 1):
        if host in session.failed:  # could not join: reported now, in NodeSet order
            sink.done(Result(rank, host, FAILED, error=session.failed[host]))
    if not session.peers:
        sink.finish()
        session.finish()
    else:
        console = Console(session)
        console.timeout = options.timeout or 0.0
        try:
            with InterruptKeys() as keys:
                console.interrupt_key = keys.pressed
                console.run(options.command, list(session.peers), sink,
                            stdin=stdin_to_send(options.nostdin))
        finally:
            console.close()
    results = [sink.results[rank] for rank in sorted(sink.results)]
    if not options.json:
        for line in status_lines(results, Style.for_stream(err), sink.names):
            err.write(line.encode() + b"\n")
        err.flush()
    return max((r.exit for r in results), default=0)


def run_tty(options: SshShellOptions, err: IO[bytes]) -> int:
    """``-c COMMAND --tty`` on one host: the command in a pty there, as ``ssh -t``."""
    from mpish.shell.attach import AttachError, one_shot
    from mpish.shell.console import Console

    assert options.command is not None
    hosts = expand_hosts(options.hosts)
    if len(hosts) != 1:
        err.write(f"mpish ssh: --tty runs the command on ONE host, not {len(hosts)}\n".encode())
        return 2
    session = _start(options, hosts)
    if not session.peers:
        report_error(err, hosts[0], session.failed.get(hosts[0], "did not join"), Style.for_stream(err))
        session.finish()
        return FAILED
    console = Console(session)
    console.describe = lambda ranks: hosts[0]
    try:
        return one_shot(console, list(session.peers), options.command, sys.stderr)
    except AttachError as exc:
        err.write(f"mpish ssh: {exc}\n".encode())
        return 2
    finally:
        console.close()


# --- the interactive console ----------------------------------------------------------------


def run_console(options: SshShellOptions, out: IO[bytes], err: IO[bytes]) -> int:
    """The interactive console (the MPI shell's Repl on ssh pipes); 255 if no host joined."""
    from mpish.shell.console import Console
    from mpish.shell.ssh_session import SshRepl

    hosts = expand_hosts(options.hosts)
    session = _start(options, hosts)
    for host in hosts:
        if host in session.failed:
            report_error(err, host, session.failed[host], Style.for_stream(err))
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
        if options.command is not None and options.tty:
            return run_tty(options, err)
        if options.command is not None:
            return run_command(options, out, err)
        return run_console(options, out, err)
    except KeyboardInterrupt:  # while connecting (later, Ctrl-C interrupts the command)
        err.write(b"mpish: interrupted\n")
        err.flush()
        return 130
