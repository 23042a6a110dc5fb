"""Events a SecureChannel gives its caller; both sides use the same classes."""

from __future__ import annotations

from typing import NamedTuple

from .message import Frozen, frozen


@frozen
class HandshakeComplete(Frozen):
    """The peer proved its static key; ``handshake_hash`` binds this session (Noise §11.2)."""

    remote_static: bytes
    handshake_hash: bytes


class Message(NamedTuple):
    """One whole, authenticated application message received on ``channel``.

    A NamedTuple rather than a frozen dataclass: it is as immutable and slotted, and
    three times cheaper to build, which counts on the per-record hot path. ``data`` is
    bytes, or a memoryview over the record it came in (the plain channel inside ssh: no
    copy of bulk bytes); the record is never reused, so the view stays valid.
    """

    channel: int
    data: bytes | memoryview


@frozen
class CloseReceived(Frozen):
    """The peer's authenticated close record: it will send nothing more."""


Event = HandshakeComplete | Message | CloseReceived
