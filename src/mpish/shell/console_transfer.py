"""The console's side of put and get, of a file or a tree (``-r``): send, receive, name the copies.

Theory of operation
-------------------
A transfer is an operation on the console's table (:data:`~mpish.shell.conversation.CONSOLE`),
as ``:attach`` is: sending its start (``PutStart``/``TreePut``, ``GetStart``/``TreeGet``)
through :meth:`Console.send` moves each target from IDLE to PUTTING or GETTING, every
answer the table lets through in that state comes to the operation's handler
(:meth:`Console.routed`), and the verdict (``PutDone``, ``GetEnd``) moves it back.

Sending (put) reads one chunk or one tree entry at a time and sends it to every target
once all of them have credit for it (each server returns :class:`~mpish.shell.protocol.Credit`
for what it wrote), so at most ``WINDOW`` bytes per target are in flight and one chunk
is in memory, however large the file or tree. Receiving (get) writes each chunk as it
comes and credits it once written. Files land in part files renamed once verified;
trees are rebuilt without following links (:mod:`mpish.shell.tree`).

A transfer is bounded as a command is (:class:`Clock`): the session's command timeout (``-u``,
``:timeout``) stops it, as clush's ``-u`` bounds a copy, and a target that has not answered
:data:`~mpish.shell.silence.ANSWER_GRACE` seconds after its transfer was stopped (a Ctrl-C or
the timeout) is given up as a silent server is during a command: its process stopped, its host
frozen or cut off. Before, a frozen host held the console for ever, whatever Ctrl-C said
(a clush user's review).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpish.wire.text import escape

from . import protocol as p
from .console import Console
from .conversation import ConsoleState, Refused
from .names import TIMED_OUT
from .silence import ANSWER_GRACE, GIVEN_UP
from .transfer import (
    PartFile,
    cannot_write,
    changed,
    destination,
    digests_needed,
    extra_window,
    new_digest,
    open_regular,
    shared_warning,
    umask,
)
from .tree import TreeReader, TreeWriter, cost, source_name, tree_destination

Progress = Callable[[int, int], None]  # (bytes done, total; 0 = unknown)


@dataclass
class Sent:
    """What a put sent: bytes and files (for the report), each target's verdict."""

    bytes: int = 0
    files: int = 0
    verdicts: dict[int, str] = field(default_factory=dict)


def put(console: Console, local: str | os.PathLike[str], remote: str, ranks: Iterable[int],
        progress: Progress | None = None, verdicts: dict[int, str] | None = None,
        preserve: bool = False) -> Sent:
    """Copy the local file ``local`` to ``remote`` on ``ranks`` (a directory receives it
    under its own name); each rank's verdict ('' = written and SHA-256 verified), put in
    ``verdicts`` as it comes (:func:`get`). ``preserve`` (-p): its times and exact mode."""
    path = Path(local)
    try:
        handle = open_regular(path)
        info = os.fstat(handle.fileno())
    except OSError as exc:
        raise ValueError(f"cannot read {local} on the console's machine: {exc.strerror}") from None
    xfer_id = console.new_id()
    digest: Any = new_digest(verifies(console))
    problem = ""  # the file changed while it was read: the targets discard what they got
    size = 0  # bytes read: a file of /proc says 0 in its stat and holds more

    def chunks() -> Iterator[object]:
        nonlocal problem, size
        with handle:
            while chunk := handle.read(p.CHUNK):
                digest.update(chunk)
                size += len(chunk)
                yield p.Chunk(chunk)
            problem = changed(handle.fileno(), info, local)

    def verdict(done: p.PutDone) -> str:
        mismatch = "" if done.sha256 == digest.digest() else "checksum mismatch"
        return problem or escape(done.error) or mismatch

    def end(aborted: bool) -> p.PutEnd:
        return p.PutEnd(xfer_id, size, digest.digest(), aborted or bool(problem))

    start = p.PutStart(xfer_id, remote, info.st_size, info.st_mode & 0o777, path.name, preserve,
                       info.st_atime_ns, info.st_mtime_ns)
    sent = _send(console, ranks, start, chunks(), end, verdict,
                 lambda done: progress(done, info.st_size) if progress else None, verdicts=verdicts)
    sent.files = 1
    return sent


def verifies(console: Console) -> bool:
    """Whether this session's files are hashed end to end: over MPI, not over ssh
    (:func:`~mpish.shell.transfer.digests_needed`)."""
    return any(digests_needed(peer.channel) for peer in console.peers.values())


