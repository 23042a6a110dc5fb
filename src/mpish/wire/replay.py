"""The replay window of a channel's receiving side (THREAT-MODEL attacks 3 and 4).

Each channel keeps a sliding window of the last :data:`REPLAY_WINDOW` counters, as
WireGuard does (8,192), in RFC 6479's ring of bits. A counter seen before, or older than
the window, raises :class:`~mpish.wire.errors.ReplayError`; the window moves only after
the record's tag verified (the caller's rule, :mod:`mpish.wire.record`), so a forged
record cannot move it.

A channel whose records all came in order (every counter up to the top accepted, the
case of every MPI channel: MPI does not overtake) needs no ring to tell a replay: any
counter at or below the top is one. Its ring is made at its first gap, all set (each
counter the window covers was accepted). A ring is 1 KiB.

:class:`AcceptedCounters` is the exact record that replaces the window where channels share
one counter space and are received in any order (``mpish.secure(comm)``: wire/shared.py).
"""

from __future__ import annotations

import bisect

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


class AcceptedCounters:
    """Every counter ever accepted, exactly: those below ``floor`` (all of them), and the
    runs accepted above it (``starts[i] <= n < ends[i]`` for ``i >= head``: sorted, apart,
    above the floor; the entries before ``head`` are runs the floor took, dropped in bulk).

    For a counter space shared by channels whose records may be received in any order
    (:mod:`mpish.wire.shared`): a record may come after any number of later ones, so no
    window of fixed width would do. Each run above the floor stands after a counter not yet
    accepted, a record sent and not yet received: the memory follows the records in flight
    (which the transport holds anyway), and is none once all came. Accepting the floor, the
    case of records received in the order they were sealed, costs one addition, and so does
    accepting the counter after the highest (:meth:`take_next`); the floor taking the first
    run costs O(1) (``head``), a run made or joined below the highest costs a list insert or
    delete (a C memmove of the runs above it).
    """

    __slots__ = ("ends", "floor", "head", "starts", "top")

    def __init__(self) -> None:
        self.floor = 0  # every counter below it was accepted; the floor itself was not
        self.top = -1  # the highest accepted counter
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.head = 0  # the first live run (module doc); the lists are empty when none is

    def runs(self) -> list[tuple[int, int]]:
        """The runs accepted above the floor, as (first, last + 1)."""
        return list(zip(self.starts[self.head :], self.ends[self.head :], strict=True))

    def check(self, n: int) -> None:
        """Raise ReplayError if ``n`` was accepted before."""
        if n < self.floor:
            raise ReplayError(f"record counter {n} was already received")
        i = bisect.bisect_right(self.starts, n, self.head) - 1
        if i >= self.head and n < self.ends[i]:
            raise ReplayError(f"record counter {n} was already received")

    def accept(self, n: int) -> None:
        """Mark ``n`` as received (call only after its tag verified and check() passed)."""
        starts, ends, head = self.starts, self.ends, self.head
        if n > self.top:
            self.top = n
        if n == self.floor:
            self.floor = n + 1
            if head < len(starts) and starts[head] == n + 1:  # the hole is filled: the run joins
                self.floor = ends[head]
                self.head = head = head + 1
                if head == len(starts):  # no run left
                    starts.clear()
                    ends.clear()
                    self.head = 0
                elif head > 64 and 2 * head > len(starts):  # mostly taken runs: drop them
                    del starts[:head], ends[:head]
                    self.head = 0
            return
        i = bisect.bisect_right(starts, n, head) - 1  # the run starting at or below n, if any
        joins_next = i + 1 < len(starts) and starts[i + 1] == n + 1
        if i >= head and ends[i] == n:  # n extends run i
            if joins_next:  # ... up to run i + 1: one run
                ends[i] = ends[i + 1]
                del starts[i + 1], ends[i + 1]
            else:
                ends[i] = n + 1
        elif joins_next:
            starts[i + 1] = n
        else:
            starts.insert(i + 1, n)
            ends.insert(i + 1, n + 1)

    def take_next(self, n: int) -> None:
        """:meth:`accept` of ``top + 1`` (the hot paths: records in the order they were sealed,
        a message not received yet below them or not)."""
        if self.ends:
            self.ends[-1] = n + 1
        else:
            self.floor = n + 1
        self.top = n
