"""``mpish`` without a subcommand: pick the rank's role, then run ``-c`` or the console."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from mpish.wire.errors import MpishError, TransportBroken

from .grouping import COLOR_CHOICES, Style, make_sink, set_color, status_lines
from .session import Terminated


def add_options(parser: argparse.ArgumentParser) -> None:
    """Options of the shell itself, beyond -n, -c, --json and -v (cli.py owns those)."""
    parser.add_argument("-t", "--timeout", type=float, default=0.0, metavar="SECONDS",
                        help="per-command timeout (0 = none)")
    parser.add_argument("-w", "--targets", default="@all", metavar="TARGETS",
                        help="target ranks or hosts, e.g. @1-3,7 (default @all)")
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


def main_shell(args: argparse.Namespace) -> int:
    """Run the rank's role; the console's exit status is returned."""
    from mpish.transport.mpi import mpi

    from . import mpi_session as launch

    color = getattr(args, "color", "auto")
    # under a launcher, rank 0's stdout may be a pty made by the launcher (Open MPI does)
    # while the user's end is a pipe or a file: colour only when asked
    set_color("never" if color == "auto" and launch.under_launcher() else color)
    if launch.under_launcher():
        MPI = mpi()
        if MPI.COMM_WORLD.Get_rank() != 0:
            from .mpi_server import world_server_main

            return _guard(MPI, world_server_main)
    try:
        session = launch.start_console(args.np)
    except MpishError as exc:
        print(f"mpish: {exc}", file=sys.stderr)
        return 1
    from .console import Console

    console = Console(session)
    console.timeout = float(getattr(args, "timeout", 0.0) or 0.0)
    try:
        if not console.peers:
            print("mpish: no shell server accepted the session", file=sys.stderr)
            status = 1
        elif args.command is not None:
            _warn_if_argv_crossed_hosts(console)
            status = run_once(console, args)
        elif getattr(args, "commands_from", None) is not None:
            status = run_lines(console, args)
        else:
            from .interactive import Repl

            status = Repl(console, verbose=args.verbose).loop()
    except TransportBroken as exc:
        print(f"mpish: MPI cannot go on: {exc}", file=sys.stderr)
        sys.stderr.flush()
        session.abort()
        return 1
    except Terminated as exc:  # SIGTERM/SIGHUP: the servers end their commands on close
        status = 128 + exc.signum
    console.close()
    return status


def _guard(MPI: Any, entry: Any) -> int:
    try:
        status: int = entry()
        return status
    except BaseException as exc:
        print(f"mpish: rank {MPI.COMM_WORLD.Get_rank()}: fatal: {exc!r}", file=sys.stderr)
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
        raise


def _warn_if_argv_crossed_hosts(console: Any) -> None:
    """-c under a launcher spanning hosts: the command went to them in the launcher's clear text."""
    from . import mpi_session as launch

    hosts = set(console.hosts.values()) | {socket.gethostname()}
    if launch.under_launcher() and len(hosts) > 1:
        print(f"mpish: warning: -c put the command in argv, which the launcher sent to {len(hosts) - 1} "
              "other host(s) unencrypted (and ps shows it); use -C FILE or -C - (stdin) instead",
              file=sys.stderr)


def run_lines(console: Any, args: argparse.Namespace) -> int:
    """``-C FILE``: the lines of FILE (``-``: stdin) as typed at the console, without prompts.

    Only this process opens FILE, so the commands never pass through argv or the
    environment. The exit status is the last command's (a line that fails with an error: 1).
    """
    from .interactive import PlainReader, Repl
    from .ranks import TargetError, resolve_targets

    try:
        targets = resolve_targets(getattr(args, "targets", "@all"), console.hosts)
    except TargetError as exc:
        print(f"mpish: {exc}", file=sys.stderr)
        return 2
    path = args.commands_from
    try:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"mpish: cannot read commands from {path}: {exc.strerror}", file=sys.stderr)
        return 2
    with stream:
        repl = Repl(console, verbose=args.verbose, reader=PlainReader(stream, None))
        repl.targets = targets  # -w: the default targets, as :targets would set them
        repl.loop()
    return repl.last_status


def stdin_to_send(nostdin: bool) -> int | None:
    """The fd that ``-c`` broadcasts as the command's stdin: 0, unless ``--nostdin``, or
    stdin is a terminal (as clush: nothing is read from it) or closed."""
    try:
        if nostdin or os.isatty(0):
            return None
        os.fstat(0)
    except OSError:
        return None
    return 0


def run_once(console: Any, args: argparse.Namespace) -> int:
    """``-c``: run once on the targets; exit status = the largest remote one (clush -S)."""
    from .ranks import TargetError, resolve_targets

    try:
        ranks = resolve_targets(getattr(args, "targets", "@all"), console.hosts)
    except TargetError as exc:
        print(f"mpish: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "tty", False):
        from .attach import AttachError, one_shot

        try:
            return one_shot(console, ranks, args.command, sys.stderr)
        except AttachError as exc:
            print(f"mpish: {exc}", file=sys.stderr)
            return 2
    out, err = sys.stdout.buffer, sys.stderr.buffer
    style = Style.for_stream(sys.stdout)
    kind = "json" if args.json else "live" if args.verbose else "grouped"
    sink = make_sink(kind, len(ranks), out, err, style)
    from .interactive import InterruptKeys

    with InterruptKeys() as keys:
        console.interrupt_key = keys.pressed
        results = console.run(args.command, ranks, sink,
                              stdin=stdin_to_send(getattr(args, "nostdin", False)))
    if not args.json:
        for line in status_lines(results.values(), Style.for_stream(sys.stderr)):
            print(line, file=sys.stderr)
    if getattr(args, "stats", False):
        from .console import console_rss_kib

        for rank, result in sorted(results.items()):
            print(f"mpish: rank {rank}: {result.seconds:.3f} s, peak RSS {result.peak_rss_kib} KiB",
                  file=sys.stderr)
        print(f"mpish: console: peak RSS {console_rss_kib()} KiB", file=sys.stderr)
    return max((r.exit for r in results.values()), default=0)