def put_tree(console: Console, local: str | os.PathLike[str], remote: str, ranks: Iterable[int],
             progress: Progress | None = None, into: bool = False,
             verdicts: dict[int, str] | None = None, preserve: bool = False) -> Sent:
    """Copy the local tree ``local`` to ``remote`` on ``ranks`` as ``cp -r`` does (an existing
    directory receives it under its own name, else ``remote`` becomes the copy); ``into``:
    always as ``remote/NAME``, ``remote`` being an existing directory (clush --copy --dest)."""
    xfer_id = console.new_id()
    try:
        reader = TreeReader(local, xfer_id)
    except OSError as exc:
        raise ValueError(f"cannot read {local} on the console's machine: {exc.strerror}") from None
    files = 0

    def entries() -> Iterator[object]:
        nonlocal files
        while (message := reader.next(p.CHUNK)) is not None:
            files += isinstance(message, p.Entry) and message.kind == "file"
            yield message

    start = p.TreePut(xfer_id, remote, source_name(os.fspath(local)), into, preserve)
    try:
        sent = _send(console, ranks, start, entries(), lambda aborted: p.TreeEnd(xfer_id, aborted),
                     lambda done: escape(done.error), lambda done: progress(done, 0) if progress else None,
                     decided=True, verdicts=verdicts)
    finally:
        reader.close()
    sent.files = files
    return sent


NO_ANSWER = "interrupted before its answer came (the copy may be complete)"
TIMED_OUT_WORDS = "timed out after "  # a verdict the timeout cut (Clock.said)
GIVEN_UP_WORDS = "no answer "  # a target silent after the stop, given up (Clock.give_up)


def copy_status(verdicts: dict[int, str]) -> int:
    """A copy's exit status, as a command's: 0 if every target has its copy; 255 if the
    timeout cut one (clush -S exits 255 after a "command timeout"; -u gave 1 for a copy and
    255 for a command) or one was given up (a host lost, as one that could not run); else 1."""
    failed = [why for why in verdicts.values() if why]
    if any(why.startswith((TIMED_OUT_WORDS, GIVEN_UP_WORDS)) for why in failed):
        return TIMED_OUT
    return 1 if failed else 0


class Expired(Exception):
    """The session's command timeout passed during a transfer (:class:`Clock`)."""


