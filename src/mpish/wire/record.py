"""Transport records: the bytes that cross the wire after (and during) the handshake.

Theory of operation
-------------------
Every record is a fixed 44-byte header followed by a body::

    offset size field
         0    1 version        (1)
         1    1 type           HANDSHAKE=1, DATA=2, CLOSE=3
         2    1 flags          bit 0: MORE, the message continues in the next record;
                               bit 1: CONTINUATION, not the first record of its message;
                               bit 2: SYNC, its receiver acknowledges it (comm/synchronous.py)
         3    1 reserved       (0)
         4   16 session id     random per job / connection, bound in the handshake prologue
        20    4 sender         endpoint id (MPI rank) of the writer
        24    4 receiver       endpoint id of the reader
        28    4 channel        sub-stream id (an MPI tag, a control channel, ...)
        32    8 counter        per (direction, channel), from 0, never reused
        40    4 length         bytes of body that follow (ciphertext and 16-byte tag)

After the handshake the body is ``AEAD(key, nonce(counter), plaintext, ad=header)``:
the associated data is the whole header, so changing any field (moving a record to
another channel, session, rank or counter; flipping its length) fails the tag
(THREAT-MODEL attacks 5 and 8). The nonce is the Noise nonce (§5.1) built from the
explicit counter, so records may be delivered out of order.

Keys: the Noise Split gives one key per direction (§5.2). Each channel derives its
own key from it (HKDF with the suite's hash over the channel id), so a key never
encrypts more than one channel's counter space. Every ``2**rekey_shift`` records of a
channel the key is replaced by ``REKEY(k)`` (Noise §11.3); both sides compute the key
of a counter from the counter alone, so no rekey message is needed and reordering
across a rekey boundary still works. A receiver keeps only the epochs an authenticated
record reached and the replay window still covers; a later epoch's key is derived for
one tag check and kept only if the tag verified, so forged counters cannot grow the
cache: nothing derived from a forged record is kept. The last nonce value is reserved
(§5.1): at ``max_counter`` a channel stops with :class:`LocalProtocolError` (attack 12).

Replay (attacks 3 and 4): each channel keeps a sliding window of the last
:data:`REPLAY_WINDOW` counters (WireGuard keeps 8,192). A counter seen before, or
older than the window, raises :class:`ReplayError`; the window moves only after the
tag verified, so a forged record cannot move it.

Threads: a record's counter is drawn by one C call (``itertools.count``'s ``next``, atomic
under the GIL) before anything else uses it, so two threads sealing on one channel at once
never get the same counter: a (key, nonce) pair is never used twice, which under AES-GCM
would leak the key stream and allow forgeries. Whether the receiver accepts two such
records depends on the order they travel in (it rejects a counter lower than one it has
taken: ``comm/lane.py``): a caller that sends from several threads draws and sends under
one lock (``comm/handles.py``). An :class:`Opener` is not safe to use from several threads
at once (its replay window moves after the tag check): its caller holds a lock.

Nothing here does I/O. :class:`Sealer` and :class:`Opener` hold one direction each; the
window is :mod:`mpish.wire.replay`, a channel's key epochs :mod:`mpish.wire.epochs`.
"""

from __future__ import annotations

import enum
import struct
import threading
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag

from .epochs import DEFAULT_LIMITS as DEFAULT_LIMITS  # re-exported: the record layer's limits
from .epochs import ChannelState, EpochKeys
from .epochs import Limits as Limits
from .epochs import channel_key as channel_key
from .errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from .noise import AEAD, TAGLEN, CipherFunctions, HashFunctions
from .replay import REPLAY_WINDOW, SLOT_MASK

