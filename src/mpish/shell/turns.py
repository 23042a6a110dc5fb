"""clush's ``-f`` for one command: at most ``fanout`` targets run it at once.

:meth:`~mpish.shell.console.Console.run` starts the command on the first ``fanout`` targets
and keeps the others *waiting*; in every round of its loop :meth:`Turns.top_up` starts
waiting ones while fewer than ``fanout`` run (a target lost frees its place), and a Ctrl-C
skips those still waiting (:meth:`Turns.skip`: "not run: interrupted before its turn").

Rolling (``mpish ssh -c`` with more hosts than ``-f``): a waiting target in the session's
``later`` is not connected yet. Its turn connects it (:meth:`Session.join
<mpish.shell.session.Session.join>`: the server's code and this Run in one write; the
target is JOINING until its Hello, then RUNNING), and every connected target of the command
is released (:meth:`Session.release <mpish.shell.session.Session.release>`: close record,
hang-up) as soon as it is done, lost or given up, and holds its place until its connection
has ended (:meth:`Session.closing <mpish.shell.session.Session.closing>`). So the connections open at once are
bounded by ``fanout``, as clush's are, not one per host: 2,000 hosts at ``-f 64`` are never
more than 64 ssh processes and 64 remote Pythons. A joining target without a Hello by the
session's deadline (:meth:`Session.overdue <mpish.shell.session.Session.overdue>`) is lost
with that reason; one that cannot even start (no descriptors left, say) gets its result
at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import protocol as p
from .conversation import ConsoleState, Local
from .names import FAILED, Result
from .operations import Running
from .session import INTERRUPTED_CONNECTING
from .silence import SilenceWatch

if TYPE_CHECKING:
    from .console import Console

ACTIVE = (ConsoleState.RUNNING, ConsoleState.JOINING)  # what counts against the fan-out


class Turns:
    """Who runs now and who waits, for one command (module doc)."""

    def __init__(self, console: Console, run: Running, targets: list[int], waiting: list[int],
                 fanout: int, message: p.Run, watch: SilenceWatch) -> None:
        self.console, self.session = console, console.session
        self.run, self.targets, self.waiting = run, targets, waiting
        self.fanout, self.message, self.watch = fanout, message, watch
        self.skipped: list[int] = []
        self.given_up: list[int] = []  # connecting at a Ctrl-C: given up (skip)
        self.begun = time.monotonic()
        self.since: dict[int, float] = {}  # when each later target's turn began (its seconds)
        self.rolling = any(rank in self.session.later for rank in waiting)
        # rolling: targets connected and not yet released
        self.open: set[int] = {r for r in targets if r in console.peers} if self.rolling else set()
        if self.rolling and fanout < 1:
            raise ValueError("targets to connect in their turn need a fan-out")

    def host(self, rank: int) -> str:
        peer = self.console.peers.get(rank)
        return peer.host if peer is not None else self.session.later.get(rank, f"rank {rank}")

    def active(self) -> list[int]:
        """The targets running the command, or connecting to run it."""
        return [rank for state in ACTIVE for rank in self.console.in_state(state, self.targets)]

    def finished(self) -> bool:
        return not self.waiting and not self.active()

    def skip(self) -> None:
        """Ctrl-C: the waiting targets never start, and those still connecting are given up (a
        login that hangs would hold the command's end until its Hello deadline)."""
        self.skipped.extend(self.waiting)
        self.waiting.clear()
        for rank in self.console.in_state(ConsoleState.JOINING, self.targets):
            peer = self.console.peers[rank]
            peer.alive, peer.lost = False, INTERRUPTED_CONNECTING
            self.session.give_up(rank)
            self.given_up.append(rank)

    def top_up(self) -> bool:
        """Release the targets whose turn is over, start waiting ones while fewer than
        ``fanout`` run; True if anything moved."""
        moved = self._release() if self.rolling else False
        if not self.waiting:
            return moved
        now = time.monotonic()
        running = len(self.active()) + (self.session.closing() if self.rolling else 0)
        while self.waiting and running < self.fanout:
            rank = self.waiting.pop(0)
            moved = True
            if rank in self.session.later:
                if not self._join(rank):
                    continue
            elif self.console.peers[rank].alive:
                self.console.send_run(rank, self.message)
            else:
                continue
            self.watch.started([rank], now)
            running += 1
        return moved

    def _join(self, rank: int) -> bool:
        host = self.session.later[rank]
        why = self.session.join(rank, p.CODEC.encode(self.message))
        if why:  # it could not even start: its result now, in the order of the run
            result = Result(rank, host, FAILED, error=why)
            self.run.results[rank] = result
            self.run.sink.done(result)
            return False
        self.console.joining(rank)
        self.open.add(rank)
        self.since[rank] = time.monotonic()
        return True

    def _release(self) -> bool:
        moved = False
        for rank, why in self.session.overdue(time.monotonic()).items():
            peer = self.console.peers[rank]
            peer.alive, peer.lost = False, why
        for rank in list(self.open):
            peer = self.console.peers[rank]
            if peer.alive and rank not in self.run.results:
                continue
            if rank not in self.run.results:  # lost: its result now (-v tells it as it comes)
                seconds = time.monotonic() - self.since.get(rank, self.begun)
                lost = Result(rank, peer.host, FAILED, 0, seconds, False, peer.lost or "connection lost",
                              interrupted=rank in self.given_up)
                self.run.results[rank] = lost
                self.run.sink.done(lost)
            self.open.discard(rank)
            if peer.alive:  # done: the close record, then the hang-up
                self.console.send_event(rank, Local.CLOSE)
            self.session.release(rank)
            moved = True
        return moved