class Clock:
    """A transfer's deadline (the session's command timeout) and its stop (module doc)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.limit = console.timeout
        self.expires = time.monotonic() + self.limit if self.limit > 0 else math.inf
        self.stopped = math.inf  # when the transfer was stopped (a Ctrl-C, the timeout)
        self.timed_out = False
        self.cut: set[int] = set()  # the targets still at it when the timeout stopped it

    def check(self) -> bool:
        """Raise :class:`Expired` once the deadline has passed; False (a wait's test goes on)."""
        if not self.timed_out and time.monotonic() >= self.expires:
            self.timed_out = True
            raise Expired
        return False

    def stop(self) -> None:
        self.stopped = min(self.stopped, time.monotonic())

    def silent(self, pending: list[int]) -> bool:
        """True once the targets still ``pending`` after the stop have had their grace."""
        return bool(pending) and time.monotonic() - self.stopped >= ANSWER_GRACE

    def give_up(self, pending: list[int], verdicts: dict[int, str]) -> None:
        """The targets that did not answer within the grace: lost, as silent servers are."""
        why = f"{GIVEN_UP_WORDS}{ANSWER_GRACE:g} s after the copy was stopped: {GIVEN_UP}"
        for rank in pending:
            verdicts.setdefault(rank, why)
            peer = self.console.peers[rank]
            peer.alive, peer.lost = False, why
            self.console.session.give_up(rank)

    def said(self, verdicts: dict[int, str]) -> None:
        """The verdicts of the targets the timeout cut (``cut``) say so; any other stands (a copy
        done before it, a target lost before; the verdicts of a --copy's other hosts)."""
        for rank in self.cut:
            verdict = verdicts.get(rank, "")
            if verdict and not verdict.startswith(GIVEN_UP_WORDS):
                verdicts[rank] = f"{TIMED_OUT_WORDS}{self.limit:g} s: {verdict}"


def _send(console: Console, ranks: Iterable[int], start: p.PutStart | p.TreePut, body: Iterator[object],
          end: Callable[[bool], object], verdict: Callable[[p.PutDone], str],
          progress: Callable[[int], None], decided: bool = False,
          verdicts: dict[int, str] | None = None) -> Sent:
    """Send ``start``, every message of ``body`` within each target's credit, then ``end``;
    Ctrl-C aborts (the targets discard what they received of the file being sent).

    ``decided`` (a tree): nothing after ``start`` goes out before every target has answered it
    (its first Credit, or its PutDone if it refused): each has then read where the tree goes
    (an existing directory receives it under its name, as cp -r), before any target made a
    directory. Ranks on one file system decided one after another's mkdir: ``dest/f`` from
    one rank, ``dest/d/f`` from the others."""
    targets = console.idle(ranks)
    credit = {rank: p.WINDOW + extra_window(console.peers[rank].channel) for rank in targets}
    answered: set[int] = set()
    sent = Sent(verdicts={} if verdicts is None else verdicts)
    clock = Clock(console)

    def putting() -> list[int]:
        return console.in_state(ConsoleState.PUTTING, targets)

    def answer(rank: int, message: object) -> None:
        answered.add(rank)
        if isinstance(message, p.Credit):
            credit[rank] += message.nbytes
        elif isinstance(message, p.PutDone):
            if message.xfer_id != start.xfer_id:
                raise Refused(f"PutDone of {message.xfer_id} refused: it is not the transfer going on")
            sent.verdicts[rank] = verdict(message)

    aborted = False
    with console.routed(answer):
        try:
            for rank in targets:
                console.send(rank, start)
            if decided:
                console.wait(lambda: clock.check() or all(rank in answered for rank in putting()))
            for message in body:
                needed = cost(message)
                console.wait(lambda n=needed: clock.check() or all(credit[r] >= n  # type: ignore[misc]
                                                                   for r in putting()))
                for rank in putting():
                    console.send(rank, message)
                    credit[rank] -= needed
                if isinstance(message, p.Chunk):
                    sent.bytes += len(message.data)
                    progress(sent.bytes)
        except BaseException as exc:  # Ctrl-C, the timeout, or the local file failed: the targets discard it
            aborted = True
            clock.stop()
            clock.cut = set(putting()) if isinstance(exc, Expired) else set()
            if not isinstance(exc, (KeyboardInterrupt, Expired)):
                raise
        finally:
            for rank in putting():
                console.send(rank, end(aborted))
            try:
                try:
                    console.wait(lambda: not putting() or clock.check() or clock.silent(putting()))
                except Expired:  # the last answers are late: they get their grace from now
                    clock.stop()
                    clock.cut = set(putting())
                    console.wait(lambda: not putting() or clock.silent(putting()))
            except KeyboardInterrupt:  # a Ctrl-C while the last answers come: those that came stand
                for rank in putting():
                    sent.verdicts.setdefault(rank, NO_ANSWER)
            if clock.silent(putting()):
                clock.give_up(putting(), sent.verdicts)
    for rank in targets:
        sent.verdicts.setdefault(rank, "rank lost")
    clock.said(sent.verdicts)
    return sent


def get_destinations(console: Console, remote: str, local: str | os.PathLike[str], ranks: Iterable[int],
                     tree: bool = False, suffixed: bool = False) -> dict[int, Path]:
    """Where ``get`` writes each rank's copy: LOCAL (an existing directory: LOCAL/NAME), and
    with several ranks (or ``suffixed``) ``NAME.<suffix>`` (rank over MPI, host over ssh), as
    clush --rcopy."""
    targets = sorted(set(ranks))
    if tree:
        name = source_name(remote)
        if not name and len(targets) > 1:
            raise ValueError(f"{remote!r} has no name for the copies: give LOCAL, a new directory "
                             f"(:get -r {remote} DIR makes DIR.<host> for each target)")
        base = tree_destination(Path(local), name)
    else:
        try:
            base = destination(Path(local), Path(remote).name or "unnamed", str(local).endswith("/"))
        except OSError as exc:  # another user's link named as the directory
            raise ValueError(escape(f"cannot write into {local}: {exc.strerror}")) from None
    if len(targets) == 1 and not suffixed:
        return {targets[0]: base}
    return {r: base.with_name(f"{base.name}.{console.file_suffix(r)}") for r in targets}


class FileCopy:
    """One target's copy of a file being received: a part file, committed once verified."""

    def __init__(self, final: Path, verify: bool = True, preserve: bool = False) -> None:
        self.final = final
        self.verify = verify
        self.preserve = preserve  # -p: the sender's times and exact mode
        self.part: PartFile | None = None  # made at the first chunk; it computes the digest
        self.size = 0
        self.error = ""  # writing here failed (a full disk): the rest is only counted

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.error:
            return
        try:
            if self.part is None:
                self.part = PartFile(self.final, verify=self.verify)
            self.part.write(data)
        except OSError as exc:
            self.error = escape(cannot_write(self.final, exc))
            self.close()

    def finish(self, end: p.GetEnd) -> str:
        if end.error or self.error:
            self.close()
            return escape(end.error) or self.error
        if end.size != self.size:
            self.close()
            return "checksum mismatch"
        try:
            part, self.part = self.part or PartFile(self.final, verify=self.verify), None
        except OSError as exc:
            return escape(cannot_write(self.final, exc))
        # the digest of what was written must be the sender's, the descriptor hold its size
        if self.preserve:
            return escape(part.commit(end.sha256, end.size, end.mode & 0o777, (end.atime_ns, end.mtime_ns)))
        return escape(part.commit(end.sha256, end.size, end.mode & 0o777 & ~umask()))

    def close(self) -> None:
        if self.part is not None:
            self.part.discard()
            self.part = None


class TreeCopy:
    """One target's copy of a tree being received (:class:`~mpish.shell.tree.TreeWriter`)."""

    def __init__(self, final: Path, preserve: bool = False) -> None:
        self.writer = TreeWriter(final, 0 if preserve else umask(), preserve)  # -p: exact modes

    def finish(self, end: p.GetEnd) -> str:
        if end.error:
            self.writer.close()
            return escape(end.error)
        return escape(self.writer.finish())

    def close(self) -> None:
        self.writer.close()


_WARNED: set[Path] = set()  # directories shared_warning was said of, by this process


def get(console: Console, remote: str, local: str | os.PathLike[str], ranks: Iterable[int],
        progress: Progress | None = None, tree: bool = False, suffixed: bool = False,
        verdicts: dict[int, str] | None = None, preserve: bool = False) -> dict[int, str]:
    """Copy the file (``tree``: the tree) ``remote`` from ``ranks`` to ``local`` (named as
    :func:`get_destinations` says); each rank's verdict ('' = written and verified), put in
    ``verdicts`` (the caller's) the moment its copy is renamed into place: a Ctrl-C after it,
    anywhere before this returns, cannot turn a finished copy into "interrupted before its
    answer came" (it did, in CI, for a --rcopy interrupted once its copies were there)."""
    xfer_id = console.new_id()
    targets = console.idle(ranks)
    finals = get_destinations(console, remote, local, targets, tree, suffixed)
    verify = verifies(console)
    copies: dict[int, FileCopy | TreeCopy] = {
        r: TreeCopy(finals[r], preserve) if tree else FileCopy(finals[r], verify, preserve) for r in targets}
    unsaid = {final.parent for final in finals.values()} - _WARNED  # once, not per group of hosts
    _WARNED.update(unsaid)
    warning = shared_warning(unsaid)
    if warning:
        print(f"mpish: {escape(warning)}", file=console.err)
    verdicts = {} if verdicts is None else verdicts
    received = 0
    interrupted = False

    def answer(rank: int, message: Any) -> None:
        nonlocal received
        # a chunk has no id: the table gives it to the get going on (protocol doc)
        if not isinstance(message, p.Chunk) and message.xfer_id != xfer_id:
            raise Refused(f"{type(message).__name__} of {message.xfer_id} refused: another transfer goes on")
        copy = copies[rank]
        if isinstance(message, p.GetEnd):
            console.consumed(rank, 0, final=True)
            verdicts[rank] = copy.finish(message)
            return
        if isinstance(message, p.Chunk):
            (copy.writer if isinstance(copy, TreeCopy) else copy).write(message.data)
            received += len(message.data)
            if progress:
                progress(received, 0)
        elif isinstance(copy, TreeCopy) and isinstance(message, p.Entry):
            copy.writer.entry(message)
        elif isinstance(copy, TreeCopy) and isinstance(message, p.FileEnd):
            copy.writer.end_file(message)
        else:
            raise Refused(f"{type(message).__name__} refused: not part of this get")
        console.consumed(rank, cost(message))

    clock = Clock(console)

    def getting() -> list[int]:
        return console.in_state(ConsoleState.GETTING, targets)

    def interrupt(why: str = "interrupting the get") -> None:
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: the answers still awaited are not waited for
            raise KeyboardInterrupt
        print(f"\nmpish: {why}", file=console.err)
        interrupted = True
        clock.stop()
        for rank in getting():
            console.send(rank, p.Interrupt(xfer_id))

    def done() -> bool:
        try:
            clock.check()
        except Expired:
            if not interrupted:
                clock.cut = set(getting())
                interrupt(f"the get timed out after {clock.limit:g} s: stopping it")
        return not getting() or clock.silent(getting())

    start = p.TreeGet if tree else p.GetStart
    try:
        with console.routed(answer):
            for rank in targets:
                console.send(rank, start(xfer_id, remote))
            try:
                console.wait(done, interrupt)
            except KeyboardInterrupt:  # the second: those that answered stand
                for rank in getting():
                    verdicts.setdefault(rank, NO_ANSWER)
            if clock.silent(getting()):
                clock.give_up(getting(), verdicts)
    finally:
        for copy in copies.values():
            copy.close()
    for rank in targets:
        verdicts.setdefault(rank, "rank lost")
    clock.said(verdicts)
    return verdicts