HEADER = struct.Struct(">BBBB16sIIIQI")
HEADER_SIZE = HEADER.size  # 44
VERSION = 1
FLAG_MORE = 0x01
FLAG_CONTINUATION = 0x02  # authenticated (in the header): a record's role cannot be changed in transit
FLAG_SYNC = 0x04  # authenticated too: a synchronous send's first record, acknowledged when received
FLAG_ABORT = 0x08  # authenticated: an empty collective record meaning "the collective failed on its sender"
KNOWN_FLAGS = FLAG_MORE | FLAG_CONTINUATION | FLAG_SYNC | FLAG_ABORT
SESSION_SIZE = 16
MAX_ENDPOINT = 2**32 - 1
MAX_CHANNEL = 2**32 - 1
MAX_RECORD_PAYLOAD = 1 << 20  # plaintext bytes in one record
MAX_HANDSHAKE_BODY = 65535  # Noise §3
MAX_RECORD = HEADER_SIZE + MAX_RECORD_PAYLOAD + TAGLEN  # the largest record of any type, in bytes
_PREFIX_SIZE = 28  # version, type, flags, reserved, session, sender, receiver
_TAIL = struct.Struct(">IQI")  # channel, counter, length
_HEAD_SIZE = _PREFIX_SIZE + 4  # the prefix and the channel
_HEAD = struct.Struct(f">{_HEAD_SIZE}sQI")  # head, counter, length: a whole header
SMALL_RECORD = 16 * 1024  # below this, one C call (encrypt) beats encrypt_into plus a buffer


class RecordType(enum.IntEnum):
    HANDSHAKE = 1  # a Noise handshake message; body not encrypted by this layer
    DATA = 2  # application bytes
    CLOSE = 3  # authenticated end of stream


_RECORD_TYPES = {int(t): t for t in RecordType}


