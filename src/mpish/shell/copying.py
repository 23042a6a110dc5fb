"""clush's ``--copy``/``--rcopy``: each source as ``:put -r``/``:get -r`` of the console
(:mod:`.console_put_get`), to every target, one report per source.

Theory of operation
-------------------
Over MPI every target is connected already: each source goes to (or comes from) all of
them at once (or ``fanout`` at a time, if given).

Over ssh the copy starts while the hosts are still connecting, and ``-f`` is a *sliding
window* of connections, as clush's: at most ``fanout`` hosts are connected (or still
connecting, or hanging up: :meth:`SshSession.closing <mpish.shell.ssh_session.SshSession.closing>`)
at once. A host's turn connects it (:meth:`Session.join
<mpish.shell.session.Session.join>` without a first message: GREETING until its Hello);
whenever hosts have greeted, every source goes to them as one group, they are hung up
(:meth:`Session.release <mpish.shell.session.Session.release>`), and their places go to
the next hosts at once. So a host whose login hangs holds one place until its deadline
(ssh's ConnectTimeout, ``-t``, and the Hello slack), never the others: they were copied in
fixed batches of ``-f`` before, each batch waiting for its slowest login (40 hosts, 9 of
them silent, ``-f 8``: 2.3 times clush's time). Hosts that greet while a group's transfer
runs wait for its end; the transfers of a group read each source once for all of them. So a
group does not start with the first host to greet while those that began to log in before
it did are still at it (a clush user's trial: of 4 alike hosts one got 1 GiB alone, the 3
others after it): it waits for them, up to :data:`GATHER` seconds after the first greeted;
a host that joins the window later does not hold it.

A Ctrl-C ends the copy there (130, as cp): hosts still connecting are given up, and what
was not sent is named. One report per source, naming it, once every host had its turn.
``mpish ssh``'s SIGTERM and SIGHUP do the same (:func:`~mpish.shell.keyboard.terminate_as_interrupt`,
then 128+N): the file being received is a part file, removed as at a Ctrl-C; killed by the
signal, mpish left it behind (a clush user's trial: 82 MB of a killed --rcopy).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import IO

from mpish.wire.text import escape

from . import console_transfer as transfer
from .console import Console
from .console_put_get import Keys, Tally, get_builtin, put_builtin
from .conversation import ConsoleState, Local
from .grouping import Style
from .keyboard import deaf_to_sigint
from .names import RANK_LOST
from .options import CopyRequest, refused_sources
from .session import INTERRUPTED_CONNECTING

NOT_SENT = "not copied: the source was refused (above)"
INTERRUPTED_WAITING = "interrupted before its turn (connected, it waited for the copy to the hosts ahead)"

TICK = 0.1  # s: the longest wait for a Hello before the window is looked at again (deadlines)
GATHER = 1.0  # s: how long greeted hosts wait for those logging in since before (module doc)

Copy = tuple[str, str, Tally]  # a source, its destination, its results


def copy_files(console: Console, targets: frozenset[int], request: CopyRequest, keys: Keys,
               err: IO[str], fanout: int = 0) -> int:
    """``--copy``/``--rcopy`` (module doc): each source into the request's directory, which
    must exist (default: the source's own, made absolute here, as clush does), a file or a
    tree alike; 0 if every source reached (or came from) every target, else 1; 2 (nothing
    copied) if a --copy source cannot be sent; 130 after a Ctrl-C. ``fanout`` (clush's
    ``-f``): the connections open at once over ssh."""
    style = Style.for_stream(err)

    def say(text: str) -> None:
        print(style.error(f"mpish: {text}"), file=err)
        err.flush()

    status, copies = _sources(request, say)
    state = _Copying(console, copies, request.reverse, keys, err, say)
    state.preserve = request.preserve
    ordered = sorted(targets)
    sliding = bool(console.session.later) or any(not peer.ready for peer in console.peers.values())
    if copies and sliding:  # ssh: hosts connected in their turn, or still greeting
        _slide(state, ordered, fanout)
    step = fanout if fanout > 0 else max(1, len(ordered))  # all connected: batches of -f, if any
    for at in range(0, len(ordered), step) if copies and not sliding else ():
        state.copy_to(frozenset(ordered[at : at + step]))
        if state.interrupted:
            break
    for source, _, tally in copies:
        what = f"get {escape(source)} from" if request.reverse else f"put {escape(source)} to"
        status = max(status, tally.report(console, what, err))
        missed = sorted(set(targets) - set(tally.verdicts))
        if state.interrupted and missed:
            say(f"interrupted: {escape(source)} was not {'got from' if request.reverse else 'sent to'} "
                f"{console.describe(missed)}")
    return 130 if state.interrupted else max(status, state.status)


def _sources(request: CopyRequest, say: Callable[[str], None]) -> tuple[int, list[Copy]]:
    """Each source checked here, before any transfer: (2 and none if a --copy source is refused,
    :func:`~mpish.shell.options.refused_sources`; 1 and the others if an --rcopy one is)."""
    def no_directory(dest: str) -> str:
        return (f"--rcopy: {dest} is not a directory of this machine (--dest names an existing one; "
                "the copies are NAME.<target> in it)")

    if request.reverse and request.dest and not os.path.isdir(request.dest):  # said once, not per file
        say(no_directory(request.dest))
        return 1, []
    refused = refused_sources(request)  # --copy: a usage error, nothing sent (mpish ssh: no host reached)
    for line in refused:
        say(line)
    if refused:
        return 2, []
    status, copies = 0, []
    for source in request.sources:
        dest = request.dest or os.path.dirname(os.path.abspath(source))
        if request.reverse and not os.path.isdir(dest):  # the source's own directory
            say(no_directory(dest))
            status = 1
        else:
            copies.append((source, dest, Tally()))
    return status, copies


class _Copying:
    """The sources, their results so far, and whether a Ctrl-C ended the copy."""

    def __init__(self, console: Console, copies: list[Copy], reverse: bool, keys: Keys, err: IO[str],
                 say: Callable[[str], None]) -> None:
        self.console, self.copies, self.reverse = console, copies, reverse
        self.keys, self.err, self.say = keys, err, say
        self.preserve = False  # -p: times and exact modes (the request's)
        self.joined: dict[int, float] = {}  # when each host's turn began (its login)
        self.first_ready = 0.0  # when the first host of the next group greeted (0: none yet)
        self.interrupted = False
        self.status = 0
        self.said: set[str] = set()

    @contextlib.contextmanager
    def watched(self) -> Iterator[None]:
        """Ctrl-C as a key while it runs (a terminal), noted once the keys are given back; or
        as SIGINT (no terminal), noted as it comes: the transfer ends its file there and
        returns (its verdict: aborted), and the copy must end too, not go on to the next hosts."""
        pressed = None
        previous = signal.getsignal(signal.SIGINT)
        chained = previous if callable(previous) else None  # not SIG_IGN: nobody wants it then

        def noted(signum: int, frame: FrameType | None) -> None:
            self.interrupted = True
            if chained is not None:
                chained(signum, frame)  # Python's own: KeyboardInterrupt, which the transfer takes

        noting = chained is not None and threading.current_thread() is threading.main_thread()
        if noting:
            signal.signal(signal.SIGINT, noted)
        try:
            with self.keys() as pressed:
                yield
        finally:  # after the keys' end: a Ctrl-C typed after the transfer's last look counts
            if noting:
                signal.signal(signal.SIGINT, previous)
            self.interrupted = self.interrupted or bool(getattr(pressed, "interrupted", False))
            # a SIGTERM or SIGHUP (keyboard.terminate_as_interrupt) ends the copy as a Ctrl-C does
            self.interrupted = self.interrupted or bool(getattr(self.console, "terminated", ()))

    def fail(self, rank: int, why: str) -> None:
        """A target that none of the sources reaches (it could not be connected, or was lost)."""
        for _, _, tally in self.copies:
            tally.verdicts.setdefault(rank, why)

    def copy_to(self, group: frozenset[int]) -> None:
        """Every source to (or from) ``group``, the targets of one turn."""
        flags = "-rp" if self.preserve else "-r"
        for source, dest, tally in self.copies:
            reach = group - set(tally.verdicts)
            try:  # a trailing / and into: the directory must exist on the targets (clush's --dest)
                if self.reverse:
                    line = shlex.join([flags, "--", source, dest])
                    get_builtin(self.console, reach, line, self.watched, self.err, suffixed=True, tally=tally)
                else:
                    line = shlex.join([flags, "--", source, dest.rstrip("/") + "/"])
                    put_builtin(self.console, reach, line, self.watched, self.err, into=True, tally=tally)
            except KeyboardInterrupt:  # Ctrl-C while the group's last answers were awaited
                self.interrupted = True
                for rank in reach - set(tally.verdicts):
                    tally.verdicts[rank] = transfer.NO_ANSWER
            except ValueError as exc:  # the source changed since _sources looked at it
                if str(exc) not in self.said:  # once, not once per group of hosts
                    self.said.add(str(exc))
                    self.say(str(exc))
                self.status = 1
                for rank in reach - set(tally.verdicts):
                    tally.verdicts[rank] = NOT_SENT
            if self.interrupted:
                return
            for rank in reach - set(tally.verdicts):  # lost before or during its turn
                tally.verdicts[rank] = RANK_LOST


def _slide(state: _Copying, ordered: list[int], fanout: int) -> None:
    """-f as a sliding window over ssh (module doc)."""
    console, session = state.console, state.console.session
    opened = {rank for rank in ordered if rank in console.peers and console.peers[rank].alive}  # 1st wave
    state.joined = dict.fromkeys(opened, time.monotonic())
    waiting = [rank for rank in ordered if rank not in opened]
    while (waiting or opened) and not state.interrupted:
        try:
            _turn(state, opened, waiting, fanout)
        except KeyboardInterrupt:  # SIGINT between the transfers' own watch (CI: the report was lost)
            state.interrupted = True
    with deaf_to_sigint():  # a second Ctrl-C here left a given-up ssh running (a clush user)
        greeted = set(console.idle(opened))  # connected, waiting for the copy ahead of them to end
        for rank in sorted(opened):  # a Ctrl-C: those still connecting are given up
            why = INTERRUPTED_WAITING if rank in greeted else INTERRUPTED_CONNECTING
            peer = console.peers[rank]
            peer.alive, peer.lost = False, why
            state.fail(rank, why)
            session.give_up(rank)


def _turn(state: _Copying, opened: set[int], waiting: list[int], fanout: int) -> None:
    """One turn of the window: hosts lost or done leave it, waiting ones join, ready ones copy."""
    console, session = state.console, state.console.session
    for rank, why in session.overdue(time.monotonic()).items():  # no Hello in time
        peer = console.peers[rank]
        peer.alive, peer.lost = False, why
    for rank in sorted(opened):
        peer = console.peers[rank]
        if not peer.alive:  # could not connect, or lost
            state.fail(rank, peer.lost or "connection lost")
            opened.discard(rank)
            session.release(rank)
    while waiting and len(opened) + session.closing() < max(fanout, 1):
        rank = waiting.pop(0)
        if rank not in session.later:  # connected before and lost since
            state.fail(rank, console.peers[rank].lost if rank in console.peers else RANK_LOST)
        elif why := session.join(rank, None):  # it could not even start (no descriptors left)
            state.fail(rank, why)
        else:
            console.joining(rank, ConsoleState.GREETING)
            opened.add(rank)
            state.joined[rank] = time.monotonic()
    ready = frozenset(console.idle(opened))
    now = time.monotonic()
    state.first_ready = (state.first_ready or now) if ready else 0.0
    alongside = [rank for rank in opened - ready  # logging in since before the first greeted
                 if console.peers[rank].alive and state.joined.get(rank, now) <= state.first_ready]
    if ready and not (alongside and now < state.first_ready + GATHER):
        state.copy_to(ready)
        hang_up(console, ready)
        opened -= ready
        state.first_ready = 0.0
    elif opened or waiting:  # (greeted hosts wait for those alongside them: GATHER)
        _await_change(state, opened - ready, bool(waiting))


def _await_change(state: _Copying, opened: set[int], waiting: bool) -> None:
    """Until a connecting host greets or is lost, a hung-up one has ended (its place is
    free for a ``waiting`` host), or :data:`TICK` (a deadline)."""
    console, session = state.console, state.console.session
    until = time.monotonic() + TICK
    closing = session.closing()

    def changed() -> bool:
        return time.monotonic() >= until or (waiting and session.closing() < closing) or any(
            not console.peers[rank].alive or console.machines[rank].state is ConsoleState.IDLE
            for rank in opened)

    try:
        with state.watched():
            console.wait(changed)
    except KeyboardInterrupt:
        state.interrupted = True


def hang_up(console: Console, ranks: Iterable[int]) -> None:
    """The end of a host's turn over ssh: its close record, then its connection ended."""
    for rank in ranks:
        peer = console.peers.get(rank)
        if peer is None:
            continue
        if peer.alive:
            console.send_event(rank, Local.CLOSE)
        console.session.release(rank)
