"""The ``mpish`` command line: argument parsing only; the work is done elsewhere.

``mpish [options]`` runs the MPI shell. ``mpish <subcommand> ...`` runs a
subcommand when the first argument names one (``keygen``, ``keys``). To add a
subcommand, write ``_add_<name>(parser)`` and ``_run_<name>(args)`` and list them in
:data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn, TextIO

from mpish import report
from mpish.wire.errors import MpishError

PROG = report.PROG
DEBUG_HELP = f"diagnostics (logging) on stderr from every process of mpish ({report.DEBUG_VARIABLE}=1 too)"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, given the width it would find itself: its own lookup imports shutil (with
    bz2, lzma and fnmatch, ~3 ms) when the parser is built, before ``mpish ssh`` starts ssh."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        width = terminal_columns() - 2 if width is None else width  # argparse's own "- 2"
        super().__init__(prog, indent_increment, max_help_position, width)


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: $COLUMNS, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Parser(argparse.ArgumentParser):
    """argparse's, with a hint after the errors a clush user meets first: clush's ``-n`` (no
    stdin) is ``--nostdin`` here (``mpish ssh -n`` said only "unrecognized arguments: -n";
    ``mpish -n 2 -n -c hostname`` "invalid int value: '-c'")."""

    def error(self, message: str) -> NoReturn:
        if re.search(r"unrecognized arguments:(.* )?-n( |$)|argument -n/--np: invalid int value", message):
            message += " (clush's -n, no stdin, is --nostdin here" + (
                "; mpish's -n is the number of ranks)" if "--np" in message else ")")
        super().error(message)


# --- the main shell ------------------------------------------------------------------


def _main_parser() -> argparse.ArgumentParser:
    from mpish.shell import options

    parser = Parser(
        formatter_class=HelpFormatter,
        prog=PROG,
        usage="%(prog)s [options] [COMMAND ...]",
        description="A secure remote shell over MPI and SSH. The words after the options are a "
        "command to run on every target (as with clush); without one, the console.",
        epilog="subcommands: " + ", ".join(SUBCOMMANDS) + f" (see '{PROG} <subcommand> -h')",
    )
    options.add_version(parser)
    parser.add_argument("-n", "--np", type=int, metavar="INT",
                        help="number of shell servers to start (default: the cores, at most 4; under "
                        "mpiexec or srun, every rank but 0)")
    once = parser.add_mutually_exclusive_group()
    once.add_argument("-c", dest="command", metavar="COMMAND", help="run COMMAND and exit")
    once.add_argument(
        "-C",
        "--commands-from",
        dest="commands_from",
        metavar="FILE",
        help="run the console lines in FILE ('-' = stdin), read by the console alone, and exit with "
        "the last line's status (as clush and a bash script); unlike -c, the commands are not in argv, "
        "which a launcher sends to other hosts unencrypted",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output (repeatable)")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    from mpish.shell.app import add_options

    add_options(parser)  # the shell's own options (-u, -t, -w, -x, -g, output modes)
    return parser


def _parse_main(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The options, then the command's words (as clush: ``mpish -n 2 ls -l``)."""
    from mpish.shell.options import parse_copy, split_command

    words, command = split_command(parser, argv)
    _refuse_ssh_options(parser, argv, words, command)
    args, copy = parse_copy(parser, argv, words, command)
    args.copy_request = copy
    if args.np is not None and args.np < 1:
        parser.error(f"-n {args.np}: give at least one shell server")
    _note_a_file_command(args.command)
    if command and args.copy_request is None:
        if args.command is not None or args.commands_from is not None:
            parser.error("give the command either with -c/-C or as the last words, not both")
        args.command = " ".join(command)
    return args


SSH_ONLY = ("-o", "--options", "-l", "--user", "--python", "--pick")  # mpish ssh's, unknown to the MPI shell


def _refuse_ssh_options(parser: argparse.ArgumentParser, argv: list[str], words: list[str],
                        command: list[str]) -> None:
    """An option of ``mpish ssh`` given to the MPI shell (``mpish -n 2 -o '-F x' uptime``): said
    to be one, with the ``mpish ssh`` line meant (argparse said "unrecognized arguments: -o -F
    xuptime", the option's value glued to the command)."""
    given = [word for word in words if word.split("=", 1)[0] in SSH_ONLY or word[:2] in ("-o", "-l")]
    if not given:
        return
    options, rest, at = argv[: len(argv) - len(command)], [], 0
    while at < len(options):  # the same line for mpish ssh: without -n (ranks), HOSTS if none chosen
        if options[at] in ("-n", "--np"):
            at += 2
            continue
        if not options[at].startswith(("-n", "--np=")):
            rest.append(options[at])
        at += 1
    rest += command
    chosen = {"-w", "--targets", "-g", "--group", "-a", "--all", "--hostfile", "--machinefile"}
    named = any(word.split("=", 1)[0] in chosen or word[:2] in ("-w", "-g") for word in words)
    hosts = [] if named else ["HOSTS"]
    option = given[0].split("=", 1)[0] if given[0].startswith("--") else given[0][:2]
    parser.error(f"{option} is an option of {PROG} ssh (the MPI shell's servers are MPI ranks, not ssh "
                 f"logins): did you mean `{shlex.join([PROG, 'ssh', *hosts, *rest])}`?")