class Header(NamedTuple):
    """A parsed record header (not yet authenticated unless returned by Opener)."""

    type: RecordType
    flags: int
    session: bytes
    sender: int
    receiver: int
    channel: int
    counter: int
    length: int

    def pack(self) -> bytes:
        return HEADER.pack(VERSION, self.type, self.flags, 0, *self[2:])


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse and sanity-check a header; the length is bounded before any allocation."""
    if len(data) < HEADER_SIZE:
        raise RemoteProtocolError(f"record shorter than its {HEADER_SIZE}-byte header")
    version, rtype, flags, reserved, session, sender, receiver, channel, counter, length = HEADER.unpack_from(
        data
    )
    if version != VERSION:
        raise RemoteProtocolError(f"record version {version}, this mpish speaks {VERSION}")
    if reserved != 0 or flags & ~KNOWN_FLAGS:
        raise RemoteProtocolError("record has unknown flags set")
    kind = _RECORD_TYPES.get(rtype)
    if kind is None:
        raise RemoteProtocolError(f"unknown record type {rtype}")
    limit = MAX_HANDSHAKE_BODY if kind is RecordType.HANDSHAKE else MAX_RECORD_PAYLOAD + TAGLEN
    if length > limit:
        raise RemoteProtocolError(f"record length {length} exceeds the maximum of {limit}")
    if kind is not RecordType.HANDSHAKE and length < TAGLEN:
        raise RemoteProtocolError("record body shorter than its tag")
    return Header(kind, flags, session, sender, receiver, channel, counter, length)


class _Direction:
    """What Sealer and Opener share: suite, key, endpoints and per-channel state."""

    def __init__(
        self,
        functions: CipherFunctions,
        hashes: HashFunctions,
        key: bytes,
        session: bytes,
        sender: int,
        receiver: int,
        limits: Limits | None = None,
    ) -> None:
        if len(session) != SESSION_SIZE:
            raise LocalProtocolError(f"a session id is {SESSION_SIZE} bytes")
        self.functions = functions
        self.hashes = hashes
        self._key = key
        self.session = session
        self.sender = sender
        self.receiver = receiver
        self.limits = limits or DEFAULT_LIMITS
        self._channels: dict[int, ChannelState] = {}
        self._nonce = functions.nonce_format.pack  # called as (0, counter)
        self._shift = self.limits.rekey_shift
        self._max_counter = self.limits.max_counter
        # The header fields before the channel id, as they are in every plain DATA record.
        self._data_prefix = HEADER.pack(VERSION, RecordType.DATA, 0, 0, session, sender, receiver, 0, 0, 0)[
            :_PREFIX_SIZE
        ]

    def _new_channel(self, channel: int) -> ChannelState:
        if not 0 <= channel <= MAX_CHANNEL:
            raise LocalProtocolError(f"channel id {channel} out of range")
        keys = EpochKeys(self.functions, channel_key(self.hashes, self._key, channel))
        head = self._data_prefix + channel.to_bytes(4, "big")
        return ChannelState(keys, self._shift, self._max_counter, head)


class Sealer(_Direction):
    """Encrypts records in one direction. Counters are per channel, from 0."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rekeying = threading.Lock()

    def _sealing(self, channel: int) -> ChannelState:
        """The state that seals ``channel`` (made on first use)."""
        state = self._channels.get(channel)
        if state is None:  # setdefault: two threads naming a new channel at once share one state
            state = self._channels.setdefault(channel, self._new_channel(channel))
        return state

    def next_counter(self, channel: int) -> int:
        """The counter the next record of ``channel`` gets (if no other thread seals first)."""
        state = self._channels.get(channel)
        return 0 if state is None else int(repr(state.counts)[6:-1])  # "count(N)": peeks, draws nothing

    def _next(self, channel: int, n: int | None = None) -> tuple[ChannelState, int, AEAD]:
        """The channel's state, a counter drawn now (or ``n``, drawn by the caller) and its AEAD."""
        state = self._sealing(channel)
        if n is None:
            n = state.draw()
        if n > self._max_counter:
            raise LocalProtocolError(f"record counter of channel {channel} is exhausted; start a new session")
        epoch = n >> self._shift
        aead = state.aead  # before the epoch: a rekey writes the epoch first, then the AEAD
        if state.epoch == epoch:
            return state, n, aead
        with self._rekeying:  # a rekey (rare): threads that drew counters around it agree here
            if epoch > state.epoch:
                # Our own counter: no check. The previous epoch's key is kept until the next
                # rekey, for a thread that drew its counter before this one but seals after.
                state.commit(state.keys.derive(epoch, max_skip=epoch - state.epoch), epoch - 1)
            if epoch < state.epoch:  # a thread that drew two rekeys ago: refused, never a reused nonce
                return state, n, state.keys.kept(epoch)
            return state, n, state.aead

    def seal(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        channel: int = 0,
        type: RecordType = RecordType.DATA,
        flags: int = 0,
    ) -> bytes | bytearray:
        """One record for ``payload`` (at most MAX_RECORD_PAYLOAD bytes)."""
        size = len(payload)
        if size >= SMALL_RECORD:
            out = bytearray(HEADER_SIZE + size + TAGLEN)
            self.seal_into(out, payload, channel=channel, type=type, flags=flags)
            return out
        # (plain DATA records in order take seal_data)
        return self._seal_small(payload, channel, type, flags, None)

    def _seal_small(
        self,
        payload: bytes | bytearray | memoryview,
        channel: int,
        type: RecordType,
        flags: int,
        n: int | None,
    ) -> bytes:
        _, n, aead = self._next(channel, n)
        size = len(payload)
        header = HEADER.pack(
            VERSION, type, flags, 0, self.session, self.sender, self.receiver, channel, n, size + TAGLEN
        )
        return header + aead.encrypt(self._nonce(0, n), payload, header)

    def seal_data(self, payload: bytes | bytearray | memoryview, channel: int) -> bytes | bytearray:
        """:meth:`seal` of a plain DATA record of fewer than SMALL_RECORD bytes (the hot path:
        a known channel in its current key epoch; anything else goes through :meth:`seal`).

        The counter is drawn first, by one C call, and used once (module doc: threads)."""
        state = self._channels.get(channel)
        size = len(payload)
        if state is None or size >= SMALL_RECORD:
            return self.seal(payload, channel=channel)
        # The limit, then the AEAD, then the counter (commit writes the AEAD before the
        # limit): a counter below the limit read is of the AEAD's epoch, even if another
        # thread rekeyed meanwhile (it drew a counter >= that limit before it did).
        limit = state.limit
        aead = state.aead
        n = state.draw()
        if n >= limit:  # a rekey, or the end of the counters: the general path, with this n
            return self._seal_small(payload, channel, RecordType.DATA, 0, n)
        header = _HEAD.pack(state.head, n, size + TAGLEN)
        return header + aead.encrypt(self._nonce(0, n), payload, header)

    def seal_into(
        self,
        out: bytearray | memoryview,
        payload: bytes | bytearray | memoryview,
        *,
        channel: int = 0,
        type: RecordType = RecordType.DATA,
        flags: int = 0,
    ) -> int:
        """Write one record into ``out`` (zero-copy); return its size."""
        size = len(payload)
        if size > MAX_RECORD_PAYLOAD:
            raise LocalProtocolError(f"record payload of {size} bytes exceeds {MAX_RECORD_PAYLOAD}")
        total = HEADER_SIZE + size + TAGLEN
        if len(out) < total:
            raise LocalProtocolError(f"output buffer of {len(out)} bytes, the record needs {total}")
        _, n, aead = self._next(channel)
        header = HEADER.pack(
            VERSION, type, flags, 0, self.session, self.sender, self.receiver, channel, n, size + TAGLEN
        )
        view = memoryview(out)
        view[:HEADER_SIZE] = header
        aead.encrypt_into(self._nonce(0, n), payload, header, view[HEADER_SIZE:total])  # type: ignore[attr-defined]
        return total


