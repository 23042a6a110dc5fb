"""``mpish`` without a subcommand: pick the rank's role, then run ``-c`` or the console."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Any

from mpish import report
from mpish.wire.errors import MpishError, TransportBroken

from .grouping import (
    STDOUT_CLOSED,
    GroupedSink,
    PipeGuard,
    Style,
    make_sink,
    set_color,
    status_lines,
)
from .options import launcher_rank, make_directories, stdin_to_send
from .outfiles import failed, tee
from .session import Terminated
from .style import COLOR_CHOICES


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options of the shell itself, beyond -n, -c, --json and -v (cli.py owns those).

    Targets, as clush's node selection read for ranks: ``-w`` ranks or hosts (``@1-3,7``,
    ``node2``), ``-x`` the same left out, ``-g GROUP`` the ranks on the hosts of a
    ClusterShell group. ``-t`` bounds each start-up step per server, as the connect timeout
    does for clush (``MPISH_HANDSHAKE_TIMEOUT``); ``-u`` is the command timeout.
    """
    from .options import add_copy_options, add_output_options, add_timeouts

    add_timeouts(parser, "connect timeout: seconds each server may take per start-up step "
                 "(default 5, or MPISH_HANDSHAKE_TIMEOUT)", None)
    parser.add_argument("-w", "--targets", default="@all", metavar="TARGETS",
                        help="target ranks or hosts, e.g. @1-3,7 or node2 (default @all)")
    parser.add_argument("-x", dest="exclude", action="append", default=[], metavar="TARGETS",
                        help="ranks or hosts to leave out (repeatable)")
    parser.add_argument("-g", "--group", dest="groups", action="append", default=[], metavar="GROUP",
                        help="the ranks on the hosts of a ClusterShell group (repeatable)")
    parser.add_argument("-X", dest="exclude_groups", action="append", default=[], metavar="GROUP",
                        help="leave out the ranks on the hosts of a group (repeatable)")
    parser.add_argument("-a", "--all", action="store_true", help="every rank (as @all; clush's -a)")
    parser.add_argument("--hostfile", "--machinefile", dest="hostfiles", action="append", default=[],
                        metavar="FILE", help="the ranks on the hosts of a file, one node set per line")
    parser.add_argument("--label", choices=("rank", "host"), default="rank",
                        help="name servers in headers and prefixes by rank (@1-3, the default) or host")
    add_output_options(parser)
    parser.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                        help="colour the output: auto (a terminal, no NO_COLOR; never under a "
                        "launcher such as mpiexec or srun), always or never")
    parser.add_argument("--nostdin", action="store_true",
                        help="-c: do not send stdin to the targets (by default, unless it is a "
                        "terminal, every target's command reads a copy of it, as with clush)")
    parser.add_argument("--tty", action="store_true",
                        help="-c on one target (-w): run the command in a terminal of its own, "
                        "as ssh -t (vim, top)")
    parser.add_argument("--stats", action="store_true",
                        help="after -c, print each rank's time and peak RSS on stderr")
    parser.add_argument("-f", "--fanout", type=fanout, default=0, metavar="N",
                        help="at most N targets running the command, or sending or receiving a "
                        "--copy/--rcopy, at once, as clush's -f (default: all)")
    add_copy_options(parser)


