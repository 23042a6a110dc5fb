"""Transport records: the bytes that cross the wire after (and during) the handshake.

Theory of operation
-------------------
Every record is a fixed 44-byte header followed by a body::

    offset size field
         0    1 version        (1)
         1    1 type           HANDSHAKE=1, DATA=2, CLOSE=3
         2    1 flags          bit 0: MORE, the message continues in the next record
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
across a rekey boundary still works. The last nonce value is reserved (§5.1): at
``max_counter`` a channel stops with :class:`LocalProtocolError` (attack 12).

Replay (attacks 3 and 4): each channel keeps a sliding window of the last
:data:`REPLAY_WINDOW` counters (WireGuard keeps 8,192). A counter seen before, or
older than the window, raises :class:`ReplayError`; the window moves only after the
tag verified, so a forged record cannot move it.

Nothing here does I/O. :class:`Sealer` and :class:`Opener` hold one direction each.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag

from .errors import AuthenticationError, LocalProtocolError, RemoteProtocolError, ReplayError
from .noise import AEAD, MAX_NONCE, TAGLEN, CipherFunctions, HashFunctions, rekey_bytes

HEADER = struct.Struct(">BBBB16sIIIQI")
HEADER_SIZE = HEADER.size  # 44
VERSION = 1
FLAG_MORE = 0x01
KNOWN_FLAGS = FLAG_MORE
SESSION_SIZE = 16
MAX_ENDPOINT = 2**32 - 1
MAX_CHANNEL = 2**32 - 1
MAX_RECORD_PAYLOAD = 1 << 20  # plaintext bytes in one record
MAX_HANDSHAKE_BODY = 65535  # Noise §3
REPLAY_WINDOW = 8192
DEFAULT_REKEY_SHIFT = 30  # REKEY every 2**30 records of a channel: <= 2**50 bytes per key
DEFAULT_MAX_COUNTER = MAX_NONCE - 1  # the last usable counter; MAX_NONCE is reserved for REKEY
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


class RecordType(enum.IntEnum):
    HANDSHAKE = 1  # a Noise handshake message; body not encrypted by this layer
    DATA = 2  # application bytes
    CLOSE = 3  # authenticated end of stream


@dataclass(frozen=True, slots=True)
class Header:
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
        return HEADER.pack(
            VERSION,
            self.type,
            self.flags,
            0,
            self.session,
            self.sender,
            self.receiver,
            self.channel,
            self.counter,
            self.length,
        )


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
    try:
        kind = RecordType(rtype)
    except ValueError:
        raise RemoteProtocolError(f"unknown record type {rtype}") from None
    limit = MAX_HANDSHAKE_BODY if kind is RecordType.HANDSHAKE else MAX_RECORD_PAYLOAD + TAGLEN
    if length > limit:
        raise RemoteProtocolError(f"record length {length} exceeds the maximum of {limit}")
    if kind is not RecordType.HANDSHAKE and length < TAGLEN:
        raise RemoteProtocolError("record body shorter than its tag")
    return Header(kind, flags, session, sender, receiver, channel, counter, length)


class ReplayWindow:
    """WireGuard-style sliding bitmap of the last REPLAY_WINDOW counters (RFC 6479 idea)."""

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = -1  # highest accepted counter
        self.bits = 0  # bit i set: counter top - i was accepted

    def check(self, n: int) -> None:
        """Raise ReplayError if ``n`` was accepted before or is too old to tell."""
        if n > self.top:
            return
        age = self.top - n
        if age >= REPLAY_WINDOW:
            raise ReplayError(f"record counter {n} is older than the replay window")
        if (self.bits >> age) & 1:
            raise ReplayError(f"record counter {n} was already received")

    def accept(self, n: int) -> None:
        """Mark ``n`` as received (call only after its tag verified)."""
        if n > self.top:
            shift = n - self.top
            self.bits = ((self.bits << shift) | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.top = n
        else:
            self.bits |= 1 << (self.top - n)


class _ChannelKeys:
    """The key epochs of one channel in one direction: epoch e+1 = REKEY(epoch e)."""

    __slots__ = ("_aeads", "_first_epoch", "_functions", "_last_epoch", "_last_key")

    def __init__(self, functions: CipherFunctions, first_key: bytes) -> None:
        self._functions = functions
        self._aeads: dict[int, AEAD] = {0: functions.make(first_key)}
        self._first_epoch = 0
        self._last_epoch = 0
        self._last_key = first_key

    def aead(self, epoch: int, *, max_skip: int) -> AEAD:
        found = self._aeads.get(epoch)
        if found is not None:
            return found
        if epoch < self._last_epoch:
            raise ReplayError("record belongs to a key epoch that was already retired")
        if epoch - self._last_epoch > max_skip:
            raise RemoteProtocolError("record counter jumps too far ahead")
        while self._last_epoch < epoch:
            self._last_key = rekey_bytes(self._functions, self._last_key)
            self._last_epoch += 1
            self._aeads[self._last_epoch] = self._functions.make(self._last_key)
        return self._aeads[epoch]

    def retire_below(self, epoch: int) -> None:
        """Forget keys of epochs below ``epoch`` (forward secrecy for old records)."""
        if epoch <= self._first_epoch:
            return
        for old in [e for e in self._aeads if e < epoch]:
            del self._aeads[old]
        self._first_epoch = epoch


def channel_key(hashes: HashFunctions, direction_key: bytes, channel: int) -> bytes:
    """The first key of ``channel``: HKDF(direction key, "mpish channel" || id)."""
    return hashes.hkdf(direction_key, b"mpish channel" + channel.to_bytes(4, "big"), 1)[0][:32]


@dataclass(frozen=True, slots=True)
class Limits:
    """Counter limits shared by both sides (fixed by the protocol version; smaller in tests)."""

    rekey_shift: int = DEFAULT_REKEY_SHIFT
    max_counter: int = DEFAULT_MAX_COUNTER

    def __post_init__(self) -> None:
        if not 1 <= self.rekey_shift <= 63 or not 1 <= self.max_counter <= DEFAULT_MAX_COUNTER:
            raise LocalProtocolError("invalid record limits")


DEFAULT_LIMITS = Limits()


class _Direction:
    """What Sealer and Opener share: suite, key, endpoints and per-channel key schedules."""

    def __init__(
        self,
        functions: CipherFunctions,
        hashes: HashFunctions,
        key: bytes,
        session: bytes,
        sender: int,
        receiver: int,
        limits: Limits | None,
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
        self._keys: dict[int, _ChannelKeys] = {}
        self._nonce = functions.nonce
        self._shift = self.limits.rekey_shift

    def _new_channel_keys(self, channel: int) -> _ChannelKeys:
        if not 0 <= channel <= MAX_CHANNEL:
            raise LocalProtocolError(f"channel id {channel} out of range")
        return _ChannelKeys(self.functions, channel_key(self.hashes, self._key, channel))


class Sealer(_Direction):
    """Encrypts records in one direction. Counters are per channel, from 0."""

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
        super().__init__(functions, hashes, key, session, sender, receiver, limits)
        self._counters: dict[int, int] = {}

    def next_counter(self, channel: int) -> int:
        return self._counters.get(channel, 0)

    def seal(
        self,
        payload: bytes | bytearray | memoryview,
        *,
        channel: int = 0,
        type: RecordType = RecordType.DATA,
        flags: int = 0,
    ) -> bytearray:
        """One record for ``payload`` (at most MAX_RECORD_PAYLOAD bytes)."""
        size = len(payload)
        out = bytearray(HEADER_SIZE + size + TAGLEN)
        self.seal_into(out, payload, channel=channel, type=type, flags=flags)
        return out

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
        counters = self._counters
        n = counters.get(channel, 0)
        if n > self.limits.max_counter:
            raise LocalProtocolError(f"record counter of channel {channel} is exhausted; start a new session")
        keys = self._keys.get(channel)
        if keys is None:
            keys = self._keys[channel] = self._new_channel_keys(channel)
        epoch = n >> self._shift
        aead = keys.aead(epoch, max_skip=1)
        keys.retire_below(epoch)
        total = HEADER_SIZE + size + TAGLEN
        header = HEADER.pack(
            VERSION,
            type,
            flags,
            0,
            self.session,
            self.sender,
            self.receiver,
            channel,
            n,
            size + TAGLEN,
        )
        view = memoryview(out)
        view[:HEADER_SIZE] = header
        aead.encrypt_into(self._nonce(n), payload, header, view[HEADER_SIZE:total])  # type: ignore[attr-defined]
        counters[channel] = n + 1
        return total


class Opener(_Direction):
    """Verifies and decrypts records of one direction; enforces the replay window."""

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
        super().__init__(functions, hashes, key, session, sender, receiver, limits)
        self._windows: dict[int, ReplayWindow] = {}

    def check_header(self, header: Header) -> None:
        """Everything about a header that can be checked before its tag."""
        if header.session != self.session:
            raise RemoteProtocolError("record belongs to another session")
        if header.sender != self.sender or header.receiver != self.receiver:
            raise RemoteProtocolError(
                f"record from endpoint {header.sender} to {header.receiver} arrived on the "
                f"channel from {self.sender} to {self.receiver}"
            )
        if header.counter > self.limits.max_counter:
            raise RemoteProtocolError("record counter beyond the limit")
        if header.type is RecordType.HANDSHAKE:
            raise RemoteProtocolError("handshake record after the handshake")

    def open(self, record: bytes | bytearray | memoryview) -> tuple[Header, bytes]:
        """Authenticate and decrypt one whole record; return its header and plaintext."""
        header, body, keys, aead = self._prepare(record)
        try:
            plaintext = aead.decrypt(self._nonce(header.counter), body, record[:HEADER_SIZE])  # type: ignore[arg-type]
        except InvalidTag:
            raise AuthenticationError("record failed authentication") from None
        self._accept(header, keys)
        return header, plaintext

    def open_into(
        self, record: bytes | bytearray | memoryview, out: bytearray | memoryview
    ) -> tuple[Header, int]:
        """Like :meth:`open`, decrypting into ``out``; return the header and byte count.

        ``out`` is only written after the tag verified (cryptography checks the tag
        before releasing plaintext), so no unauthenticated byte is ever exposed.
        """
        header, body, keys, aead = self._prepare(record)
        size = header.length - TAGLEN
        try:
            aead.decrypt_into(  # type: ignore[attr-defined]
                self._nonce(header.counter), body, record[:HEADER_SIZE], memoryview(out)[:size]
            )
        except InvalidTag:
            raise AuthenticationError("record failed authentication") from None
        self._accept(header, keys)
        return header, size

    def _prepare(
        self, record: bytes | bytearray | memoryview
    ) -> tuple[Header, memoryview, _ChannelKeys, AEAD]:
        header = parse_header(record)
        if len(record) != HEADER_SIZE + header.length:
            raise RemoteProtocolError(
                f"record of {len(record)} bytes but its header says {HEADER_SIZE + header.length}"
            )
        self.check_header(header)
        window = self._windows.get(header.channel)
        if window is not None:
            window.check(header.counter)
        # A channel's keys are kept only once one of its records authenticated, so
        # forged records naming new channels cost nothing lasting.
        keys = self._keys.get(header.channel) or self._new_channel_keys(header.channel)
        max_skip = (REPLAY_WINDOW >> self._shift) + 2
        aead = keys.aead(header.counter >> self._shift, max_skip=max_skip)
        return header, memoryview(record)[HEADER_SIZE:], keys, aead

    def _accept(self, header: Header, keys: _ChannelKeys) -> None:
        self._keys[header.channel] = keys
        windows = self._windows
        window = windows.get(header.channel)
        if window is None:
            window = windows[header.channel] = ReplayWindow()
        window.accept(header.counter)
        oldest = window.top - REPLAY_WINDOW + 1
        if oldest > 0:
            keys.retire_below(oldest >> self._shift)
