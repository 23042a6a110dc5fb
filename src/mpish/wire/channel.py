"""SecureChannel: a Noise handshake, then authenticated records, sans-I/O.

Theory of operation
-------------------
A channel is one side of a two-party session. The caller moves bytes; the channel
never does I/O, never sleeps and never reads a clock::

    init = SecureChannel(role=Role.INITIATOR, binding=b, static_key=k0, remote_static=p1)
    resp = SecureChannel(role=Role.RESPONDER, binding=b, static_key=k1, remote_static=p0)
    for record in init.initiate():               # -> handshake message 1
        resp.receive_record(record)
    for record in resp.records_to_send():        # <- handshake message 2
        events = init.receive_record(record)     # [HandshakeComplete(...)]
    records = init.send(b"ls -l")                # list of records to move
    resp.receive_record(records[0])              # [Message(channel=0, data=b"ls -l")]

Transports that keep message boundaries (MPI: one message carries one record) call
:meth:`receive_record`; byte streams (pipes, sockets) call :meth:`receive_data`
with chunks of any size and :meth:`receive_eof` at the end. Receiving may produce
records to send (handshake replies): take them with :meth:`records_to_send`.

The binding (THREAT-MODEL "Prologue") goes into the Noise prologue: protocol name and
version, the session id, the ordered endpoint pair and the service. Any difference
between the two sides makes the handshake fail with AuthenticationError, which stops
downgrade, reflection and cross-job replay of handshakes (attacks 6 and 11). The
record header repeats session and endpoints, and the AEAD covers it (record.py).

A message longer than one record is split into records flagged MORE; the reader
joins them, bounded by ``max_message``. States and transitions are in state.py.
Every error moves the channel to ERROR and is re-raised; later calls raise
LocalProtocolError. With ``drop_forged=True`` (message transports only) a single
record that fails authentication or replay checks is counted in :attr:`rejected`
and reported by the raised error, but the channel stays usable (THREAT-MODEL
"Failures": a forged datagram may be dropped, the stream goes on).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .errors import (
    AuthenticationError,
    LocalProtocolError,
    MpishError,
    RemoteProtocolError,
    ReplayError,
    TruncatedError,
)
from .events import CloseReceived, Event, HandshakeComplete, Message
from .noise import HandshakeState, ProtocolName
from .record import (
    DEFAULT_LIMITS,
    FLAG_MORE,
    HEADER_SIZE,
    MAX_ENDPOINT,
    MAX_RECORD_PAYLOAD,
    SESSION_SIZE,
    Header,
    Limits,
    Opener,
    RecordType,
    Sealer,
    parse_header,
)
from .state import CAN_RECEIVE, CAN_SEND, Input, State, next_state

PROTOCOL = b"mpish"
PROTOCOL_VERSION = 1
CONTROL_CHANNEL = 0xFFFFFFFF  # carries the close record; never an application channel
DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
DEFAULT_PROTOCOL = "Noise_KK_25519_AESGCM_SHA256"  # ranks of one job
AUTHENTICATING_PATTERNS = frozenset({"KK", "IK", "XX"})  # IK/XX: a client reaching a server


class Role(enum.Enum):
    INITIATOR = "initiator"  # writes the first handshake message
    RESPONDER = "responder"  # waits for it


@dataclass(frozen=True, slots=True)
class Binding:
    """What a session is bound to: the same on both sides, or the handshake fails."""

    session: bytes  # 16 random bytes per job or connection
    initiator: int  # endpoint id (MPI rank) of the initiator
    responder: int  # endpoint id of the responder
    service: str  # e.g. "shell", "comm:<context>"

    def __post_init__(self) -> None:
        if len(self.session) != SESSION_SIZE:
            raise LocalProtocolError(f"a session id is {SESSION_SIZE} bytes")
        for endpoint in (self.initiator, self.responder):
            if not 0 <= endpoint <= MAX_ENDPOINT:
                raise LocalProtocolError(f"endpoint id {endpoint} out of range")
        if len(self.service.encode()) > 255:
            raise LocalProtocolError("service name longer than 255 bytes")

    def prologue(self, protocol_name: str) -> bytes:
        """The Noise prologue: every field length-prefixed or fixed-size, so unambiguous."""
        name = protocol_name.encode("ascii")
        service = self.service.encode()
        return b"".join(
            (
                PROTOCOL,
                struct.pack(">BB", PROTOCOL_VERSION, len(name)),
                name,
                self.session,
                struct.pack(">IIB", self.initiator, self.responder, len(service)),
                service,
            )
        )


class SecureChannel:
    """One side of an authenticated, encrypted two-party session (see module doc)."""

    def __init__(
        self,
        *,
        role: Role,
        binding: Binding,
        static_key: X25519PrivateKey,
        remote_static: bytes | None = None,
        protocol: str = DEFAULT_PROTOCOL,
        verify_remote: Callable[[bytes], bool] | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
        limits: Limits | None = None,
        drop_forged: bool = False,
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        self.role = role
        self.binding = binding
        self.protocol = ProtocolName.parse(protocol)
        if self.protocol.pattern.name not in AUTHENTICATING_PATTERNS:
            raise LocalProtocolError(
                f"{self.protocol.pattern.name} does not authenticate both sides; use KK, IK or XX"
            )
        self.max_message = max_message
        self.limits = limits or DEFAULT_LIMITS
        self.drop_forged = drop_forged
        self.rejected = 0  # records dropped under drop_forged
        self._verify_remote = verify_remote
        initiator = role is Role.INITIATOR
        self.local_id = binding.initiator if initiator else binding.responder
        self.remote_id = binding.responder if initiator else binding.initiator
        self._handshake: HandshakeState | None = HandshakeState(
            self.protocol,
            initiator=initiator,
            prologue=binding.prologue(self.protocol.name),
            s=static_key,
            rs=remote_static,
            e=ephemeral,
        )
        self._handshake_index = 0
        self.remote_static: bytes | None = remote_static
        self.handshake_hash: bytes | None = None
        self._set_state(State.IDLE if initiator else State.HANDSHAKE)
        self._sealer: Sealer | None = None
        self._opener: Opener | None = None
        self._outgoing: list[bytes | bytearray] = []
        self._stream = bytearray()  # receive_data: bytes not yet forming a record
        self._pending: dict[int, bytearray] = {}  # channel -> message being reassembled
        self._pending_next: dict[int, int] = {}  # channel -> counter the next part must have
        self._error: BaseException | None = None

    # -- state

    def _set_state(self, state: State) -> None:
        self.state = state
        # cached for the per-record hot paths (an Enum's hash is a Python-level call)
        self._can_send = state in CAN_SEND
        self._can_receive = state in CAN_RECEIVE

    def _move(self, event: Input) -> None:
        self._set_state(next_state(self.state, event))

    def _fail(self, exc: BaseException) -> None:
        if self.state is not State.ERROR:
            self._error = exc
            self._set_state(next_state(self.state, Input.FAIL))

    def _check_usable(self) -> None:
        if self.state is State.ERROR:
            raise LocalProtocolError(
                f"the channel is unusable after an earlier error: {self._error}"
            ) from self._error

    @property
    def is_open(self) -> bool:
        return self._can_send

    # -- handshake

    def initiate(self) -> list[bytes | bytearray]:
        """Initiator only: start the handshake; return the first record to send."""
        self._check_usable()
        if self.role is not Role.INITIATOR:
            raise LocalProtocolError("only the initiator starts the handshake")
        self._move(Input.START)
        self._write_handshake()
        return self.records_to_send()

    def _write_handshake(self) -> None:
        assert self._handshake is not None
        body = self._handshake.write_message(b"")  # no payload in any handshake message
        header = Header(
            RecordType.HANDSHAKE,
            0,
            self.binding.session,
            self.local_id,
            self.remote_id,
            0,
            self._handshake_index,
            len(body),
        )
        self._outgoing.append(header.pack() + body)
        self._handshake_index += 1

    def _read_handshake(self, header: Header, body: bytes | memoryview) -> list[Event]:
        assert self._handshake is not None
        if header.type is not RecordType.HANDSHAKE:
            raise RemoteProtocolError(f"{header.type.name} record before the handshake finished")
        if header.session != self.binding.session:
            raise AuthenticationError("handshake for another session")
        if (header.sender, header.receiver) != (self.remote_id, self.local_id):
            raise AuthenticationError("handshake from an unexpected endpoint")
        if header.counter != self._handshake_index or header.flags or header.channel:
            raise RemoteProtocolError("handshake message out of sequence")
        payload = self._handshake.read_message(bytes(body))
        self._handshake_index += 1
        if payload:
            raise RemoteProtocolError("handshake message carries a payload")
        if self._handshake.remote_static is not None and self.remote_static is None:
            self._check_remote(self._handshake.remote_static)
        if not self._handshake.complete:
            self._write_handshake()
        return self._finish_handshake_if_done()

    def _check_remote(self, key: bytes) -> None:
        if self._verify_remote is not None and not self._verify_remote(key):
            raise AuthenticationError("the peer's static key is not trusted")
        self.remote_static = key

    def _finish_handshake_if_done(self) -> list[Event]:
        hs = self._handshake
        if hs is None or not hs.complete:
            return []
        send_key, receive_key = hs.transport_keys()
        remote = hs.remote_static
        assert remote is not None  # KK, IK and XX all authenticate both sides
        assert self.remote_static == remote  # known in advance (KK, IK) or checked on arrival
        cipher, hashes, b = self.protocol.cipher, self.protocol.hash, self.binding
        self._sealer = Sealer(cipher, hashes, send_key, b.session, self.local_id, self.remote_id, self.limits)
        self._opener = Opener(
            cipher, hashes, receive_key, b.session, self.remote_id, self.local_id, self.limits
        )
        self.handshake_hash = hs.handshake_hash
        self._handshake = None  # drop ephemeral secrets
        self._move(Input.HANDSHAKE_DONE)
        return [HandshakeComplete(remote, self.handshake_hash)]

    # -- sending

    def _data_sealer(self, channel: int) -> Sealer:
        """The sealer, if user data may be sent now on ``channel``; else the error that says why."""
        sealer = self._sealer
        if not self._can_send or sealer is None:
            self._check_usable()
            raise LocalProtocolError(f"cannot send data in state {self.state.value}")
        if channel == CONTROL_CHANNEL:
            raise LocalProtocolError("channel 0xFFFFFFFF is reserved")
        return sealer

    def send(self, data: bytes | bytearray | memoryview, channel: int = 0) -> list[bytes | bytearray]:
        """Seal one message on ``channel``; return its records (several if it is large)."""
        sealer = self._data_sealer(channel)
        size = len(data)
        if size > self.max_message:
            raise LocalProtocolError(f"message of {size} bytes exceeds max_message {self.max_message}")
        try:
            if size <= MAX_RECORD_PAYLOAD:  # the common case: one record
                return [sealer.seal(data, channel=channel)]
            view = memoryview(data)
            records: list[bytes | bytearray] = []
            for start in range(0, size, MAX_RECORD_PAYLOAD):
                end = min(start + MAX_RECORD_PAYLOAD, size)
                flags = FLAG_MORE if end < size else 0
                records.append(sealer.seal(view[start:end], channel=channel, flags=flags))
            return records
        except MpishError as exc:
            self._fail(exc)
            raise

    def send_into(self, out: bytearray | memoryview, data: bytes | bytearray | memoryview,
                  channel: int) -> int:
        """:meth:`send` of a message that fits one record, sealed into ``out`` (a reused
        buffer: no allocation, no zero-fill); return the record's size."""
        sealer = self._data_sealer(channel)
        try:
            return sealer.seal_into(out, data, channel=channel)
        except MpishError as exc:
            self._fail(exc)
            raise

    def close(self) -> list[bytes | bytearray]:
        """Our authenticated close record: after it we send nothing more."""
        self._check_usable()
        if not self._can_send or self._sealer is None:
            raise LocalProtocolError(f"cannot close in state {self.state.value}")
        record = self._sealer.seal(b"", channel=CONTROL_CHANNEL, type=RecordType.CLOSE)
        self._move(Input.SEND_CLOSE)
        return [record]

    def records_to_send(self) -> list[bytes | bytearray]:
        """Records produced while receiving (handshake replies); the queue is emptied."""
        out, self._outgoing = self._outgoing, []
        return out

    # -- receiving

    def receive_record(self, record: bytes | bytearray | memoryview) -> list[Event]:
        """Process exactly one record (message transports such as MPI)."""
        try:
            opener = self._opener
            if opener is not None and self._can_receive:
                rtype, flags, channel, counter, plaintext = opener.open_fields(record)
                if rtype == RecordType.DATA and not flags and channel not in self._pending:
                    if channel == CONTROL_CHANNEL:
                        raise RemoteProtocolError("data record on the control channel")
                    return [Message(channel, plaintext)]  # the common case: a whole message
                return self._opened(rtype, flags, channel, counter, plaintext)
            self._check_usable()
            header = parse_header(record)
            if len(record) != HEADER_SIZE + header.length:
                raise RemoteProtocolError(
                    f"message of {len(record)} bytes holds a record of {HEADER_SIZE + header.length}"
                )
            return self._process(header, record)
        except (AuthenticationError, ReplayError, RemoteProtocolError) as exc:
            if self.drop_forged and self.state in (State.OPEN, State.CLOSE_SENT):
                self.rejected += 1
                raise
            self._fail(exc)
            raise
        except MpishError as exc:
            self._fail(exc)
            raise

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Process bytes of a stream, cut anywhere; return the events they complete."""
        self._check_usable()
        self._stream += data
        events: list[Event] = []
        try:
            while len(self._stream) >= HEADER_SIZE:
                header = parse_header(self._stream)  # bounds the length before we wait for it
                end = HEADER_SIZE + header.length
                if len(self._stream) < end:
                    break
                record = bytes(self._stream[:end])
                del self._stream[:end]
                events += self._process(header, record)
        except MpishError as exc:
            self._fail(exc)
            raise
        return events

    def receive_eof(self) -> list[Event]:
        """The stream ended. Fine after the peer's close; otherwise data may be lost."""
        self._check_usable()
        if self.state in (State.CLOSE_RECEIVED, State.CLOSED) and not self._stream:
            return []
        exc = TruncatedError(
            "the stream ended before the peer's authenticated close: output may be missing"
            + (f" ({len(self._stream)} bytes of a partial record)" if self._stream else "")
        )
        self._fail(exc)
        raise exc

    def _process(self, header: Header, record: bytes | bytearray | memoryview) -> list[Event]:
        if not self._can_receive:
            raise RemoteProtocolError(f"record received in state {self.state.value}")
        if self._opener is None:
            return self._read_handshake(header, memoryview(record)[HEADER_SIZE:])
        return self._opened(*self._opener.open_fields(record))

    def _opened(self, rtype: int, flags: int, channel: int, counter: int, plaintext: bytes) -> list[Event]:
        """Handle a record that authenticated: close, or a (part of a) message."""
        if rtype == RecordType.CLOSE:
            if channel != CONTROL_CHANNEL or plaintext or flags:
                raise RemoteProtocolError("malformed close record")
            if self._pending:
                raise TruncatedError("the peer closed in the middle of a message")
            self._move(Input.RECV_CLOSE)
            return [CloseReceived()]
        if channel == CONTROL_CHANNEL:
            raise RemoteProtocolError("data record on the control channel")
        return self._reassemble(channel, counter, flags, plaintext)

    def _reassemble(self, channel: int, counter: int, flags: int, plaintext: bytes) -> list[Event]:
        pending = self._pending.get(channel)
        if pending is not None:
            if counter != self._pending_next[channel]:
                raise RemoteProtocolError("the parts of a message arrived out of order")
            if len(pending) + len(plaintext) > self.max_message:
                raise RemoteProtocolError(f"message exceeds max_message {self.max_message}")
            pending += plaintext
        if flags & FLAG_MORE:
            if pending is None:
                self._pending[channel] = bytearray(plaintext)
            self._pending_next[channel] = counter + 1
            return []
        if pending is None:
            return [Message(channel, plaintext)]
        del self._pending[channel], self._pending_next[channel]
        return [Message(channel, bytes(pending))]