def _note_a_file_command(command: str | None) -> None:
    """``-c FILE`` with a local FILE: clush's ``-c`` copies it, here it is run on every target (a
    clush user's ``-c install.sh`` ran it everywhere): said, then done. A word without a slash
    is looked up in PATH, as bash does: "run by its path" was followed by "bash: script.sh:
    command not found" (a user trial), so the note says so and names ``./script.sh``."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return
    if len(words) == 1 and os.path.isfile(words[0]):
        how = (f"{words[0]} is run by its path on each target" if "/" in words[0] else
               f"{words[0]}, without a slash, is looked up in PATH on each target (./{words[0]} runs "
               "it by its path)")
        print(f"{PROG}: note: -c runs a command: {how} (clush's -c copies a file: --copy {words[0]} here)",
              file=sys.stderr)


def run_main(args: argparse.Namespace) -> int:
    """Run the MPI shell: the console on rank 0 (or the user's process), servers elsewhere."""
    from mpish.shell.app import main_shell

    return main_shell(args)


# --- keygen --------------------------------------------------------------------------


def _add_keygen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing identity key")
    parser.add_argument("-C", dest="comment", metavar="COMMENT", help="key comment")


def _run_keygen(args: argparse.Namespace, out: TextIO) -> int:
    from mpish import keys  # not on mpish ssh's way: cryptography costs ~40 ms to import

    identity = keys.generate_identity(comment=args.comment, overwrite=args.force)
    home = keys.mpish_home()
    print(f"Your identification has been saved in {home / keys.PRIVATE_KEY_NAME}", file=out)
    print(f"Your public key has been saved in {home / keys.PUBLIC_KEY_NAME}", file=out)
    print("The key fingerprint is:", file=out)
    print(f"{identity.fingerprint} {identity.comment}".rstrip(), file=out)
    return 0


# --- keys ----------------------------------------------------------------------------


def _add_keys(parser: argparse.ArgumentParser) -> None:
    del parser  # no options yet


def _run_keys(args: argparse.Namespace, out: TextIO) -> int:
    from mpish import keys

    identity = keys.load_identity()
    print(identity.public_line, file=out)
    print(f"{identity.fingerprint} {identity.comment}".rstrip(), file=out)
    authorized = keys.AuthorizedKeys.load()
    path = keys.mpish_home() / keys.AUTHORIZED_KEYS_NAME
    print(f"\n{path}: {len(authorized)} key(s)", file=out)
    for entry in authorized:
        print(f"  {entry.fingerprint} {entry.comment}".rstrip(), file=out)
    return 0


# --- ssh ------------------------------------------------------------------------------


def _add_ssh(parser: argparse.ArgumentParser) -> None:
    from mpish.shell import options
    from mpish.shell.ssh_cli import DEFAULT_CONNECT_TIMEOUT, DEFAULT_FANOUT

    parser.usage = "%(prog)s [HOSTS] [options] [COMMAND ...]"
    options.add_version(parser)
    parser.add_argument("hosts", nargs="?", metavar="HOSTS",
                        help="hosts, a node set: node[1-8],login1 or @group (not needed with -w, -g, "
                        "-a or --hostfile)")
    once = parser.add_mutually_exclusive_group()
    once.add_argument("-c", dest="command", metavar="COMMAND",
                      help="run COMMAND on every host and exit (or give it as the last words)")
    once.add_argument("-C", "--commands-from", dest="commands_from", metavar="FILE",
                      help="run the console lines in FILE ('-' = stdin) and exit with the last line's "
                      "status, as the MPI shell's -C")
    select = parser.add_argument_group("selecting hosts (clush's options)")
    select.add_argument("-w", dest="nodes", action="append", default=[], metavar="NODES",
                        help="hosts to run on, a node set (repeatable)")
    select.add_argument("-x", dest="exclude", action="append", default=[], metavar="NODES",
                        help="hosts to leave out (repeatable)")
    select.add_argument("-g", "--group", dest="groups", action="append", default=[], metavar="GROUP",
                        help="the hosts of a ClusterShell group, or of a comma-separated list (repeatable)")
    select.add_argument("-X", dest="exclude_groups", action="append", default=[], metavar="GROUP",
                        help="leave out the hosts of a group, or of a comma-separated list of them")
    select.add_argument("-a", "--all", action="store_true", help="every host of the group configuration")
    select.add_argument("--hostfile", "--machinefile", dest="hostfiles", action="append", default=[],
                        metavar="FILE", help="a file of hosts, one node set per line")
    select.add_argument("--pick", type=int, metavar="N",
                        help="run on N of the hosts selected, picked at random (as clush)")
    parser.add_argument(
        "-f",
        "--fanout",
        type=int,
        default=DEFAULT_FANOUT,
        metavar="N",
        help=f"at most N hosts being connected, running the command, or sending or receiving a "
        f"--copy/--rcopy, at once (default {DEFAULT_FANOUT}; -c's stdin reaches each host from "
        "its first byte in its turn)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per host per line")
    parser.add_argument("--nostdin", action="store_true",
                        help="do not send stdin to the hosts (by default, unless it is a "
                        "terminal, every host's command reads a copy of it, as with clush)")
    parser.add_argument("-v", "--verbose", action="store_true", help="live output, lines prefixed 'host: '")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--tty", action="store_true",
                        help="-c on one host: run the command in a terminal of its own, as ssh -t (vim, top)")
    options.add_output_options(parser)
    parser.add_argument(
        "-o",
        "--options",
        dest="ssh_options",
        action="append",
        default=[],
        metavar="OPTIONS",
        help="options for ssh, split like a shell (repeatable), e.g. -o '-p 2222 -l admin' or -o-F/path",
    )
    parser.add_argument("-l", "--user", metavar="USER",
                        help="log in as USER on every host (ssh -l, as clush -l); USER@HOST wins")
    parser.add_argument(
        "--python",
        default="python3",
        help="remote Python 3.10+ (mpish need not be installed), split like a shell (default python3)",
    )
    options.add_copy_options(parser)
    options.add_timeouts(parser, f"ssh's ConnectTimeout (default {DEFAULT_CONNECT_TIMEOUT:g})",
                         DEFAULT_CONNECT_TIMEOUT)
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the output: auto (a terminal and no NO_COLOR), always or never")


