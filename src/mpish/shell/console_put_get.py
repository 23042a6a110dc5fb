"""``:put`` and ``:get`` at the console's prompt: their arguments, the local checks, a
progress bar and the report (the transfers themselves: :mod:`.console_transfer`)."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mpish.wire.text import escape

from . import console_transfer as transfer
from .console import Console
from .grouping import Style
from .names import fold_by_reason
from .transfer import foreign

PUT_USAGE = "usage: :put [-r] [-p] LOCAL [REMOTE], or LOCAL... DIRECTORY"
GET_USAGE = "usage: :get [-r] [-p] REMOTE [LOCAL], or REMOTE... DIRECTORY"
Keys = Callable[[], contextlib.AbstractContextManager[object]]  # Ctrl-C as a key while it runs


@dataclass
class Tally:
    """One --copy/--rcopy source's results over its targets and turns (-f), reported once for all."""

    verdicts: dict[int, str] = field(default_factory=dict)  # filled by the transfers as answers come
    size: int = 0
    seconds: float = 0.0
    extra: str = ""
    check: str = ""
    paths: dict[int, Path] = field(default_factory=dict)  # get: each target's local copy
    tree: bool = False

    def add(self, ranks: Iterable[int], size: int, seconds: float, extra: str, check: str) -> int:
        """A turn's transfer to ``ranks`` ended (its verdicts are in already); its status
        (:func:`~mpish.shell.console_transfer.copy_status`)."""
        self.size, self.seconds, self.extra, self.check = size, self.seconds + seconds, extra, check
        return transfer.copy_status({rank: self.verdicts.get(rank, "") for rank in ranks})

    def report(self, console: Console, what: str, err: IO[str]) -> int:
        if not self.verdicts:
            return 0
        status = report(console, what, self.verdicts, self.size, self.seconds, err, self.extra, self.check)
        for line in written_lines(self.verdicts, self.paths, self.tree):  # in rank (node set) order, not
            print(line)  # the order in which the turns (-f) ended
        sys.stdout.flush()
        return status


