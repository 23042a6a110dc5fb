"""The replay window of a channel's receiving side (THREAT-MODEL attacks 3 and 4).

Each channel keeps a sliding window of the last :data:`REPLAY_WINDOW` counters, as
WireGuard does (8,192), in RFC 6479's ring of bits. A counter seen before, or older than
the window, raises :class:`~mpish.wire.errors.ReplayError`; the window moves only after
the record's tag verified (the caller's rule, :mod:`mpish.wire.record`), so a forged
record cannot move it.

A channel whose records all came in order (every counter up to the top accepted, the
case of every MPI channel: MPI does not overtake) needs no ring to tell a replay: any
counter at or below the top is one. Its ring is made at its first gap, all set (each
counter the window covers was accepted). A ring is 1 KiB, and ``mpish.secure(comm)``
keeps a channel per tag a program uses, in each direction: a code whose tags count its
steps paid it per step (issue 11).
"""

from __future__ import annotations

from .errors import ReplayError

REPLAY_WINDOW = 8192
SLOT_MASK = REPLAY_WINDOW - 1  # REPLAY_WINDOW is a power of two


class ReplayWindow:
    """Sliding window of the last REPLAY_WINDOW counters (RFC 6479's ring of bits).

    Bit ``n % REPLAY_WINDOW`` of the ring tells whether counter ``n`` was accepted, for
    the counters ``top - REPLAY_WINDOW < n <= top``; no ring (None): all of them were
    (module doc). Accepting the next counter in order costs one bit operation, or none
    without a ring; a jump ahead clears the slots it passes over.
    """

    __slots__ = ("ring", "top")

    def __init__(self) -> None:
        self.top = -1  # highest accepted counter
        self.ring: bytearray | None = None  # made at the first gap

    def check(self, n: int) -> None:
        """Raise ReplayError if ``n`` was accepted before or is too old to tell."""
        if n > self.top:
            return
        if self.top - n >= REPLAY_WINDOW:
            raise ReplayError(f"record counter {n} is older than the replay window")
        slot = n & SLOT_MASK
        if self.ring is None or self.ring[slot >> 3] & (1 << (slot & 7)):
            raise ReplayError(f"record counter {n} was already received")

    def accept(self, n: int) -> None:
        """Mark ``n`` as received (call only after its tag verified and check() passed)."""
        ring = self.ring
        if ring is None:
            if n == self.top + 1:  # in order still: the top says it all
                self.top = n
                return
            ring = self.ring = bytearray(b"\xff" * (REPLAY_WINDOW // 8))  # all up to the top came
        if n > self.top:
            gap = n - self.top
            if gap >= REPLAY_WINDOW:
                ring[:] = bytes(len(ring))
            else:
                i = self.top + 1
                while i < n:  # forget the counters these slots held a window ago
                    slot = i & SLOT_MASK
                    if slot & 7 == 0 and n - i >= 8:
                        ring[slot >> 3] = 0
                        i += 8
                    else:
                        ring[slot >> 3] &= ~(1 << (slot & 7)) & 0xFF
                        i += 1
            self.top = n
        slot = n & SLOT_MASK
        ring[slot >> 3] |= 1 << (slot & 7)