def fanout(text: str) -> int:
    """-f's N: a positive whole number (argparse says it, as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of targets, 1 or more")
    return value


def choose_targets(args: argparse.Namespace, hosts: Mapping[int, str]) -> frozenset[int]:
    """-w, minus -x, with the ranks on the hosts of -g and --hostfile, minus those of -X (-a:
    every rank): TargetError or HostsError when one names nothing."""
    from .nodes import Selection, expand_target_words, ranks_on, select_hosts
    from .ranks import TargetError, resolve_targets

    groups = tuple(getattr(args, "groups", ()))
    hostfiles = tuple(getattr(args, "hostfiles", ()))
    targets = getattr(args, "targets", "@all")
    chosen = set(hosts) if getattr(args, "all", False) else set()
    if targets != "@all" or not (groups or hostfiles):
        chosen |= set(resolve_targets(expand_target_words(targets), hosts))
    if groups or hostfiles:
        on_hosts = ranks_on(select_hosts(Selection(groups=groups, hostfiles=hostfiles)), dict(hosts))
        if not on_hosts:
            raise TargetError(f"no shell server on the hosts of {', '.join(groups + hostfiles)}")
        chosen |= on_hosts
    for spec in getattr(args, "exclude", ()):
        chosen -= resolve_targets(expand_target_words(spec), hosts, excluding=True)  # as clush -x
    if getattr(args, "exclude_groups", ()):
        chosen -= ranks_on(select_hosts(Selection(groups=tuple(args.exclude_groups))), dict(hosts))
    if not chosen:
        raise TargetError("no target left to run on")
    return frozenset(chosen)


def _ranks_beyond(targets: str, count: int | None) -> str:
    """The ranks of ``-w`` that ``-n count`` servers cannot have ("" if none, or no ``-n``)."""
    from .nodes import expand_target_words
    from .ranks import TargetError, format_ranks, parse_ranks

    if not count or count < 1:
        return ""
    beyond: set[int] = set()
    for word in expand_target_words(targets).replace("+", " ").split():
        name = word.lstrip("@")
        if name[:1].isdigit():
            try:
                beyond |= {rank for rank in parse_ranks(name) if rank > count}
            except TargetError:
                return ""  # said after the start, with the other target errors
    return format_ranks(beyond) if beyond else ""


def _hosts_elsewhere(args: argparse.Namespace) -> str:
    """``host 'node1'`` of ``-w`` that is not this host, or ``the hosts of FILE`` of ``--hostfile``
    when none is, where every server of ``mpish -n K`` runs ("" if none): ``mpish -w 'node[1-4]' uptime``,
    ``ssh`` forgotten, started the ranks, then said "no shell server on host 'node1'".
    Ranks, @all and @words (groups, said later) are not hosts here."""
    from .nodes import Selection, expand_target_words, select_hosts

    here = socket.gethostname()
    ours = (here, here.split(".")[0])
    for name in expand_target_words(getattr(args, "targets", "@all")).replace("+", " ").split():
        if name[:1] not in ("@", "") and not name[0].isdigit() and name != "all" and name not in ours:
            return f"host {name!r}"
    hostfiles = tuple(getattr(args, "hostfiles", ()))
    listed = select_hosts(Selection(hostfiles=hostfiles)) if hostfiles else []
    if any(host in ours or host.split(".")[0] in ours for host in listed):
        return ""
    return f"the hosts of {', '.join(hostfiles)}" if listed else ""


def _ssh_line(args: argparse.Namespace) -> str:
    """The ``mpish ssh`` line meant by an MPI shell's with other hosts in ``-w`` or ``--hostfile``."""
    import shlex

    words = [report.PROG, "ssh"]
    if args.targets != "@all":
        words += ["-w", args.targets]
    for hostfile in getattr(args, "hostfiles", ()):
        words += ["--hostfile", hostfile]
    said, command = shlex.join(words), getattr(args, "command", None)
    if command:
        said += f" {command}" if shlex.quote(command) == command else f" -c {shlex.quote(command)}"
    return said


EMBEDDED_PER_CPU = 16  # shell servers per CPU that mpish -n K starts on this host alone
EMBEDDED_MIN = 1024  # at least (a small VM may still run a test of many)


