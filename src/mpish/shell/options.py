"""The options clush users reach for, shared by ``mpish`` (MPI) and ``mpish ssh``.

A positional command, as clush: the words after the options are the command, joined with
spaces (``mpish ssh 'node[1-4]' uptime``, ``mpish -n 2 ls -l /tmp``); everything from the
first such word on belongs to the command, options included (:func:`split_command`). An
option's value may start with ``-`` (``-o -F/path``), as optparse lets clush take it.

Output modes (:class:`OutputMode`): ``-b`` gathered (the default), ``-B`` the same with
stderr gathered with stdout, ``-L`` ordered lines prefixed by their server, ``-N`` no
labels (alone, without ``-b``/``-B``: each server's lines, as clush's ``-N``), ``-q`` quiet,
``--diff`` unified diffs against the first group, ``-v`` live;
``--gather-limit MIB``: past that much gathered output, grouped output gives way to
labelled lines as they come (:mod:`mpish.shell.grouping`; clush would gather for ever).
Exit status: ``-S`` the largest remote status (the default; a ``-u`` timeout counts as
255, as clush -S counts a "command timeout"), ``--no-maxrc`` clush's default (0 unless
mpish itself failed). The output options apply to ``-c``, ``-C`` and the console alike.
clush's ``-n`` is its ``--nostdin``, spelled only ``--nostdin`` here: ``-n`` is the rank count.
"""

from __future__ import annotations

import argparse
import math
import os
import stat
from collections.abc import Callable, Sequence

import mpish
from mpish.wire.message import Frozen, frozen
from mpish.wire.text import escape

GATHER_LIMIT = 64 << 20  # bytes of gathered output before grouped output gives way to lines


@frozen
class OutputMode(Frozen):
    """How a command's output is shown (see the module doc)."""

    kind: str = "grouped"  # grouped, lines, live, json
    merge_stderr: bool = False  # -B
    labels: bool = True  # not -N
    quiet: bool = False  # -q
    diff: bool = False  # --diff
    by_host: bool = False  # --label host (the MPI shell; mpish ssh always names hosts)
    gather_limit: int = GATHER_LIMIT  # --gather-limit, in bytes; 0: gather whatever the size
    gathered: bool = False  # -b or -B given: one target's output under a header too, as clush's
    outdir: str = ""  # --outdir: each server's stdout also to a file there (outfiles.py)
    errdir: str = ""  # --errdir: its stderr

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputMode:
        gathered = args.dshbak or args.merge_stderr
        lines = args.lines or not (args.labels or gathered or args.diff)  # -N alone: clush's (lines)
        kind = "json" if args.json else "live" if args.verbose else "lines" if lines else "grouped"
        return cls(kind=kind, merge_stderr=args.merge_stderr, labels=args.labels, quiet=args.quiet,
                   diff=args.diff, by_host=getattr(args, "label", "rank") == "host",
                   gather_limit=round(args.gather_limit * 2**20), gathered=gathered,
                   outdir=getattr(args, "outdir", None) or "", errdir=getattr(args, "errdir", None) or "")


def gather_limit(text: str) -> float:
    """--gather-limit's value: MiB, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in MiB (a number, 0 for no limit)")
    return value


def add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"mpish {mpish.__version__}")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """-b -B -L -N -q --diff -S --no-maxrc (clush's spellings)."""
    group = parser.add_argument_group("output (clush's options)")
    group.add_argument("-b", "--dshbak", action="store_true",
                       help="gather servers with the same output under one header (the default)")
    group.add_argument("-B", dest="merge_stderr", action="store_true",
                       help="like -b, with stderr gathered together with stdout")
    group.add_argument("-L", dest="lines", action="store_true",
                       help="no header blocks: lines prefixed by their server, in server order "
                       "(-bL: gathered line by line, alike lines prefixed by all their servers)")
    group.add_argument("-N", dest="labels", action="store_false",
                       help="no labels: no headers, no line prefixes; alone, each server's lines in "
                       "server order (clush's -N); -bN: gathered output without headers")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="essential output only: no '(N)' counts, no 'exit code' lines")
    group.add_argument("--diff", action="store_true",
                       help="show each gathered output as a unified diff against the first")
    group.add_argument("--gather-limit", type=gather_limit, default=GATHER_LIMIT / 2**20, metavar="MIB",
                       help="past this much gathered output (in all), show the rest as labelled lines "
                       f"as it comes, as -L (default {GATHER_LIMIT >> 20}; 0: no limit)")
    group.add_argument("--outdir", metavar="DIR",
                       help="also write each server's stdout to DIR/NAME (its host, or its rank), as clush")
    group.add_argument("--errdir", metavar="DIR", help="the same for stderr")
    status = parser.add_mutually_exclusive_group()
    status.add_argument("-S", "--maxrc", dest="maxrc", action="store_true", default=True,
                        help="exit with the largest remote status (the default; a server that "
                        "could not run the command counts as 255)")
    status.add_argument("--no-maxrc", dest="maxrc", action="store_false",
                        help="clush's default: exit 0 unless mpish itself failed")


