"""``mpish ssh [HOSTS] [options] [COMMAND ...]``: a command on many hosts over ssh, clush-style.

Theory of operation
-------------------
The hosts are chosen as clush chooses them (:mod:`mpish.shell.nodes`: HOSTS or ``-w``,
``-x``, ``-g``, ``-X``, ``-a``, ``--hostfile``; ClusterShell node sets and the user's
group configuration), the command is ``-c`` or the words after the options. Both modes
run on the MPI shell's machinery over ssh pipes (:mod:`mpish.shell.ssh_session`): one
``ssh HOST python3 -c STUB`` per host, host ``i`` in NodeSet order being rank ``i``, each
running the unchanged :class:`~mpish.shell.server.ShellServer` (one long-lived bash per
host: ``cd``, variables, functions, aliases and options persist), whose code the console
sends over ssh's stdin (:mod:`mpish.shell.remote`): the hosts need only Python 3.10+ and
bash. Output arrives per rank and goes to the MPI shell's sinks (:mod:`mpish.shell.grouping`)
naming servers by host (:class:`~mpish.shell.names.HostNames`):

* grouped (default, ``clush -b``): each host's stdout and stderr are spooled (memory up to
  1 MiB, then disk) with a SHA-256; hosts with identical stdout are printed once under
  their node set, identical stderr lines once prefixed with theirs. One host: its output
  is streamed as is, as ssh would. ``-B``, ``-L``, ``-N``, ``-q``, ``--diff``: see
  :mod:`mpish.shell.options`.
* live (``-v``): lines as they come, prefixed ``host: ``.
* JSON (``--json``): one object per host per line, the MPI shell's fields: rank (the
  host's place in the node set), host, exit, signal, stdout, stderr, seconds, timed_out,
  and ``error`` only when ssh or the remote side failed.

The exit status is the largest remote one (``clush -S``; ``--no-maxrc``: 0, clush's
default); a command killed by signal N counts as 128+N, one that reached ``-u`` as 255
("command timeout", as clush), and a host that could not run it
(unreachable, authentication refused, Python or mpish missing, lost during the command)
is reported as ``host: <message>`` (identical reasons folded under one node set) and
counts as 255, as with ssh. Under ``-c``, at most ``-f`` ssh connections (default 64, as
clush) are open at once: a host beyond the first ``-f`` is connected when one is done, and
each is hung up as soon as its command is (:mod:`mpish.shell.turns`); at the console, which
keeps every host connected, ``-f`` bounds the hosts being connected and running at once.
``-t``: ssh's ConnectTimeout (default 10 s, as clush); ``-u``: the command timeout.

Without ``-c``, the MPI shell's console (:class:`~mpish.shell.ssh_repl.SshRepl`):
prompt ``[hosts] cwd#>``, targets ``@host2`` / ``@node[1-2]``, ``:put``/``:get``,
Ctrl-C interrupts the running command on every host and the session goes on;
``:quit``, ``exit`` or Ctrl-D end it with status 0.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from mpish.shell.names import FAILED, HostNames, Result, fold_reasons, status_of
from mpish.shell.nodes import HostsError as HostsError
from mpish.shell.nodes import Selection, number_hosts
from mpish.shell.nodes import expand_hosts as expand_hosts
from mpish.shell.options import CopyRequest, OutputMode, exit_status, refused_sources, stdin_to_send
from mpish.shell.ranks import fold_hosts as fold_hosts
from mpish.transport.ssh_ciphers import prefetch
from mpish.wire.message import Frozen, frozen

DEFAULT_FANOUT = 64  # clush's default
DEFAULT_CONNECT_TIMEOUT = 10.0  # clush's default connect_timeout


# --- running ----------------------------------------------------------------------------


@frozen
class SshShellOptions(Frozen):
    """What ``mpish ssh`` was asked (built by cli.py from its arguments)."""

    selection: Selection
    command: str | None = None
    commands_from: str | None = None  # -C FILE ('-': stdin): the console's lines, without prompts
    copy: CopyRequest | None = None  # --copy/--rcopy
    fanout: int = DEFAULT_FANOUT
    mode: OutputMode = OutputMode()  # shared: it is immutable
    maxrc: bool = True  # -S (the default); False: --no-maxrc, clush's default
    nostdin: bool = False
    ssh_options: tuple[str, ...] = ()
    python: tuple[str, ...] = ("python3",)  # the remote interpreter's argv words
    timeout: float | None = None  # -u
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT  # -t
    tty: bool = False  # -c in a pty of the one host (attach.py)
    color: str = "auto"  # --color (grouping.set_color, once the ssh processes are started)


def split_ssh_options(values: Sequence[str]) -> tuple[str, ...]:
    """``-o`` values as ssh words: each value is split like a shell would (``-o '-p 2222'``)."""
    return tuple(word for value in values for word in shlex.split(value))


def _start(options: SshShellOptions, hosts: dict[int, str], named: int,
           first: Callable[[], bytes] | None = None, report_losses: bool = True,
           rolling: bool = False) -> Any:
    """Connect to the hosts; the output machinery is loaded after the ssh processes have
    started (it costs the console ~20 ms of imports, while each ssh's handshake takes longer).
    ``hosts``: number -> host (:func:`number_hosts`: -x leaves numbers vacant), of ``named`` hosts
    (every server is told it, as MPISH_SIZE - 1); ``first``: the message each host gets right behind its code
    (``-c``'s Run); ``rolling``: the first ``-f`` hosts now, each other one in its turn (ssh_session.py)."""
    from mpish.shell.ssh_session import RECONNECT_HINT, start_ssh_session

    session = start_ssh_session(
        hosts,
        size=named + 1,
        python=options.python,
        ssh_options=options.ssh_options,
        # -u bounds a host's whole turn, its connection too, as clush's (a clush user's review)
        connect_timeout=min(options.connect_timeout, options.timeout or math.inf),
        fanout=options.fanout,
        first=first,
        report_losses=report_losses,
        rolling=rolling,
        again="Run it again." if options.command is not None or options.copy is not None else RECONNECT_HINT,
    )
    from mpish.shell.grouping import set_color

    set_color(options.color)
    return session


def advice(why: str, host: str, options: SshShellOptions) -> str:
    """A host's failure in ``mpish ssh``'s words: ``--python``, the user's ``-o`` in the ``ssh
    HOST true`` it suggests, and never the start-up code sent with ``-c`` (an option of
    ``--python`` that takes a value, ``-X`` or ``-W``, took it for its own)."""
    from mpish.shell.ssh_session import cli_advice
    from mpish.transport import ship

    text = cli_advice(why, host, python_flag=True, ssh_options=options.ssh_options)
    text = text.replace("--python (mpish ssh --python)", "--python")
    if ship.stub()[:24] in text:
        text = (f"the remote side could not start: --python {shlex.join(options.python)} did not run the "
                "start-up code given to it with -c (give an interpreter, and only options without a value)")
    return text


def report_failed(session: Any, hosts: Sequence[str], err: IO[bytes], options: SshShellOptions) -> None:
    """Hosts that never joined: identical reasons folded under one node set (``fold_reasons``)."""
    from mpish.shell.grouping import Style

    failed = {host: advice(session.failed[host], host, options) for host in hosts if host in session.failed}
    style = Style.for_stream(err)
    for line in fold_reasons(failed):
        err.write(style.error(line).encode() + b"\n")
    err.flush()


def host_names(hosts: dict[int, str], session: Any) -> HostNames:
    """The sinks' names for ``mpish ssh``: host number -> host (:func:`number_hosts`)."""
    return HostNames(dict(hosts), session.peers)


def run_command(options: SshShellOptions, out: IO[bytes], err: IO[bytes]) -> int:
    """``-c``: run once everywhere; return the largest exit status (255 for a failed host),
    or 0 with ``--no-maxrc``."""
    assert options.command is not None
    command = options.command
    hosts, named = number_hosts(options.selection)
    stdin: list[int | None] = []

    def first_run() -> bytes:
        """The Run, sent with each host's code: the command starts in ssh's first round trip."""
        from mpish.shell import protocol as p
        from mpish.shell.console import FIRST_RUN_ID

        stdin.append(stdin_to_send(options.nostdin))
        return p.CODEC.encode(p.Run(FIRST_RUN_ID, command, options.timeout or 0.0, stdin[0] is not None))

    # rolling: the first -f hosts start the command with their code and greet the console (no
    # barrier on the slowest login); with more hosts than -f, at most -f connections are open at
    # once (clush's fan-out), each host connected in its turn, given stdin from its first byte
    # (spool.py), and hung up when done. ssh first: the output machinery loads meanwhile.
    session = _start(options, hosts, named, first_run, report_losses=options.mode.kind == "json",
                     rolling=True)
    session.advise = lambda why, host: advice(why, host, options)
    from mpish.shell.console import Console
    from mpish.shell.grouping import (
        STDOUT_CLOSED,
        GroupedSink,
        LiveSink,
        PipeGuard,
        RawSink,
        Style,
        make_sink,
        status_lines,
    )
    from mpish.shell.keyboard import InterruptKeys, terminate_as_interrupt
    from mpish.shell.outfiles import failed, tee

    names = host_names(hosts, session)
    sink = make_sink(options.mode, len(hosts), out, err, Style.for_stream(out), names)
    fed = tee(sink, options.mode, names, err)  # --outdir, --errdir: a file per host too
    if session.failed and options.mode.kind != "json":
        report_failed(session, list(hosts.values()), err, options)
    if isinstance(sink, (GroupedSink, RawSink, LiveSink)):  # not --json's (which loads json, tempfile)
        sink.reported.update(session.failed)  # printed above, folded
        sink.fold_errors = options.mode.kind != "live"  # lost hosts folded at the end; -v: as they come
        session.report_losses = False
    for rank, host in hosts.items():
        if host in session.failed:  # could not join: its result, in NodeSet order
            fed.done(Result(rank, host, FAILED, error=advice(session.failed[host], host, options)))
    terminated: list[int] = []
    if not session.peers and not session.later:
        fed.finish()
        session.finish()
    else:
        console = Console(session)
        guard = PipeGuard(fed)
        console.describe = names.label  # "interrupting host[1-2]", as the console says it
        console.timeout = options.timeout or 0.0
        try:
            with InterruptKeys() as keys, terminate_as_interrupt() as terminated:
                console.interrupt_key = keys.pressed
                console.terminated = terminated
                if isinstance(sink, GroupedSink):  # Ctrl-C also ends a long display of what was gathered
                    sink.stop = keys.pressed
                console.run(command, [*session.peers, *session.later], guard, stdin=stdin[0] if stdin else
                            stdin_to_send(options.nostdin), fanout=options.fanout,
                            sent=session.sent_first, early=session.early)
        finally:
            console.close()
        if guard.closed:  # stdout's reader left (| head): the command was interrupted; quiet
            if guard.failure_line():  # or it could not be written to (a full disk)
                with contextlib.suppress(OSError):  # stderr may be the full one
                    err.write(f"mpish ssh: {guard.failure_line()}\n".encode())
                    err.flush()
                return 1
            return STDOUT_CLOSED
    results = [sink.results[rank] for rank in sorted(sink.results)]
    if isinstance(sink, (GroupedSink, RawSink, LiveSink)):
        sink.report_folded()
    if options.mode.kind != "json":
        for line in status_lines(results, Style.for_stream(err), sink.names, quiet=options.mode.quiet):
            err.write(line.encode() + b"\n")
        err.flush()
    if terminated:
        return 128 + terminated[0]
    status = exit_status([status_of(r) for r in results], options.maxrc, any(r.interrupted for r in results))
    return max(status, 1) if failed(fed) else status  # a file of --outdir is missing


def run_tty(options: SshShellOptions, err: IO[bytes]) -> int:
    """``-c COMMAND --tty`` on one host: the command in a pty there, as ``ssh -t``."""
    from mpish.shell.attach import AttachError, one_shot
    from mpish.shell.console import Console

    assert options.command is not None
    hosts, named = number_hosts(options.selection)
    if len(hosts) != 1:
        err.write(f"mpish ssh: --tty runs the command on ONE host, not {len(hosts)}\n".encode())
        return 2
    session = _start(options, hosts, named)
    if not session.peers:
        report_failed(session, list(hosts.values()), err, options)
        session.finish()
        return FAILED
    console = Console(session)
    console.describe = lambda ranks: next(iter(hosts.values()))
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
    from mpish.shell.readers import PlainReader
    from mpish.shell.ssh_repl import SshRepl

    path = options.commands_from if options.copy is None else None
    try:  # -C: before any host is reached, as a bad -c would be
        stream = None if path is None else sys.stdin if path == "-" else open(  # noqa: SIM115
            path, encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        err.write(f"mpish: cannot read commands from {path}: {exc.strerror}\n".encode())
        return 2
    refused = refused_sources(options.copy) if options.copy is not None else []
    if refused:  # a --copy source missing here: a usage error, before any host is reached
        err.write("".join(f"mpish: {line}\n" for line in refused).encode())
        return 2
    hosts, named = number_hosts(options.selection)
    # --copy/--rcopy: at most -f connected at once, none awaited here (copying.copy_files: a
    # Ctrl-C while a login hangs ends the copy at once, and names what was not sent)
    session = _start(options, hosts, named, rolling=options.copy is not None)
    session.advise = lambda why, host: advice(why, host, options)
    report_failed(session, list(hosts.values()), err, options)
    if not session.peers and not session.later:
        session.finish()
        return FAILED
    if options.copy is None:  # the console, and its lines from a file: hosts down now may come up
        session.keep_unreached(hosts)
    console = Console(session)
    console.timeout = options.timeout or 0.0
    try:
        if options.copy is not None:  # --copy/--rcopy: :put -r/:get -r of each source (console_put_get)
            from mpish.shell.copying import copy_files
            from mpish.shell.keyboard import terminate_as_interrupt
            from mpish.shell.session import TERMINATION_SIGNALS

            repl = SshRepl(console, output=options.mode, fanout=options.fanout)
            every = frozenset(repl.targets | set(session.later))  # later: connected in their turn
            # SIGTERM, SIGHUP: as a Ctrl-C (copying.py), part files removed; then 128+N
            with terminate_as_interrupt(TERMINATION_SIGNALS) as terminated:
                console.terminated = terminated
                try:
                    status = copy_files(console, every, options.copy, repl.keys, repl.err, options.fanout)
                except KeyboardInterrupt:  # the signal came between the copy's own looks
                    if not terminated:
                        raise
            if terminated:
                return 128 + terminated[0]
            return max(status, 1 if session.failed else 0)  # a host never reached has no copy
        if stream is None:
            status = SshRepl(console, output=options.mode, fanout=options.fanout).loop()
        else:
            with stream:
                repl = SshRepl(console, reader=PlainReader(stream, None), output=options.mode,
                               fanout=options.fanout, script=path)  # a failed :targets ends it
                status = repl.loop()  # exit N in the file: N, as a bash script would; else the last status
    finally:
        console.close()
    # commands from a file or a pipe: a host never reached, or lost and not brought back, ran
    # nothing: 255, as under -c (clush -S), not the last line's status (a cron job read 0 while
    # a node was down); at a terminal, the user was told and `exit` ends as typed
    scripted = stream is not None or not sys.stdin.isatty()
    missed = console.lost or set(session.failed) - {peer.host for peer in session.peers.values()}
    return max(status, FAILED) if scripted and missed and options.maxrc else status


def main(options: SshShellOptions) -> int:
    """``mpish ssh``: ``-c`` runs once; without it, the console."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    prefetch("ssh", options.ssh_options)  # ssh's cipher order, checked while the rest loads
    try:
        if options.command is not None and options.tty:
            return run_tty(options, err)
        if options.command is not None:
            return run_command(options, out, err)
        return run_console(options, out, err)
    except HostsError as exc:  # a usage error, as clush's "No node to run on" (status 2)
        err.write(f"mpish: {exc}\n".encode())
        return 2
    except KeyboardInterrupt:  # while connecting (later, Ctrl-C interrupts the command)
        err.write(b"mpish: interrupted\n")
        err.flush()
        return 130