def main_shell(args: argparse.Namespace) -> int:
    """Run the rank's role; the console's exit status is returned."""
    from mpish.transport.mpi import mpi

    from . import mpi_session as launch

    color = getattr(args, "color", "auto")
    # under a launcher, rank 0's stdout may be a pty made by the launcher (Open MPI does)
    # while the user's end is a pipe or a file: colour only when asked
    set_color("never" if color == "auto" and launch.under_launcher() else color)
    if getattr(args, "connect_timeout", None) is not None:  # -t: read by admission.handshake_timeout
        os.environ["MPISH_HANDSHAKE_TIMEOUT"] = str(args.connect_timeout)
    if launch.under_launcher() and _in_a_tasks_shell():
        # `srun -n 1 --pty bash`, then mpish: the PMI variables are the task's, not ours (used,
        # they made MPI's spawn ask srun for more processors than the step has): embedded
        for name in (*launch.LAUNCHER_VARIABLES, "PMI_JOBID", "PMI_PORT"):
            os.environ.pop(name, None)
    if args.np is None and not launch.under_launcher() and _srun_tasks() > 1:
        # srun without PMI (--mpi=none, or a site default): each task would run a session of
        # its own, and every command as many times
        if os.environ.get("SLURM_PROCID", "0") == "0":
            report.say(f"started by srun as {_srun_tasks()} tasks, but MPI cannot see them as one job "
                       "(no PMI): every task would run a session of its own. Run srun --mpi=pmi2 (or "
                       "--mpi=pmix), as for any MPI program")
        return 2
    if launch.under_launcher() and "SLURM_STEP_ID" in os.environ:
        # srun --pty: a Ctrl-C before the session is up is the console's alone; raised as
        # KeyboardInterrupt it ended in MPI's finalize, which waited for good for servers that
        # waited for the console. Until then it kills the console outright (srun says so; the
        # servers of its node watch it and end with it).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    if launch.under_launcher():
        from .exit_relay import relay_exit, under_hydra

        if under_hydra() and os.environ.get("PMI_RANK", "0") != "0":  # a server rank, before MPI starts
            relay_exit()
        if launcher_rank() not in ("", "0"):  # a server: its console watched from before MPI starts
            from .mpi_server import watch_local_console

            watch_local_console()
        MPI = mpi()
        from mpish.transport.shm import memory_problem

        problem = memory_problem(f"rank {MPI.COMM_WORLD.Get_rank()} on {socket.gethostname()}")
        if problem:  # MPI's state is another user's to write: end the job, every rank
            report.say(problem)
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)
        if MPI.COMM_WORLD.Get_rank() != 0:
            from .mpi_server import world_server_main

            return _guard(MPI, world_server_main)
    try:
        beyond = _ranks_beyond(getattr(args, "targets", "@all"), args.np)
    except MpishError as exc:  # a bad node set (-w 'node[1-'): a usage error, status 2 as over ssh
        report.say(str(exc))
        return 2
    if unmade := make_directories(getattr(args, "outdir", None) or "", getattr(args, "errdir", None) or ""):
        report.say(f"--outdir/--errdir: {unmade}")
        return 2
    if beyond:  # before anything starts (servers took seconds to start, then this was said)
        report.say(f"no shell server on rank(s) {beyond}: -n {args.np} starts @1-{args.np}")
        return 2
    try:
        away = "" if launch.under_launcher() else _hosts_elsewhere(args)
    except MpishError as exc:  # an unreadable --hostfile: a usage error
        report.say(str(exc))
        return 2
    if away:  # before anything starts, as above
        report.say(f"no shell server on {away}: those of mpish -n all run on this host "
                   f"({socket.gethostname()}). To run on other hosts over ssh, did you mean "
                   f"`{_ssh_line(args)}`?")
        return 2
    limit = max(EMBEDDED_MIN, EMBEDDED_PER_CPU * (os.cpu_count() or 1))
    if args.np is not None and args.np > limit and not launch.under_launcher():  # waited 20 s, then failed
        report.say(f"-n {args.np}: more shell servers than one host should start (at most {limit} "
                   f"here, {EMBEDDED_PER_CPU} per CPU); to place them on many hosts, start mpish "
                   "under mpiexec or srun")
        return 2
    if not launch.under_launcher() and (elsewhere := off_allocation()):
        report.say(f"warning: {elsewhere}: the shell servers start on this host. To start them on "
                   "the job's nodes: srun --mpi=pmi2 -n N --pty mpish (N-1 servers)")
    from .console import Console
    from .keyboard import deaf_to_sigint

    session: Any = None
    console: Any = None
    try:
        session = launch.start_console(args.np)
        if signal.getsignal(signal.SIGINT) == signal.SIG_DFL:  # the session is up: Ctrl-C is the console's
            signal.signal(signal.SIGINT, signal.default_int_handler)
        console = Console(session)
        console.timeout = float(getattr(args, "timeout", 0.0) or 0.0)
        status = _run_console(console, args)
    except TransportBroken as exc:
        if session is None:
            report.say(str(exc))
            return 1
        report.say(f"MPI cannot go on: {exc}")
        sys.stderr.flush()
        session.abort()
        return 1
    except MpishError as exc:
        if session is not None:
            raise
        report.say(str(exc))
        return 1
    except Terminated as exc:  # SIGTERM/SIGHUP: the servers end their commands on close
        if session is None:
            raise
        status = 128 + exc.signum
    except KeyboardInterrupt:
        # A Ctrl-C once the session is up but before the prompt reads it as a key (its reader
        # still loading: the session is up in 0.6 s under srun --pty). Raised through, it ended
        # in MPI's finalize, which waited for good for servers that waited for the console.
        if session is None:
            raise
        print(file=sys.stderr)
        status = 130
    if session is not None:
        session.exit_status = status  # a job aborted for a lost rank exits with it (mpi_session.py)
    closed = False
    while not closed:  # a Ctrl-C pending from before raises as SIGINT is ignored: the close still runs
        with contextlib.suppress(KeyboardInterrupt), deaf_to_sigint():  # bounded: CLOSE_TIMEOUT
            (console if console is not None else Console(session)).close()
            closed = True
    return status


