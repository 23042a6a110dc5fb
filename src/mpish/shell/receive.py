"""The one receive loop of the shell, both sides: drain the link, feed the channel, deliver.

:func:`receive` takes every record that has arrived, feeds it to its sender's channel
and hands each result to the side's conversation (:mod:`mpish.shell.conversation`) as
an event: a control message (its class is the event), raw output (``Local.OUTPUT``,
channels STDOUT and STDERR), a file's raw bytes (:class:`~mpish.shell.protocol.Chunk`,
channel FILE: handed on as they came, a view of the record over ssh), the peer's close
record (``Local.CLOSED``), a message that does not decode (``Local.MALFORMED``). A
record the channel rejects is dropped (a forged datagram over MPI); a channel that the
error left unusable is reported once through ``lost``. Records from a rank without a
channel are not ours: dropped unread.

:class:`Waiter` is how a side waits when nothing arrived (the one place to change for a
link that can wait on its own descriptors).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from mpish.transport.link import Channel, Link, Record
from mpish.wire.errors import MpishError, ProtocolError
from mpish.wire.events import CloseReceived, Message

from . import protocol as p
from .conversation import Event, Local

ROUND = 0.05  # longest receive round: a steady stream must not keep a side from its other work
IDLE_WAIT = 0.05  # longest sleep when idle: timeouts and peers' health are checked this often


class Output(NamedTuple):
    """Raw output bytes of a command (console side): ``stream`` is STDOUT or STDERR."""

    stream: int
    data: bytes


Deliver = Callable[[int, Event, object], None]  # (rank, event, payload)


def receive(link: Link, channel_of: Callable[[int], Channel | None], deliver: Deliver,
            lost: Callable[[int, str], None], budget: float = ROUND) -> bool:
    """Handle the records that have arrived, for at most about ``budget`` seconds (output
    flooding in, with credit returned as it is shown, never runs dry: the caller's Ctrl-C
    key and timeouts are checked between rounds); True if any did."""
    busy = False
    deadline = time.monotonic() + budget
    for source, record in link.drain():
        busy = True
        _handle(source, record, channel_of, deliver, lost)
        if time.monotonic() >= deadline:
            break  # the next record is not taken yet: it waits for the next round
    return busy


def _handle(source: int, record: Record, channel_of: Callable[[int], Channel | None], deliver: Deliver,
            lost: Callable[[int, str], None]) -> None:
    channel = channel_of(source)
    if channel is None:
        return
    try:
        events = channel.receive_record(record)
    except MpishError as exc:
        if not channel.is_open:
            lost(source, str(exc))
        return  # a forged record is dropped and counted by the channel
    for event in events:
        if isinstance(event, Message):
            data = event.data
            if event.channel == p.FILE:
                deliver(source, p.Chunk, p.Chunk(data))
                continue
            if event.channel in (p.STDOUT, p.STDERR):
                output = data if isinstance(data, bytes) else bytes(data)  # the sinks keep bytes
                deliver(source, Local.OUTPUT, Output(event.channel, output))
                continue
            try:
                message = p.CODEC.decode(event.data)
            except ProtocolError as exc:
                deliver(source, Local.MALFORMED, f"malformed message: {exc}")
                continue
            deliver(source, type(message), message)
        elif isinstance(event, CloseReceived):
            deliver(source, Local.CLOSED, None)


class Waiter:
    """How a side waits when nothing arrived: in :meth:`Link.wait`, which wakes on a record
    over pipes and sleeps its own backoff over MPI (hot again after every record)."""

    def __init__(self, link: Link, idle: float = IDLE_WAIT) -> None:
        self.link = link
        self.idle = idle

    def activity(self) -> None:
        """Something happened: nothing to do, the link's own wait knows its traffic."""

    def delay(self) -> float:
        """How long the next wait may be (a side that also waits on pipes passes them to
        :meth:`Link.wait` with this timeout)."""
        return self.idle

    def wait(self) -> None:
        self.link.wait(self.idle)
