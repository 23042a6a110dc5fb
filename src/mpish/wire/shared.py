"""Records whose channels share one key and one counter space: ``mpish.secure(comm)``'s lanes.

Theory of operation
-------------------
:mod:`mpish.wire.record` gives each channel of a direction its own key, counter and replay
window: right for a shell's few fixed channels. ``secure(comm)`` names a channel per MPI
tag, and a program whose tags count its steps made a channel per step, about 2 KB on each
side of each pair, kept until ``Free()`` (issue 11: 200,000 tags, 0.4 GB a rank).

Here the channels of a direction share one key (HKDF of the direction key with the label
``mpish lane``, apart from every per-channel key), one counter, one set of key epochs and
one record of the counters accepted. The record format is unchanged: the header still
names the channel, and it is authenticated as ever (the associated data), so a record
moved to another channel fails its tag. A (key, nonce) pair is still never used twice: a
counter is drawn once per direction, whatever the channel.

Replay: MPI keeps the order of messages only per (source, tag); records of different tags
are received in any order, and a record may come after any number of records sealed later
(a program sends 100,000 messages on one tag and one on another, and receives the last
first). A sliding window of fixed width would refuse the early ones as too old, so the
receiver keeps the counters it accepted exactly (:class:`~mpish.wire.replay.AcceptedCounters`):
all below the lowest one not yet received, plus the runs accepted above it. That costs
memory only for records sent and not yet received (which MPI holds anyway), none per
channel, and nothing at all once everything sent was received. Nothing unauthenticated
moves it (the record layer's rule: accepted after the tag verified). The hot paths take the
record right after the highest accepted (records received in the order they were sealed,
whatever is still missing below); any other goes through :meth:`AcceptedCounters.accept`,
whose list inserts cost O(runs): with r records in flight received out of order, O(r**2)
overall (helper-120: 100,000 runs at once, 2 s).

The order of one channel's records (MPI's non-overtaking rule, enforced by the caller,
``comm/lane.py``) needs a per-channel last counter only while it lies at or above
:meth:`SharedOpener.floor`: every genuine record still to come has a counter at or above
the floor, so a last counter below it can be forgotten (``comm/lane.py`` does). A record
sealed and never received (a message no receive takes; comm never cancels a send) keeps the
floor below it until it is: the set holds one run above it, the caller keeps a last counter
per tag used meanwhile (~170 bytes each, helper-120), and key epochs from the floor's on.

Key epochs: a rekey every ``2**rekey_shift`` records of the direction (all channels), as
in record.py; the receiver keeps the epochs from the floor's up (a record not yet received
may still need them), and derives at most ``(REPLAY_WINDOW >> rekey_shift) + 2`` epochs
ahead of the highest one it has for one record (2 at the default shift: 2**31 records
ahead), so a forged far-future counter costs little and leaves nothing. A genuine record
further ahead than that (2**31 records of the direction sealed and not yet received before
it; reachable only with a small ``rekey_shift`` in tests) is refused as a protocol error.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag

from .epochs import ChannelState, EpochKeys
from .errors import AuthenticationError, LocalProtocolError
from .noise import AEAD, TAGLEN, HashFunctions
from .record import (
    _HEAD,
    _PREFIX_SIZE,
    _TAIL,
    HEADER_SIZE,
    MAX_CHANNEL,
    MAX_RECORD_PAYLOAD,
    SMALL_RECORD,
    Opener,
    RecordType,
    Sealer,
)
from .replay import AcceptedCounters

_SMALLEST = HEADER_SIZE + TAGLEN  # an empty record
# The hot paths call C methods through names bound once: CPython 3.11 does not specialize
# ``obj.method(...)`` when the method is a bound one held in an attribute, nor a C type's
# method reached as an attribute, and its generic lookup costs a tenth of a path's Python.
_pack_head = _HEAD.pack


def lane_key(hashes: HashFunctions, direction_key: bytes) -> bytes:
    """The first key of a shared counter space: HKDF(direction key, "mpish lane")."""
    return hashes.hkdf(direction_key, b"mpish lane", 1)[0][:32]


class _Shared:
    """What both shared sides hold: one state for every channel."""

    _state: ChannelState

    def _shared_state(self) -> ChannelState:
        keys = EpochKeys(self.functions, lane_key(self.hashes, self._key))  # type: ignore[attr-defined]
        state = ChannelState(keys, self._shift, self._max_counter, b"")  # type: ignore[attr-defined]
        state.window = AcceptedCounters()  # type: ignore[assignment]
        return state

    _cached: tuple[int, bytes] = (-1, b"")  # the last channel's head: one tuple, read atomically

    def _head(self, channel: int) -> bytes:
        """A plain DATA record's header up to its counter, for ``channel``."""
        cached = self._cached
        if cached[0] == channel:
            return cached[1]
        if not 0 <= channel <= MAX_CHANNEL:
            raise LocalProtocolError(f"channel id {channel} out of range")
        prefix: bytes = self._data_prefix  # type: ignore[attr-defined]
        head = prefix + int(channel).to_bytes(4, "big")  # a numpy integer or a float tag, as MPI read it
        self._cached = (channel, head)
        return head