def _run_console(console: Any, args: argparse.Namespace) -> int:
    """The session's work: --copy/--rcopy, -c, or the console's lines (-C, the terminal)."""
    if not console.peers:
        report.say("no shell server accepted the session")
        return 1
    if getattr(args, "copy_request", None) is not None:
        return run_copy(console, args)
    if args.command is not None:
        _warn_if_argv_crossed_hosts(console)
        return run_once(console, args)
    return run_lines(console, args)


def off_allocation() -> str:
    """Where this process is a Slurm job's shell (salloc's, on a login node) but not on one of
    the job's nodes, which ("" otherwise): ``mpish -n K`` there started its servers on the
    login node, as mpiexec would (a Slurm user's review)."""
    job = os.environ.get("SLURM_JOB_ID")
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not job or not nodes:
        return ""
    from ClusterShell.NodeSet import RESOLVER_NOGROUP, NodeSet, NodeSetException

    try:
        names = NodeSet(nodes, resolver=RESOLVER_NOGROUP)  # a host list: no groups
    except (NodeSetException, ValueError):  # a list ClusterShell cannot read: nothing to say
        return ""
    host = socket.gethostname()
    # SLURMD_NODENAME: slurmd started this shell, on one of the job's nodes (whose NodeName
    # may not be the host's name); salloc's shell on a login node has none
    if "SLURMD_NODENAME" in os.environ or host in names or host.split(".")[0] in names:
        return ""
    return f"this is a shell of Slurm job {job} on {host}, not on one of its nodes ({nodes})"


def _srun_task() -> bool:
    """This process is a task srun started itself (its parent is slurmstepd), not a command of
    a task's shell (``srun -n 4 --pty bash``)."""
    from mpish.transport.procfs import cmdline

    starter = cmdline(os.getppid())
    return "SLURM_STEP_ID" in os.environ and bool(starter) and os.path.basename(starter[0]).startswith(
        b"slurmstepd")


def _srun_tasks() -> int:
    """The number of tasks of the Slurm job step this process is one of, started by srun itself
    (0: not such a task)."""
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "0"
    return int(tasks) if _srun_task() and tasks.isdigit() else 0


def _in_a_tasks_shell() -> bool:
    """A command of the shell of a one-task step (``srun -n 1 --pty bash``): not MPI's rank."""
    return ("SLURM_STEP_ID" in os.environ and not _srun_task()
            and os.environ.get("SLURM_STEP_NUM_TASKS", os.environ.get("PMI_SIZE")) == "1")


def run_copy(console: Any, args: argparse.Namespace) -> int:
    """``--copy``/``--rcopy`` on the ``-w``/``-x``/``-g`` targets (copying.copy_files)."""
    from .copying import copy_files
    from .interactive import Repl

    try:
        targets = choose_targets(args, console.hosts)
    except MpishError as exc:
        report.say(str(exc))
        return 2
    repl = Repl(console)  # for Ctrl-C as a key during the transfers
    return copy_files(console, targets, args.copy_request, repl.keys, repl.err, getattr(args, "fanout", 0))


def _guard(MPI: Any, entry: Any) -> int:
    try:
        status: int = entry()
        return status
    except BaseException as exc:
        report.say(f"rank {MPI.COMM_WORLD.Get_rank()}: fatal: {exc!r}")
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
        raise


def _warn_if_argv_crossed_hosts(console: Any) -> None:
    """-c under a launcher spanning hosts: the command went to them in the launcher's clear text."""
    import socket  # only here: the other paths through this module need no socket

    from . import mpi_session as launch

    hosts = set(console.hosts.values()) | {socket.gethostname()}
    if launch.under_launcher() and len(hosts) > 1:
        print(f"mpish: warning: -c put the command in argv, which the launcher sent to {len(hosts) - 1} "
              "other host(s) unencrypted (and ps shows it); use -C FILE or -C - (stdin) instead",
              file=sys.stderr)