class Progress:
    """A one-line progress bar on a terminal (stderr), nothing otherwise."""

    def __init__(self, label: str, total: int, stream: IO[str]) -> None:
        self.label, self.total, self.stream = label, total, stream
        self.enabled = stream.isatty()
        self.started = self.shown = time.monotonic()
        self.done = 0  # bytes so far (a get's, from all its targets: for the report's rate)

    def __call__(self, done: int, total: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.enabled or now - self.shown < 0.1:
            return
        self.shown = now
        total = total or self.total
        rate = done / max(now - self.started, 1e-6) / 2**20
        if total:
            width = 30
            filled = width * done // total
            bar = "#" * filled + "." * (width - filled)
            text = f"\r{self.label} [{bar}] {100 * done // total:3d}% {rate:7.1f} MiB/s"
        else:
            text = f"\r{self.label} {done / 2**20:9.1f} MiB {rate:7.1f} MiB/s"
        self.stream.write(text)
        self.stream.flush()

    def end(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def parse(rest: str, usage: str) -> tuple[bool, bool, list[str]]:
    """(-r given, -p given, the paths: one or two, or several and a directory) of a :put or
    :get line; ValueError with the
    usage. -p keeps the times and exact modes, as ``scp -p`` (``-rp`` is both).

    The words are read as a POSIX shell reads quotes ('...', "...", backslashes), without
    expansions: no $VAR, $'...' or glob (a name is given as it is)."""
    words = parse_words(rest, usage)
    given: set[str] = set()
    while words and words[0].startswith("-") and words[0] != "-":
        option = words.pop(0)
        if option == "--":
            break
        letters = set(option[1:].replace("R", "r"))
        if option.startswith("--") or not letters <= {"r", "p"}:
            raise ValueError(f"unknown option {option}: {usage}")
        given |= letters
    if not words:
        raise ValueError(usage)
    if "" in words:  # :get '' read the cwd ("/tmp/h5 is a directory (use :get -r)")
        raise ValueError(f"an empty path ('') names no file: {usage}")
    return "r" in given, "p" in given, words


def _several(builtin: Callable[[str, Keys], int], lines: list[str], keys: Keys, err: IO[str]) -> int:
    """Each source's line run in turn, as cp goes on past a source it cannot copy (said, and
    the status at least 1); the largest status. A Ctrl-C ends it there, with 130."""
    status, stopped = 0, False

    @contextlib.contextmanager
    def watched() -> Iterator[object]:  # whether Ctrl-C was typed during a source's transfer
        nonlocal stopped
        with keys() as pressed:
            try:
                yield pressed
            finally:
                stopped = stopped or bool(getattr(pressed, "interrupted", False))

    for line in lines:
        try:
            status = max(status, builtin(line, watched))
        except ValueError as exc:
            print(Style.for_stream(err).error(f"mpish: {exc}"), file=err)
            err.flush()
            status = max(status, 1)
        if stopped:
            return 130
    return status


def _each(recursive: bool, preserve: bool, words: list[str], usage: str) -> list[str]:
    """The lines of a :put or :get of several sources: one per source, into ``words[-1]/``;
    ValueError if two sources have one name (the second copy would replace the first)."""
    names: dict[str, str] = {}
    for source in words[:-1]:
        first = names.setdefault(os.path.basename(os.path.normpath(source)), source)
        if first != source:
            raise ValueError(f"{first!r} and {source!r} have the same name: both would be written as "
                             f"{words[-1].rstrip('/')}/{os.path.basename(os.path.normpath(source))}; "
                             f"nothing was copied ({usage})")
    flags = "".join(flag for flag, given in (("r", recursive), ("p", preserve)) if given)
    into = words[-1].rstrip("/") + "/"  # a directory, which must exist (as cp's last word)
    return [shlex.join([*([f"-{flags}"] if flags else []), "--", source, into]) for source in words[:-1]]


def parse_words(rest: str, usage: str) -> list[str]:
    """A built-in's words, read as a POSIX shell reads quotes, without expansions."""
    try:
        return shlex.split(rest)
    except ValueError as exc:  # shlex's "No closing quotation", alone, said neither where nor what
        raise ValueError(f"{exc.args[0] if exc.args else exc} in {rest.strip()!r} (quotes are read as "
                         f"a shell reads them, on one line: {usage})") from None


def console_directory() -> str:
    """The console's own directory (where :put reads and :get writes); a ValueError saying what
    to do if another program removed it (each :put, :get and :lcd said only "[Errno 2] No such
    file or directory", and the session could not go on: helper-141)."""
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise ValueError("the console's local directory was removed (by another program): :lcd DIR "
                         "goes to another") from None


def put_builtin(console: Console, targets: frozenset[int], rest: str, keys: Keys, err: IO[str],
                into: bool = False, tally: Tally | None = None) -> int:
    """``:put [-r] [-p] LOCAL [REMOTE]``; 0 if every target has its verified copy, else 1. ``into``:
    a tree goes to REMOTE/NAME, REMOTE being an existing directory (clush's --copy --dest).
    With a ``tally`` the results are added to it, for one report later (copying.copy_files)."""
    recursive, preserve, words = parse(rest, PUT_USAGE)
    if len(words) > 2:  # several sources, as cp and scp: each into the directory the last word names
        return _several(lambda line, watched: put_builtin(console, targets, line, watched, err, into=True),
                        _each(recursive, preserve, words, PUT_USAGE), keys, err)
    local = os.path.expanduser(words[0])  # a path of the console's machine: ~ is the user's home there
    where = ("" if os.path.isabs(local)
             else f" in the console's directory {console_directory()} (not the targets')")
    is_dir = os.path.isdir(local)
    if is_dir and not recursive:
        raise ValueError(f"{local!r} is a directory on the console's machine: "
                         f"use :put -r {shlex.quote(local)} to copy it and what it holds")
    if not is_dir and os.path.exists(local) and not os.path.isfile(local):  # as scp says it
        raise ValueError(f"{local!r} is not a regular file (a FIFO, device or socket): :put copies "
                         "regular files, and directories with -r")
    if not is_dir and os.path.islink(local) and not os.path.exists(local):  # it is there: not "no file"
        raise ValueError(f"{local!r}{where} is a symbolic link to {os.readlink(local)!r}, which does not "
                         "exist: :put copies what the link it is given leads to, as cp does (with -r too: "
                         "only the links inside a tree are copied as links)")
    if not is_dir and not os.path.isfile(local):
        raise ValueError(f":put copies a file of the console's machine: no file {local!r}{where}")
    progress = Progress(f"put {escape(os.path.basename(os.path.normpath(local)))}", 0 if is_dir else
                        os.path.getsize(local), err)
    started = time.monotonic()
    own = None if tally is None else tally.verdicts  # a Ctrl-C after an answer keeps it (transfer.get)
    with keys():
        try:
            if is_dir:
                remote = words[1] if len(words) == 2 else "."
                sent = transfer.put_tree(console, local, remote, targets, progress, into, verdicts=own,
                                         preserve=preserve)
            else:
                remote = words[1] if len(words) == 2 else os.path.basename(local)
                sent = transfer.put(console, local, remote, targets, progress, verdicts=own,
                                    preserve=preserve)
        finally:
            progress.end()
    files = f"{sent.files} file{'' if sent.files == 1 else 's'}, " if is_dir else ""
    if tally is not None:
        return tally.add(targets, sent.bytes, time.monotonic() - started, files, check(console, is_dir))
    return report(console, "put", sent.verdicts, sent.bytes, time.monotonic() - started, err, files,
                  check(console, is_dir))


def get_builtin(console: Console, targets: frozenset[int], rest: str, keys: Keys, err: IO[str],
                suffixed: bool = False, tally: Tally | None = None) -> int:
    """``:get [-r] [-p] REMOTE [LOCAL]``; the paths written are printed; 0 if all arrived.
    ``suffixed``: NAME.<target> even from one target (clush's --rcopy). With a ``tally`` the
    results are added to it, for one report later (copying.copy_files)."""
    recursive, preserve, words = parse(rest, GET_USAGE)
    if len(words) > 2:  # several sources: each into the local directory the last word names
        into = os.path.expanduser(words[-1])
        if not os.path.isdir(into):  # (-r: the first tree became it, the others went inside)
            raise ValueError(f"{words[-1]!r} is not a directory of the console's machine: several sources "
                             f"go into an existing one, as with cp; make it first ({GET_USAGE})")
        return _several(lambda line, watched: get_builtin(console, targets, line, watched, err, suffixed),
                        _each(recursive, preserve, words, GET_USAGE), keys, err)
    remote = words[0]
    local = (os.path.expanduser(words[1]) if len(words) == 2  # the console's: ~ is the user's home there
             else "." if recursive else os.path.basename(remote))
    if not os.path.isabs(local):
        console_directory()
    progress = Progress(f"get {escape(os.path.basename(os.path.normpath(remote)))}", 0, err)
    written = transfer.get_destinations(console, remote, local, console.idle(targets), recursive, suffixed)
    missing = sorted({str(path.parent) for path in written.values() if not path.parent.is_dir()})
    if missing:  # one line, before anything is sent (it used to be one per target, in any order)
        print(Style.for_stream(err).error(
            f"mpish: get: the local directory {escape(missing[0])} does not exist (LOCAL is on the console's "
            f"side, relative to {console_directory()}); make it first, or give an existing one"), file=err)
        err.flush()
        return 1
    started = time.monotonic()
    verdicts: dict[int, str] = {}
    if tally is not None:  # a Ctrl-C after a copy was renamed into place keeps its verdict (transfer.get)
        tally.paths.update(written)
        tally.tree, verdicts = recursive, tally.verdicts
    with keys():
        try:
            transfer.get(console, remote, local, targets, progress, tree=recursive, suffixed=suffixed,
                         verdicts=verdicts, preserve=preserve)
        finally:
            progress.end()
    if tally is not None:
        received = tally.size + progress.done  # (the turns' bytes add up, a put's file is the same in each)
        return tally.add(written, received, time.monotonic() - started, "", check(console, recursive))
    status = report(console, "get", verdicts, progress.done, time.monotonic() - started, err,
                    check=check(console, recursive))
    for line in written_lines(verdicts, written, recursive):
        print(line)
    sys.stdout.flush()
    return status


def written_lines(verdicts: dict[int, str], paths: dict[int, Path], tree: bool) -> list[str]:
    """The local copies a get wrote, a line each, in rank order."""
    lines = []
    for rank, local in sorted(paths.items()):
        error, path = verdicts.get(rank), local.absolute()  # the console's cwd is not the prompt's remote one
        if error == "":
            lines.append(f"  {escape(str(path))}{'/' if tree and path.is_dir() else ''}")
        elif error and tree and _made_here(path) and error != "nothing was received":
            lines.append(f"  {escape(str(path))}/ (written, but see the error above)")  # in part
    return lines


def _made_here(path: Path) -> bool:
    """A tree's root a copy may have written into: a directory, neither a link nor another
    user's (a refused one was listed as written, a security review)."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and not foreign(info)


def check(console: Console, tree: bool) -> str:
    """What was checked of a copy: a tree's files and anything over MPI carry a SHA-256; a
    file over ssh is not hashed (ssh authenticates its bytes; mpish.shell.transfer)."""
    if tree or transfer.verifies(console):
        return "SHA-256 verified"
    return "size verified, bytes authenticated by ssh"


def report(console: Console, what: str, verdicts: dict[int, str], size: int, seconds: float, err: IO[str],
           extra: str = "", check: str = "SHA-256 verified") -> int:
    """One line for the targets that succeeded, one per distinct error; the status
    (:func:`~mpish.shell.console_transfer.copy_status`: 0 if none failed)."""
    good = [r for r, e in verdicts.items() if not e]
    if good:
        per_second = size / max(seconds, 1e-6)
        rate = "" if not size else (f", {per_second / 2**20:.1f} MiB/s" if per_second >= 2**20
                                    else f", {per_second / 2**10:.1f} KiB/s" if per_second >= 2**10
                                    else f", {per_second:.0f} B/s")  # not "0.0 MiB/s", "0.0 KiB/s"
        print(f"mpish: {what} {console.describe(good)}: ok, {check} ({extra}{seconds:.2f} s{rate})")
    # identical errors folded, also those naming their host (ssh's words): as "%h" (names.py)
    failures = fold_by_reason((rank, console.describe([rank]), why) for rank, why in verdicts.items() if why)
    sys.stdout.flush()
    style = Style.for_stream(err)
    for ranks, error in sorted(failures, key=lambda item: min(item[0])):  # in rank order
        print(style.error(f"mpish: {what} {console.describe(ranks)}: {error}"), file=err)
    err.flush()
    return transfer.copy_status(verdicts)
