"""SecureChannel through its public API: two channels back to back through memory."""

from __future__ import annotations

import os

import pytest

from mpish.wire.channel import CONTROL_CHANNEL, Binding, Role, SecureChannel
from mpish.wire.errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    TruncatedError,
)
from mpish.wire.events import CloseReceived, HandshakeComplete, Message
from mpish.wire.noise import HandshakeState, generate_keypair, public_bytes
from mpish.wire.record import FLAG_MORE, HEADER_SIZE, MAX_RECORD_PAYLOAD, Header, RecordType, Sealer
from mpish.wire.state import State
from wirepair import PATTERNS, SUITES, PairFactory


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_and_suite_back_to_back(make_pair: PairFactory, pattern: str, suite: str) -> None:
    pair = make_pair(pattern, suite)
    assert pair.initiator.state is State.OPEN and pair.responder.state is State.OPEN
    (done_i,) = pair.events["initiator"]
    (done_r,) = pair.events["responder"]
    assert isinstance(done_i, HandshakeComplete) and isinstance(done_r, HandshakeComplete)
    assert done_i.remote_static == public_bytes(pair.responder_key)
    assert done_r.remote_static == public_bytes(pair.initiator_key)
    assert done_i.handshake_hash == done_r.handshake_hash
    for sender in (pair.initiator, pair.responder):
        receiver = pair.other(sender)
        for channel, size in ((0, 0), (5, 1), (5, 1000), (2**32 - 2, 70_000)):
            data = os.urandom(size)
            events = [e for r in sender.send(data, channel) for e in receiver.receive_record(r)]
            assert events == [Message(channel, data)]


def test_large_message_is_split_and_joined(make_pair: PairFactory) -> None:
    pair = make_pair()
    data = os.urandom(3 * MAX_RECORD_PAYLOAD + 123)
    records = pair.initiator.send(data, 9)
    assert len(records) == 4
    assert all(len(r) <= HEADER_SIZE + MAX_RECORD_PAYLOAD + 16 for r in records)
    events = [e for r in records for e in pair.responder.receive_record(r)]
    assert events == [Message(9, data)]


def test_messages_on_channels_interleave(make_pair: PairFactory) -> None:
    pair = make_pair()
    big = os.urandom(2 * MAX_RECORD_PAYLOAD)
    big_records = pair.initiator.send(big, 1)
    small_records = pair.initiator.send(b"small", 2)
    events = pair.responder.receive_record(big_records[0])
    events += pair.responder.receive_record(small_records[0])
    events += pair.responder.receive_record(big_records[1])
    assert events == [Message(2, b"small"), Message(1, big)]


def test_stream_mode_any_chunking(make_pair: PairFactory) -> None:
    pair = make_pair()
    stream = b"".join(
        bytes(r)
        for r in pair.initiator.send(b"one", 0) + pair.initiator.send(b"two", 3) + pair.initiator.close()
    )
    events = []
    for i in range(len(stream)):
        events += pair.responder.receive_data(stream[i : i + 1])
    assert events == [Message(0, b"one"), Message(3, b"two"), CloseReceived()]
    assert pair.responder.receive_eof() == []


def test_clean_close_both_ways(make_pair: PairFactory) -> None:
    pair = make_pair()
    (close_i,) = pair.initiator.close()
    assert pair.initiator.state is State.CLOSE_SENT
    with pytest.raises(LocalProtocolError):
        pair.initiator.send(b"after close")
    assert pair.responder.receive_record(close_i) == [CloseReceived()]
    assert pair.responder.state is State.CLOSE_RECEIVED
    (late,) = pair.responder.send(b"still allowed: half close")
    assert pair.initiator.receive_record(late) == [Message(0, b"still allowed: half close")]
    (close_r,) = pair.responder.close()
    assert pair.initiator.receive_record(close_r) == [CloseReceived()]
    assert pair.initiator.state is State.CLOSED and pair.responder.state is State.CLOSED


def test_send_before_handshake_is_local_error(make_pair: PairFactory) -> None:
    pair = make_pair(handshake=False)
    with pytest.raises(LocalProtocolError):
        pair.initiator.send(b"too early")
    with pytest.raises(LocalProtocolError):
        pair.responder.initiate()


def test_reserved_channel_and_message_limit(make_pair: PairFactory) -> None:
    pair = make_pair(max_message=100)
    with pytest.raises(LocalProtocolError):
        pair.initiator.send(b"x", CONTROL_CHANNEL)
    with pytest.raises(LocalProtocolError):
        pair.initiator.send(bytes(101))


def test_channel_in_error_state_refuses_everything(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"hello")
    forged = bytearray(record)
    forged[-1] ^= 1
    with pytest.raises(AuthenticationError):
        pair.responder.receive_record(forged)
    assert pair.responder.state is State.ERROR
    for call in (
        lambda: pair.responder.receive_record(record),
        lambda: pair.responder.send(b"x"),
        pair.responder.close,
        lambda: pair.responder.receive_data(b""),
    ):
        with pytest.raises(LocalProtocolError, match="unusable"):
            call()


def test_nn_is_refused_because_it_authenticates_nobody() -> None:
    with pytest.raises(LocalProtocolError, match="does not authenticate"):
        SecureChannel(
            role=Role.INITIATOR,
            binding=Binding(os.urandom(16), 0, 1, "x"),
            static_key=generate_keypair(),
            protocol="Noise_NN_25519_AESGCM_SHA256",
        )