def run_lines(console: Any, args: argparse.Namespace) -> int:
    """The console, or ``-C FILE``: the lines of FILE (``-``: stdin) as typed at the console,
    without prompts; either way on the ``-w``/``-x``/``-g`` targets, output as the output
    options say (-b -B -L -N -q --json --label), as ``-c`` shows it.

    Only this process opens FILE, so the commands never pass through argv or the
    environment. The exit status is the last command's (a line that fails with an error: 1); a
    failed :targets or :lcd ends FILE's lines with status 2 (repl.py).
    """
    from .options import OutputMode
    from .readers import PlainReader
    from .repl import ShellRepl

    try:
        targets = choose_targets(args, console.hosts)
    except MpishError as exc:
        report.say(str(exc))
        return 2
    path = getattr(args, "commands_from", None)
    if path is None:
        repl = ShellRepl(console, output=OutputMode.from_args(args), fanout=getattr(args, "fanout", 0))
        repl.targets = targets
        return repl.loop()  # exit N: N; exit or the end of input: the last command's, as bash
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8",  # noqa: SIM115
                                                    errors="surrogateescape")
    except OSError as exc:
        report.say(f"cannot read commands from {path}: {exc.strerror}")
        return 2
    with stream:
        repl = ShellRepl(console, reader=PlainReader(stream, None), output=OutputMode.from_args(args),
                         fanout=getattr(args, "fanout", 0), script=path)  # a failed :targets ends it
        repl.targets = targets  # -w: the default targets, as :targets would set them
        return repl.loop()  # exit N in the file: N, as a bash script would; else the last status


def run_once(console: Any, args: argparse.Namespace) -> int:
    """``-c``: run once on the targets; exit status = the largest remote one (``-S``), or 0
    (``--no-maxrc``, clush's default)."""
    from .names import RankHostNames, RankNames, status_of
    from .options import OutputMode, exit_status

    try:
        ranks = choose_targets(args, console.hosts)
    except MpishError as exc:
        report.say(str(exc))
        return 2
    if getattr(args, "tty", False):
        from .attach import AttachError, one_shot

        try:
            return one_shot(console, ranks, args.command, sys.stderr)
        except AttachError as exc:
            report.say(str(exc))
            return 2
    out, err = sys.stdout.buffer, sys.stderr.buffer
    style = Style.for_stream(sys.stdout)
    mode = OutputMode.from_args(args)
    names = RankHostNames(console.hosts) if mode.by_host else RankNames()
    made = make_sink(mode, len(ranks), out, err, style, names)
    fed = tee(made, mode, names, err)  # --outdir, --errdir: a file per rank too
    sink = PipeGuard(fed)
    from .keyboard import InterruptKeys, terminate_as_interrupt

    with InterruptKeys() as keys, terminate_as_interrupt() as terminated:
        console.interrupt_key = keys.pressed
        console.terminated = terminated
        if isinstance(made, GroupedSink):  # Ctrl-C also ends a long display of what was gathered
            made.stop = keys.pressed
        results = console.run(args.command, ranks, sink, fanout=getattr(args, "fanout", 0),
                              stdin=stdin_to_send(getattr(args, "nostdin", False)))
    if sink.closed:  # stdout's reader left (| head): the command was interrupted; quiet, as yes | head
        if sink.failure_line():  # or it could not be written to (a full disk)
            report.say(sink.failure_line())
            return 1
        return STDOUT_CLOSED
    if not args.json:
        for line in status_lines(results.values(), Style.for_stream(sys.stderr), names, quiet=mode.quiet):
            print(line, file=sys.stderr)
    if getattr(args, "stats", False):
        from .console import console_rss_kib

        for rank, result in sorted(results.items()):
            print(f"mpish: rank {rank}: {result.seconds:.3f} s, peak RSS {result.peak_rss_kib} KiB",
                  file=sys.stderr)
        report.say(f"console: peak RSS {console_rss_kib()} KiB")
    if terminated:
        return 128 + terminated[0]
    status = exit_status([status_of(r) for r in results.values()], getattr(args, "maxrc", True),
                         any(r.interrupted for r in results.values()))
    return max(status, 1) if failed(fed) else status  # a file of --outdir is missing