def _parse_ssh(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """HOSTS first unless -w/-g/-a/--hostfile came before it; the words after: the command."""
    from mpish.shell.options import parse_copy, split_command
    from mpish.wire.message import replace

    before, after = split_command(parser, argv, 0)  # the options before the first positional word
    first, _ = parser.parse_known_args(before)
    if first.copy or first.rcopy:  # options anywhere among the files (`--copy f -w node1`, as clush)
        args, copy = parse_copy(parser, argv, before, after)
        if not (args.nodes or args.groups or args.all or args.hostfiles) and copy is not None:
            args.hosts, sources = copy.sources[0], copy.sources[1:]  # --copy HOSTS FILE...
            if not sources:
                parser.error("--copy/--rcopy: name the hosts (-w, or HOSTS before the files) and the files")
            copy = replace(copy, sources=sources)
        args.copy_request = copy
        return args
    chosen = first.nodes or first.groups or first.all or first.hostfiles
    if not chosen and (first.exclude or first.exclude_groups) and len(after) < 2:
        # `mpish ssh -x node3 reboot` took "reboot" for the hosts; clush says "No node to run on"
        # (`mpish ssh -x node3 'node[1-4]' uptime` names them: HOSTS, then the command)
        parser.error("-x/-X only leave hosts out: name the hosts first, with -w or as the first word "
                     "(mpish ssh -w 'node[1-4]' -x node3 CMD)")
    words, command = split_command(parser, argv, 0 if chosen else 1)
    args, copy = parse_copy(parser, argv, words, command)
    args.copy_request = copy
    _note_a_file_command(args.command)
    if command and args.copy_request is None:
        if args.command is not None or args.commands_from is not None:
            parser.error("give the command either with -c/-C or as the last words, not both")
        args.command = " ".join(command)
    return args


def _run_ssh(args: argparse.Namespace, out: TextIO) -> int:
    del out  # the command's output is bytes: written to sys.stdout.buffer
    from mpish.shell import ssh_cli as shell_cli
    from mpish.shell.nodes import Selection
    from mpish.shell.options import OutputMode

    if args.fanout < 1:
        print(f"{PROG} ssh: -f must be at least 1", file=sys.stderr)
        return 2
    if args.connect_timeout is not None and args.connect_timeout <= 0:
        print(f"{PROG} ssh: -t must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.pick is not None and args.pick < 1:
        print(f"{PROG} ssh: --pick must be at least 1", file=sys.stderr)
        return 2
    from mpish.shell.options import make_directories

    if failed := make_directories(args.outdir or "", args.errdir or ""):
        print(f"{PROG} ssh: --outdir/--errdir: {failed}", file=sys.stderr)
        return 2
    selection = Selection(
        nodes=(*([args.hosts] if args.hosts else []), *args.nodes), exclude=tuple(args.exclude),
        groups=tuple(args.groups), exclude_groups=tuple(args.exclude_groups), all=args.all,
        hostfiles=tuple(args.hostfiles), pick=args.pick or 0,
    )
    try:
        ssh_options = shell_cli.split_ssh_options(args.ssh_options)
        if args.user:
            ssh_options = (*ssh_options, "-l", args.user)
        python = tuple(shlex.split(args.python))
    except ValueError as exc:  # shlex: an unbalanced quote
        print(f"{PROG} ssh: -o or --python: {exc} (they are split like a shell's words: "
              "check the quotes)", file=sys.stderr)
        return 2
    if not python:  # (it ran `exec  -c CODE` on each host: "--python  did not run the start-up code")
        print(f"{PROG} ssh: --python {args.python!r} names no interpreter: give the hosts' Python 3.10+ "
              "(default python3)", file=sys.stderr)
        return 2
    return shell_cli.main(
        shell_cli.SshShellOptions(
            selection=selection,
            command=args.command,
            commands_from=args.commands_from,
            copy=args.copy_request,
            fanout=args.fanout,
            mode=OutputMode.from_args(args),
            maxrc=args.maxrc,
            nostdin=args.nostdin,
            ssh_options=ssh_options,
            python=python,
            timeout=args.timeout or None,
            connect_timeout=args.connect_timeout,
            tty=args.tty,
            color=args.color,
        )
    )


# --- dispatch ------------------------------------------------------------------------

_Adder = Callable[[argparse.ArgumentParser], None]
_Runner = Callable[[argparse.Namespace, TextIO], int]

SUBCOMMANDS: dict[str, tuple[str, _Adder, _Runner]] = {
    "keygen": ("create the identity key (~/.mpish/id_x25519)", _add_keygen, _run_keygen),
    "keys": ("show the identity key and authorized_keys", _add_keys, _run_keys),
    "ssh": ("run a command on many hosts over ssh (clush-style)", _add_ssh, _run_ssh),
}


def _start_logging(debug: bool, argv: list[str]) -> None:
    if report.setup_logging(debug or None):
        import platform  # only here: ~1 ms of every start otherwise

        from mpish import __version__

        report.Diagnostics(__name__).debug("mpish %s, Python %s: %s %s", __version__,
                                           platform.python_version(), PROG, shlex.join(argv))


def subcommand_first(argv: list[str]) -> list[str]:
    """``mpish --debug ssh HOST ...`` is ``mpish ssh --debug HOST ...`` (as ``git --no-pager
    log``): a subcommand after options that it takes too moves first. After any other
    option the words are a command for the ranks, as clush reads them (``mpish -n 2 ssh h``)."""
    at = 0
    while at < len(argv) and argv[at] == "--debug":
        at += 1
    if 0 < at < len(argv) and argv[at] == "ssh":
        return [argv[at], *argv[:at], *argv[at + 1:]]
    return argv


@contextlib.contextmanager
def _said_by_rank_0() -> Iterator[None]:
    """Under a launcher every rank parses the same argv: only rank 0 prints a usage error, the
    help or the version (``srun -n 3 mpish -u abc`` said its error three times); all exit alike."""
    from mpish.shell.options import launcher_rank

    # PMI's rank too: the shells of an mpish session keep SLURM_PROCID, not PMI's variables
    if launcher_rank() in ("", "0") or not {"PMI_RANK", "PMIX_RANK"} & set(os.environ):
        yield
        return
    with open(os.devnull, "w") as void, contextlib.redirect_stdout(void), contextlib.redirect_stderr(void):
        yield


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mpish`` console script; returns the exit status."""
    report.open_standard_streams()
    argv = subcommand_first(sys.argv[1:] if argv is None else list(argv))
    try:
        if argv and argv[0] in SUBCOMMANDS:
            name = argv[0]
            help_text, add, run = SUBCOMMANDS[name]
            parser = Parser(prog=f"{PROG} {name}", description=help_text, formatter_class=HelpFormatter)
            add(parser)
            parse = _parse_ssh if name == "ssh" else lambda p, a: p.parse_args(a)
            args = parse(parser, argv[1:])
            _start_logging(getattr(args, "debug", False), argv)
            return run(args, sys.stdout)
        with _said_by_rank_0():
            args = _parse_main(_main_parser(), argv)
        _start_logging(args.debug, argv)
        return run_main(args)
    except MpishError as exc:
        report.say(str(exc))
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