class SharedSealer(_Shared, Sealer):
    """Seals records of every channel of a direction with one key and one counter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = self._shared_state()

    def _sealing(self, channel: int) -> ChannelState:
        self._head(channel)  # the range check
        return self._state

    def next_counter(self, channel: int) -> int:
        """The counter the next record gets, on any channel (if no other thread seals first)."""
        return int(repr(self._state.counts)[6:-1])  # "count(N)": peeks, draws nothing

    def seal_data(self, payload: bytes | bytearray | memoryview, channel: int) -> bytes | bytearray:
        """Sealer.seal_data with the shared counter (its hot path: record.py)."""
        size = len(payload)
        if size >= SMALL_RECORD:
            return self.seal(payload, channel=channel)
        cached = self._cached  # (the hot path: _head inline)
        head = cached[1] if cached[0] == channel else self._head(channel)
        state = self._state
        limit = state.limit  # the limit, then the AEAD, then the counter: record.py
        aead = state.aead
        draw, nonce = state.draw, self._nonce  # (bound names: _pack_head's comment)
        n = draw()
        if n >= limit:  # a rekey, or the end of the counters: the general path, with this n
            return self._seal_small(payload, channel, RecordType.DATA, 0, n)
        header = _pack_head(head, n, size + TAGLEN)
        return header + aead.encrypt(nonce(0, n), payload, header)


class SharedOpener(_Shared, Opener):
    """Opens records of every channel of a direction: one key, one set of accepted counters."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state = self._shared_state()
        self._accepted: AcceptedCounters = self._state.window  # type: ignore[assignment]

    def floor(self) -> int:
        """Every record still to come has a counter at least this (module doc)."""
        return self._accepted.floor

    def _opening(self, channel: int) -> ChannelState:
        self._head(channel)
        return self._state

    def open_fields(self, record: bytes | bytearray | memoryview) -> tuple[int, int, int, int, bytes]:
        """Opener.open_fields; inline for a plain DATA record right after the highest accepted."""
        accepted, state = self._accepted, self._state
        if record[:_PREFIX_SIZE] == self._data_prefix and len(record) >= HEADER_SIZE + TAGLEN:
            channel, n, length = _TAIL.unpack_from(record, _PREFIX_SIZE)
            if (
                n == accepted.top + 1
                and n < state.limit
                and length == len(record) - HEADER_SIZE
                and length <= MAX_RECORD_PAYLOAD + TAGLEN
            ):
                body = record[HEADER_SIZE:] if length <= SMALL_RECORD else memoryview(record)[HEADER_SIZE:]
                try:
                    plaintext = state.aead.decrypt(self._nonce(0, n), body, record[:HEADER_SIZE])
                except InvalidTag:
                    raise AuthenticationError("record failed authentication") from None
                accepted.take_next(n)
                return RecordType.DATA, 0, channel, n, plaintext
        return super().open_fields(record)

    def open_next(
        self, buf: bytearray, count: int, channel: int, body: memoryview | None = None
    ) -> tuple[int, bytes] | None:
        """Opener.open_next: the record right after the highest accepted, else None."""
        cached = self._cached
        if cached[0] == channel:
            head = cached[1]
        elif 0 <= channel <= MAX_CHANNEL:
            head = self._head(channel)
        else:
            return None
        if not _SMALLEST <= count < SMALL_RECORD:
            return None
        accepted, state = self._accepted, self._state
        n = accepted.top + 1
        header = _pack_head(head, n, count - HEADER_SIZE)
        if n >= state.limit or not buf.startswith(header):
            return None
        if body is None:
            body = memoryview(buf)[HEADER_SIZE:count]
        nonce = self._nonce
        try:
            plaintext = state.aead.decrypt(nonce(0, n), body, header)
        except InvalidTag:
            raise AuthenticationError("record failed authentication") from None
        # accepted.take_next(n), inline (a call is a tenth of this path's Python work)
        ends = accepted.ends
        if ends:
            ends[-1] = n + 1
        else:
            accepted.floor = n + 1
        accepted.top = n
        return n, plaintext

    def _accept(self, state: ChannelState, channel: int, n: int, chain: list[AEAD]) -> None:
        """Record ``n`` authenticated: mark it, move the epoch, retire keys below the floor's."""
        accepted = self._accepted
        accepted.accept(n)
        keep_from = accepted.floor >> self._shift  # a record still to come needs no older key
        if chain:
            state.commit(chain, keep_from)
        else:
            state.keys.retire_below(keep_from)