class Opener(_Direction):
    """Verifies and decrypts records of one direction; enforces the replay window.

    Nothing unauthenticated is returned or kept: a channel's state is stored only once
    one of its records verified, so forged records naming new channels cost nothing
    lasting, and the replay window moves only after a tag verified.
    """

    def check_header(self, header: Header) -> None:
        """Everything about a header that can be checked before its tag."""
        if header.session != self.session:
            raise RemoteProtocolError("record belongs to another session")
        if header.sender != self.sender or header.receiver != self.receiver:
            raise RemoteProtocolError(
                f"record from endpoint {header.sender} to {header.receiver} arrived on the "
                f"channel from {self.sender} to {self.receiver}"
            )
        if header.counter > self._max_counter:
            raise RemoteProtocolError("record counter beyond the limit")
        if header.type is RecordType.HANDSHAKE:
            raise RemoteProtocolError("handshake record after the handshake")

    def open(self, record: bytes | bytearray | memoryview) -> tuple[Header, bytes]:
        """Authenticate and decrypt one whole record; return its header and plaintext."""
        rtype, flags, channel, counter, plaintext = self.open_fields(record)
        header = Header(
            _RECORD_TYPES[rtype],
            flags,
            self.session,
            self.sender,
            self.receiver,
            channel,
            counter,
            len(plaintext) + TAGLEN,
        )
        return header, plaintext

    def open_fields(self, record: bytes | bytearray | memoryview) -> tuple[int, int, int, int, bytes]:
        """The fast path of :meth:`open`: (type, flags, channel, counter, plaintext)."""
        if record[:_PREFIX_SIZE] == self._data_prefix and len(record) >= HEADER_SIZE + TAGLEN:
            # A plain DATA record, next in order on a known channel, same key epoch: the
            # common case, checked and opened inline. Anything else takes the general path.
            channel, n, length = _TAIL.unpack_from(record, _PREFIX_SIZE)
            state = self._channels.get(channel)
            if (
                state is not None
                and n == state.window.top + 1
                and n >> self._shift == state.epoch
                and n <= self._max_counter
                and length == len(record) - HEADER_SIZE
                and length <= MAX_RECORD_PAYLOAD + TAGLEN
            ):
                body = record[HEADER_SIZE:] if length <= SMALL_RECORD else memoryview(record)[HEADER_SIZE:]
                try:
                    plaintext = state.aead.decrypt(self._nonce(0, n), body, record[:HEADER_SIZE])
                except InvalidTag:
                    raise AuthenticationError("record failed authentication") from None
                window = state.window
                if (ring := window.ring) is not None:  # n is the top's next: its slot held n - WINDOW
                    ring[(n & SLOT_MASK) >> 3] |= 1 << (n & 7)
                window.top = n
                return RecordType.DATA, 0, channel, n, plaintext
        state, aead, chain, rtype, flags, channel, n = self._prepare(record)
        body = memoryview(record)[HEADER_SIZE:]
        try:
            plaintext = aead.decrypt(self._nonce(0, n), body, record[:HEADER_SIZE])
        except InvalidTag:
            raise AuthenticationError("record failed authentication") from None
        self._accept(state, channel, n, chain)
        return rtype, flags, channel, n, plaintext

    def open_next(
        self, buf: bytearray, count: int, channel: int, body: memoryview | None = None
    ) -> tuple[int, bytes] | None:
        """(counter, plaintext) of ``buf[:count]`` if it is the next plain DATA record of
        ``channel`` in order, in the current key epoch, of fewer than SMALL_RECORD bytes;
        None if it is anything else (then nothing was checked or changed: the caller
        takes the general path). Raises AuthenticationError if its tag fails.

        The hot path of :meth:`open_fields` for a receive buffer: no copy of the record.
        ``body``: a view of ``buf[HEADER_SIZE:count]`` that the caller keeps (else sliced).
        """
        state = self._channels.get(channel)
        if state is None or not HEADER_SIZE + TAGLEN <= count < SMALL_RECORD:
            return None
        window = state.window
        n = window.top + 1
        # The header such a record has: one comparison checks every field of it.
        header = _HEAD.pack(state.head, n, count - HEADER_SIZE)
        if n >= state.limit or not buf.startswith(header):
            return None
        try:
            if body is None:
                body = memoryview(buf)[HEADER_SIZE:count]
            plaintext = state.aead.decrypt(self._nonce(0, n), body, header)
        except InvalidTag:
            raise AuthenticationError("record failed authentication") from None
        if (ring := window.ring) is not None:  # n is the top's next: its slot held n - WINDOW
            ring[(n & SLOT_MASK) >> 3] |= 1 << (n & 7)
        window.top = n
        return n, plaintext

    def open_into(
        self, record: bytes | bytearray | memoryview, out: bytearray | memoryview
    ) -> tuple[Header, int]:
        """Like :meth:`open`, decrypting into ``out``; return the header and byte count.

        What ``out`` holds after a record failed (the method raised):

        - a malformed header, another session or endpoint, a replayed, too old or too far
          counter, or ``out`` shorter than the record's plaintext: ``out`` is untouched
          (these are checked before anything is written);
        - a failed tag: ``out[:n]`` is zero, where ``n`` is the record's length field
          minus the 16-byte tag (the bytes the record would have filled); the rest of
          ``out`` is untouched. cryptography's ``decrypt_into`` writes the unverified
          (attacker-malleable) CTR plaintext into ``out[:n]`` before it checks the tag;
          it is wiped before this method raises, so it exists only during the call: a
          caller must not let another thread read ``out`` while this runs.

        :meth:`open` and :meth:`open_fields` return fresh bytes and only after the tag
        verified; they never write into a caller's buffer.
        """
        state, aead, chain, rtype, flags, channel, n = self._prepare(record)
        size = len(record) - HEADER_SIZE - TAGLEN
        if len(out) < size:
            raise LocalProtocolError(f"output buffer of {len(out)} bytes, the record holds {size}")
        target = memoryview(out)[:size]
        try:
            aead.decrypt_into(  # type: ignore[attr-defined]
                self._nonce(0, n), memoryview(record)[HEADER_SIZE:], record[:HEADER_SIZE], target
            )
        except InvalidTag:
            # decrypt_into has already written the (unverified, attacker-malleable) CTR
            # plaintext into ``out`` when the tag fails: wipe it before reporting.
            target[:] = bytes(size)
            raise AuthenticationError("record failed authentication") from None
        self._accept(state, channel, n, chain)
        header = Header(
            _RECORD_TYPES[rtype], flags, self.session, self.sender, self.receiver, channel, n, size + TAGLEN
        )
        return header, size

    def _prepare(
        self, record: bytes | bytearray | memoryview
    ) -> tuple[ChannelState, AEAD, list[AEAD], int, int, int, int]:
        if len(record) < HEADER_SIZE + TAGLEN:
            raise RemoteProtocolError("record shorter than its header and tag")
        if record[:_PREFIX_SIZE] == self._data_prefix:  # the common case: a plain DATA record
            rtype, flags = RecordType.DATA, 0
            channel, n, length = _TAIL.unpack_from(record, _PREFIX_SIZE)
            if (
                length != len(record) - HEADER_SIZE
                or length > MAX_RECORD_PAYLOAD + TAGLEN
                or n > self._max_counter
            ):
                self._explain(record)
            return (*self._locate(channel, n), rtype, flags, channel, n)
        version, rtype, flags, reserved, session, sender, receiver, channel, n, length = HEADER.unpack_from(
            record
        )
        if (
            version != VERSION
            or reserved
            or flags & ~KNOWN_FLAGS
            or (rtype != RecordType.DATA and rtype != RecordType.CLOSE)
            or length != len(record) - HEADER_SIZE
            or length > MAX_RECORD_PAYLOAD + TAGLEN
            or session != self.session
            or sender != self.sender
            or receiver != self.receiver
            or n > self._max_counter
        ):
            self._explain(record)  # raises the precise error
        return (*self._locate(channel, n), rtype, flags, channel, n)

    def _locate(self, channel: int, n: int) -> tuple[ChannelState, AEAD, list[AEAD]]:
        """The channel state and AEAD for counter ``n``, after the replay check.

        A counter of a later epoch than the channel's gets a derived chain of keys that
        :meth:`_accept` commits once the tag verified; a forged record's chain is garbage
        when the check fails, so forged counters neither move the epoch nor grow the
        cache. A channel no authenticated record named is built here and stored only by
        :meth:`_accept`.
        """
        state = self._opening(channel)
        if n <= state.window.top:
            state.window.check(n)  # raises ReplayError for a duplicate or a too-old counter
        epoch = n >> self._shift
        if epoch == state.epoch:
            return state, state.aead, []
        if epoch < state.epoch:
            return state, state.keys.kept(epoch), []
        chain = state.keys.derive(epoch, max_skip=(REPLAY_WINDOW >> self._shift) + 2)
        return state, chain[-1], chain

    def _opening(self, channel: int) -> ChannelState:
        """The state that opens ``channel``: stored only by :meth:`_accept`."""
        return self._channels.get(channel) or self._new_channel(channel)

    def _explain(self, record: bytes | bytearray | memoryview) -> None:
        header = parse_header(record)
        if len(record) != HEADER_SIZE + header.length:
            raise RemoteProtocolError(
                f"record of {len(record)} bytes but its header says {HEADER_SIZE + header.length}"
            )
        self.check_header(header)
        raise RemoteProtocolError("malformed record header")  # pragma: no cover - defensive

    def _accept(self, state: ChannelState, channel: int, n: int, chain: list[AEAD]) -> None:
        """Record ``n`` authenticated: store its channel, move the window and the epoch."""
        window = state.window
        if channel not in self._channels:
            self._channels[channel] = state
        window.accept(n)
        keep_from = max(window.top - REPLAY_WINDOW + 1, 0) >> self._shift  # oldest epoch in the window
        if chain:
            state.commit(chain, keep_from)
        else:
            state.keys.retire_below(keep_from)