def make_directories(*directories: str) -> str:
    """Each directory given made if it is not there (as clush's ``os.makedirs``); an error
    text for the first that cannot be, else ""."""
    for directory in directories:
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except FileExistsError:  # (a file of that name: "File exists" said nothing useful)
                return f"{escape(directory)} is not a directory: give a directory, or a path to make one"
            except OSError as exc:
                return f"cannot make the directory {escape(directory)}: {exc.strerror or exc}"
    return ""


def seconds(text: str, none: bool = True) -> float:
    """A timeout as given: a number of seconds, finite, 0 or more (``none``: 0 is no timeout)
    or more than 0 (``-u -1``, ``nan`` and ``inf`` were taken as no timeout, silently);
    ValueError says what is expected."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and (value >= 0 if none else value > 0)):
        raise ValueError(f"{text!r} is not a timeout: seconds, "
                         f"{'a number from 0 (none) up' if none else 'a number above 0'}")
    return value


def _seconds_option(none: bool) -> Callable[[str], float]:
    """:func:`seconds` as an argparse type (its error as argparse's usage error)."""
    def parse(text: str) -> float:
        try:
            return seconds(text, none)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def add_timeouts(parser: argparse.ArgumentParser, connect_help: str, connect_default: float | None) -> None:
    """-u command timeout, -t connect timeout (clush's spellings)."""
    parser.add_argument("-u", "--command_timeout", "--timeout", dest="timeout", type=_seconds_option(True),
                        default=0.0, metavar="SECONDS", help="per-command timeout (0 = none)")
    parser.add_argument("-t", "--connect_timeout", dest="connect_timeout", type=_seconds_option(False),
                        default=connect_default, metavar="SECONDS", help=connect_help)  # -t 0: no meaning


@frozen
class CopyRequest(Frozen):
    """``--copy``/``--rcopy`` (clush's): the sources and the directory they go to."""

    sources: tuple[str, ...]
    dest: str  # a directory: on the targets (--copy), on this machine (--rcopy)
    reverse: bool  # --rcopy: from the targets, each copy named NAME.<rank> (NAME.<host> over ssh)
    preserve: bool = False  # -p: times and exact modes, as clush -p (scp -p)


def add_copy_options(parser: argparse.ArgumentParser) -> None:
    """--copy, --rcopy, --dest (clush's spellings; -c is mpish's command, so --copy only)."""
    group = parser.add_argument_group("copying files (clush's options)")
    way = group.add_mutually_exclusive_group()
    way.add_argument("--copy", action="store_true",
                     help="copy the files or directories named by the words after the options to "
                     "the targets, verified, and exit (as :put -r)")
    way.add_argument("--rcopy", action="store_true",
                     help="copy them from the targets here, each copy named NAME.<target> (as clush)")
    group.add_argument("-p", dest="preserve", action="store_true",
                       help="with --copy/--rcopy: keep the files' modification times and modes (as clush)")
    group.add_argument("--dest", metavar="DIR",
                       help="the existing directory they go to (default: each source's own directory, "
                       "as clush: --copy /etc/motd writes /etc/motd on the targets)")


def parse_copy(parser: argparse.ArgumentParser, argv: Sequence[str], options: list[str],
               words: Sequence[str]) -> tuple[argparse.Namespace, CopyRequest | None]:
    """The arguments of ``options`` (the words of ``argv`` before the command ``words``), and
    with ``--copy`` or ``--rcopy`` among them a :class:`CopyRequest` whose sources are
    ``words``: there, as clush 1.9 reads them after --copy, options may come between and
    after the files (``--copy a b --dest /tmp -x node3``), and ``--`` makes every later word
    a file. Usage errors exit through ``parser``."""
    args = parser.parse_args(options)
    if args.diff and (args.lines or args.json or args.verbose):  # it was dropped, silently
        parser.error("--diff compares gathered outputs: not with -L, -v or --json (clush: option mismatch)")
    if getattr(args, "json", False) and (args.lines or args.verbose):  # they were ignored, silently
        parser.error("--json prints one JSON object per target: not with -L or -v (other displays)")
    if not (args.copy or args.rcopy):
        if args.dest is not None:
            parser.error("--dest goes with --copy or --rcopy")
        if args.preserve:  # (clush's -p; at the console, :put -p and :get -p)
            parser.error("-p keeps a copy's times and modes: it goes with --copy or --rcopy")
        return args, None
    rest, literal = list(words), []  # literal: the words after a --, all files
    if rest and len(argv) > len(rest) and argv[-len(rest) - 1] == "--":  # split_command took a --
        rest, literal = [], rest
    elif "--" in rest:
        at = rest.index("--")
        rest, literal = rest[:at], rest[at + 1 :]
    sources: list[str] = []
    while rest:
        sources.append(rest[0])
        more, rest = split_command(parser, rest[1:])  # the options up to the next file
        options += more
    sources += literal
    args = parser.parse_args(options)
    if args.command is not None or args.commands_from is not None:
        parser.error("--copy/--rcopy take the files as their words: give no command (-c or -C)")
    if not sources:
        parser.error(f"--{'rcopy' if args.rcopy else 'copy'} needs the files to copy (as its last words)")
    if args.dest == "":
        parser.error("--dest needs a directory")
    if getattr(args, "json", False):
        parser.error("--json reports commands; --copy/--rcopy say how each copy went in a line on "
                     "stderr, and exit 1 if any failed")
    return args, CopyRequest(tuple(sources), args.dest or "", bool(args.rcopy), bool(args.preserve))


def refused_sources(request: CopyRequest) -> list[str]:
    """Why each ``--copy`` source cannot be sent, a line each: every source is checked before
    anything is copied or any host reached, as clush does (a missing one was a line among the
    others' reports, which were copied all the same: a clush user's trial). ``--rcopy``'s are
    on the targets: each is asked of them in its turn. Two sources written to one place (one
    name, one --dest) are refused alike, either way: the second copy would replace the first
    (helper-144: --rcopy /a/same /b/same --dest d wrote d/same.host1 twice, status 0)."""
    refused: list[str] = []
    placed: dict[str, str] = {}
    for source in request.sources:
        name = os.path.basename(os.path.normpath(source))
        copy = os.path.join(request.dest or os.path.dirname(os.path.abspath(source)), name)
        if placed.setdefault(copy, source) != source:
            refused.append(f"--{'rcopy' if request.reverse else 'copy'}: {placed[copy]!r} and {source!r} "
                           f"would both be written as {copy}{'.<host or rank>' if request.reverse else ''} "
                           "(copy them in two runs, with another --dest)")
    for source in () if request.reverse else request.sources:
        where = "" if os.path.isabs(source) else f" (in {os.getcwd()})"
        if not os.path.exists(source):
            link = " (a symbolic link to nothing)" if os.path.islink(source) else ""
            refused.append(f"--copy: no file or directory {source!r}{link} on this machine{where}")
        elif not (os.path.isfile(source) or os.path.isdir(source)):
            refused.append(f"--copy: {source!r} is not a regular file or a directory (a FIFO, device or "
                           "socket): scp refuses it too")
    return [f"{line}; nothing was copied" for line in refused]


def exit_status(statuses: Sequence[int], maxrc: bool, interrupted: bool = False) -> int:
    """-S: the largest remote status; --no-maxrc: 0 (mpish ran; failures were reported); 130
    after a Ctrl-C, whatever the commands did with it, as clush (a host not reached because
    of it counted 255, and a command that handled it exited 0)."""
    if interrupted:
        return 130
    return max(statuses, default=0) if maxrc else 0


def split_command(
    parser: argparse.ArgumentParser, argv: Sequence[str], leading: int = 0
) -> tuple[list[str], list[str]]:
    """``argv`` as (options and the first ``leading`` positionals, the command's words).

    Walks ``argv`` as ``parser`` would: an option that takes a value takes the next word
    whatever it looks like (so ``-o -F/path`` works, rewritten ``-o=-F/path``); ``--``
    ends the options; the first positional after ``leading`` of them starts the command.
    Unknown options are left for argparse to refuse.
    """
    actions = parser._option_string_actions
    options: list[str] = []
    positionals = 0
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            rest = list(argv[i + 1 :])
            if positionals < leading and rest:
                options.append(rest.pop(0))
            return options, rest
        if not word.startswith("-") or word == "-":
            if positionals >= leading:
                return options, list(argv[i:])
            positionals += 1
            options.append(word)
            i += 1
            continue
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            action = actions.get(name)
            if action is not None and action.nargs != 0 and "=" not in word and i + 1 < len(argv):
                options.append(f"{name}={argv[i + 1]}")
                i += 2
                continue
            options.append(word)
            i += 1
            continue
        # short options: flags may be bundled (-Sq); one taking a value ends the bundle
        for at in range(1, len(word)):
            action = actions.get(f"-{word[at]}")
            if action is None or action.nargs == 0:
                continue
            if at + 1 == len(word) and i + 1 < len(argv):  # its value is the next word
                options.append(f"{word}{argv[i + 1]}" if at > 1 else f"{word}={argv[i + 1]}")
                i += 2
                break
            options.append(word)
            i += 1
            break
        else:
            options.append(word)
            i += 1
    return options, []


def stdin_to_send(nostdin: bool, fd: int = 0) -> int | None:
    """The fd that ``-c`` broadcasts as the command's stdin: ``fd``, unless ``--nostdin``, or
    it is a terminal (as clush: nothing is read from it), closed, ``/dev/null`` or an empty
    file (cron's and CI's stdin: nothing to send, so ``-f`` keeps its fan-out limit)."""
    try:
        if nostdin or os.isatty(fd):
            return None
        info = os.fstat(fd)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.stat(os.devnull).st_rdev:
            return None
        if stat.S_ISREG(info.st_mode) and info.st_size <= os.lseek(fd, 0, os.SEEK_CUR):
            return None
    except OSError:
        return None
    return fd


def launcher_rank() -> str:
    """This process's rank as its launcher says it, before MPI starts ("" if none says):
    under ``mpiexec``/``srun`` every rank parses the same options."""
    for name in ("PMI_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        if name in os.environ:
            return os.environ[name]
    return ""
