"""SecureChannel through its public API: two channels back to back through memory."""

from __future__ import annotations

import os

import pytest

from wirepair import PATTERNS, SUITES, PairFactory
from mpish.wire.channel import CONTROL_CHANNEL, Binding, Role, SecureChannel
from mpish.wire.errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    TruncatedError,
)
from mpish.wire.events import CloseReceived, HandshakeComplete, Message
from mpish.wire.noise import generate_keypair, public_bytes
from mpish.wire.record import HEADER_SIZE, MAX_RECORD_PAYLOAD
from mpish.wire.state import State


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
