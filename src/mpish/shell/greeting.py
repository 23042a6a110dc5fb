"""The start of every server's conversation, over MPI and ssh alike: await its Hello.

Each server not yet ready starts in GREETING (:data:`mpish.shell.conversation.CONSOLE`);
records go through the one receive loop (:func:`mpish.shell.receive.receive`), which
completes the handshake, and the Hello moves the server to IDLE. What differs between
the sessions is passed in: what a Hello tells (``greeted``), how a failure is reported
(``failed``: channel failed, server ended, malformed message, no Hello by its deadline,
a Hello of another shell protocol version),
each server's deadline, and (ssh's fan-out) a ``tick`` that starts more servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mpish.report import Diagnostics
from mpish.transport.link import Channel

from . import protocol as p
from .conversation import CONSOLE, ConsoleState, Event, Local, Machine, Refused
from .receive import Deliver, Waiter, receive
from .session import Session

log = Diagnostics(__name__)

Greeted = Callable[[int, p.Hello], None]
Failed = Callable[[int, str], None]


class _Greeter:
    """The actions of the GREETING state."""

    def __init__(self, greeted: Greeted, failed: Failed) -> None:
        self.greeted = greeted
        self.failed = failed

    def _greet(self, payload: tuple[int, p.Hello]) -> None:
        rank, hello = payload
        if hello.protocol != p.PROTOCOL_VERSION:  # its messages (a file's bytes) are not ours
            self.failed(rank, f"its mpish speaks shell protocol {hello.protocol}, this console "
                              f"{p.PROTOCOL_VERSION}: install the same mpish version on both sides")
            return
        self.greeted(rank, hello)

    def _lose(self, payload: tuple[int, str]) -> None:
        self.failed(*payload)

    def _ended_by_server(self, payload: tuple[int, Any]) -> None:
        self.failed(payload[0], "the server ended its session")


def await_hellos(session: Session, greeted: Greeted, failed: Failed, deadline: Callable[[int], float],
                 tick: Callable[[], bool] = lambda: False, early: Deliver | None = None,
                 others: Deliver | None = None) -> None:
    """Until every server has sent its Hello or failed (``failed`` must mark it not alive).

    ``tick`` is called in every round; True while it has more servers to start. ``early``
    gets what a greeted server sends after its Hello (the answers to a Run sent with its
    code, ``mpish ssh -c``), to hand to the console in order; without it they go through
    the table (a server says nothing before it is asked). ``others`` gets what servers
    greeted before this call send meanwhile (ssh's reconnect: the live hosts' late records)."""
    machines: dict[int, Machine[ConsoleState]] = {}
    greeter = _Greeter(greeted, failed)

    def step(rank: int, event: Event, payload: object) -> None:
        machine = machines.get(rank)
        if machine is None:
            if others is not None:
                others(rank, event, payload)
            return
        if early is not None and machine.state is not ConsoleState.GREETING:
            early(rank, event, payload)
            return
        try:
            machine.fire(event, greeter, (rank, payload))
        except Refused as exc:
            log.info("rank %d: %s", rank, exc)

    def channel_of(rank: int) -> Channel | None:  # a greeted server's records too: in order
        peer = session.peers.get(rank)
        return peer.channel if peer is not None and peer.alive else None

    def broken(rank: int, why: str) -> None:
        step(rank, Local.BROKEN, f"handshake failed: {why}")

    waiter = Waiter(session.link)
    while True:
        more = tick()
        for rank, peer in session.peers.items():
            if rank not in machines and peer.alive and not peer.ready:
                machines[rank] = Machine(CONSOLE, ConsoleState.GREETING)
        now = time.monotonic()
        waiting = [rank for rank, machine in sorted(machines.items())
                   if machine.state is ConsoleState.GREETING and session.peers[rank].alive]
        for rank in waiting:
            if now >= deadline(rank):
                failed(rank, "")  # "": no Hello in time
        waiting = [rank for rank in waiting if session.peers[rank].alive]
        if not waiting and not more:
            return
        if receive(session.link, channel_of, step, broken):
            waiter.activity()
        else:
            waiter.wait()