def test_xx_pinning_callback_rejects_untrusted_key(make_pair: PairFactory) -> None:
    pair = make_pair("XX", verify_remote=lambda key: False, handshake=False)
    first = pair.initiator.initiate()
    pair.responder.receive_record(first[0])
    with pytest.raises(AuthenticationError, match="not trusted"):
        pair.initiator.receive_record(pair.responder.records_to_send()[0])


def test_binding_validation() -> None:
    with pytest.raises(LocalProtocolError):
        Binding(b"short", 0, 1, "x")
    with pytest.raises(LocalProtocolError):
        Binding(os.urandom(16), -1, 1, "x")
    with pytest.raises(LocalProtocolError):
        Binding(os.urandom(16), 0, 1, "s" * 256)


def test_truncated_stream_in_the_middle_of_a_record(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"payload")
    assert pair.responder.receive_data(record[:-3]) == []
    with pytest.raises(TruncatedError, match="partial record"):
        pair.responder.receive_eof()


def test_malformed_message_transport_record_sizes(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"payload")
    with pytest.raises(RemoteProtocolError, match="header says"):
        pair.responder.receive_record(bytes(record) + b"extra")


# Records that authenticate but break the channel protocol: a peer holding the key
# (or a bug) could send them. They are forged here with the sender's own record sealer.


def _sealer(channel: SecureChannel) -> Sealer:
    sealer = channel._sealer
    assert sealer is not None
    return sealer


def test_authenticated_protocol_violations(make_pair: PairFactory) -> None:
    cases = [
        (lambda s: s.seal(b"x", channel=CONTROL_CHANNEL), "data record on the control channel"),
        (lambda s: s.seal(b"x", channel=CONTROL_CHANNEL, flags=FLAG_MORE), "control channel"),
        (lambda s: s.seal(b"not empty", channel=CONTROL_CHANNEL, type=RecordType.CLOSE), "malformed close"),
        (lambda s: s.seal(b"", channel=3, type=RecordType.CLOSE), "malformed close"),
    ]
    for make, message in cases:
        pair = make_pair()
        with pytest.raises(RemoteProtocolError, match=message):
            pair.responder.receive_record(make(_sealer(pair.initiator)))
        assert pair.responder.state is State.ERROR


def test_parts_of_a_message_must_be_consecutive(make_pair: PairFactory) -> None:
    pair = make_pair()
    sealer = _sealer(pair.initiator)
    first = sealer.seal(b"part 1", channel=4, flags=FLAG_MORE)
    sealer.seal(b"lost part", channel=4, flags=FLAG_MORE)
    third = sealer.seal(b"part 3", channel=4)
    assert pair.responder.receive_record(first) == []
    with pytest.raises(RemoteProtocolError, match="out of order"):
        pair.responder.receive_record(third)


def test_reassembly_is_bounded_by_max_message(make_pair: PairFactory) -> None:
    pair = make_pair(max_message=10)
    sealer = _sealer(pair.initiator)
    assert pair.responder.receive_record(sealer.seal(b"123456", flags=FLAG_MORE)) == []
    with pytest.raises(RemoteProtocolError, match="exceeds max_message"):
        pair.responder.receive_record(sealer.seal(b"7890123", flags=FLAG_MORE))


def test_records_after_the_peer_closed(make_pair: PairFactory) -> None:
    pair = make_pair()
    (close,) = pair.initiator.close()
    pair.responder.receive_record(close)
    late = _sealer(pair.initiator).seal(b"after close")
    with pytest.raises(RemoteProtocolError, match="state close-received"):
        pair.responder.receive_record(late)
    with pytest.raises(LocalProtocolError, match="cannot close in state close-sent"):
        pair.initiator.close()


def test_handshake_violations(make_pair: PairFactory) -> None:
    pair = make_pair(handshake=False)
    (first,) = pair.initiator.initiate()
    wrong_type = bytearray(first)
    wrong_type[1] = RecordType.DATA
    with pytest.raises(RemoteProtocolError, match="before the handshake finished"):
        pair.responder.receive_record(bytes(wrong_type))

    pair = make_pair(handshake=False)
    (first,) = pair.initiator.initiate()
    with pytest.raises(RemoteProtocolError, match="holds a record"):
        pair.responder.receive_record(bytes(first) + b"x")


def test_handshake_payload_is_refused() -> None:
    # Noise allows payloads in handshake messages; mpish sends none (THREAT-MODEL: no data
    # in the replayable first message), so a peer that sends one is refused.
    k0, k1 = generate_keypair(), generate_keypair()
    binding = Binding(os.urandom(16), 0, 1, "test")
    responder = SecureChannel(
        role=Role.RESPONDER, binding=binding, static_key=k1, remote_static=public_bytes(k0)
    )
    hs = HandshakeState(
        "Noise_KK_25519_AESGCM_SHA256",
        initiator=True,
        prologue=binding.prologue("Noise_KK_25519_AESGCM_SHA256"),
        s=k0,
        rs=public_bytes(k1),
    )
    body = hs.write_message(b"early data")
    header = Header(RecordType.HANDSHAKE, 0, binding.session, 0, 1, 0, 0, len(body))
    with pytest.raises(RemoteProtocolError, match="carries a payload"):
        responder.receive_record(header.pack() + body)
