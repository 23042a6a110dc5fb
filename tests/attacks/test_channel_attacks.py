"""THREAT-MODEL attacks that apply to the sans-I/O channel: each must be rejected,
deliver nothing, and leave memory bounded. Numbers refer to THREAT-MODEL.md."""

from __future__ import annotations

import os
import struct

import pytest
from cryptography.exceptions import InvalidTag

from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import (
    AuthenticationError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ReplayError,
    TruncatedError,
)
from mpish.wire.events import Message
from mpish.wire.framing import FrameDecoder
from mpish.wire.noise import AESGCM_FUNCTIONS, HASHES, generate_keypair, public_bytes, rekey_bytes
from mpish.wire.record import HEADER, HEADER_SIZE, Limits, channel_key
from mpish.wire.replay import REPLAY_WINDOW
from mpish.wire.state import State
from wirepair import PairFactory

# Offsets of header fields (record.py): version 0, type 1, flags 2, reserved 3,
# session 4..20, sender 20, receiver 24, channel 28, counter 32, length 40.
SENDER, RECEIVER, CHANNEL, COUNTER, LENGTH = 20, 24, 28, 32, 40

# Points of small order on Curve25519 (from the X25519 literature: 0, 1 and an order-8 point).
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def _rewrite(record: bytes | bytearray, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(record)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


# 1. Forged record injected ------------------------------------------------------------


def test_1_random_bytes_are_rejected(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    for size in (0, 10, HEADER_SIZE, HEADER_SIZE + 16, 500):
        with pytest.raises(ProtocolError):
            pair.responder.receive_record(os.urandom(size))
    # drop_forged: the good stream goes on, and the drops were counted
    (good,) = pair.initiator.send(b"still here")
    assert pair.responder.receive_record(good) == [Message(0, b"still here")]
    assert pair.responder.rejected == 5


def test_1_well_formed_header_with_bad_tag(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"genuine")
    forged = bytes(record[:HEADER_SIZE]) + os.urandom(len(record) - HEADER_SIZE)
    with pytest.raises(AuthenticationError):
        pair.responder.receive_record(forged)
    assert pair.responder.state is State.ERROR  # strict default: the channel is closed


def test_1_forged_record_does_not_burn_its_counter(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    (record,) = pair.initiator.send(b"genuine")
    forged = bytes(record[:HEADER_SIZE]) + os.urandom(len(record) - HEADER_SIZE)
    with pytest.raises(AuthenticationError):
        pair.responder.receive_record(forged)
    assert pair.responder.receive_record(record) == [Message(0, b"genuine")]


# 3. Replay and 4. reordering ------------------------------------------------------------


def test_3_replay_is_rejected(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    (record,) = pair.initiator.send(b"rm -rf ~/tmp")
    assert pair.responder.receive_record(record) == [Message(0, b"rm -rf ~/tmp")]
    with pytest.raises(ReplayError):
        pair.responder.receive_record(record)


def test_4_reordering_within_window_once_each(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    records = [pair.initiator.send(f"m{i}".encode())[0] for i in range(5)]
    delivered = []
    for index in (1, 0, 4, 2, 3):
        delivered += pair.responder.receive_record(records[index])
    assert [m.data for m in delivered if isinstance(m, Message)] == [b"m1", b"m0", b"m4", b"m2", b"m3"]
    for record in records:
        with pytest.raises(ReplayError):
            pair.responder.receive_record(record)


def test_4_older_than_the_window_is_rejected(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    first = pair.initiator.send(b"old")[0]
    latest = None
    for _ in range(REPLAY_WINDOW + 1):
        latest = pair.initiator.send(b"x")[0]
    assert latest is not None
    pair.responder.receive_record(latest)
    with pytest.raises(ReplayError, match="older than the replay window"):
        pair.responder.receive_record(first)


# 5. Cross-context substitution -------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "error"),
    [
        (CHANNEL, ">I", 7, AuthenticationError),  # moved to another channel / tag
        (SENDER, ">I", 2, RemoteProtocolError),  # claims another rank
        (RECEIVER, ">I", 2, RemoteProtocolError),  # addressed to another rank
        (COUNTER, ">Q", 1, AuthenticationError),  # another counter
    ],
)
def test_5_moved_record_is_rejected(
    make_pair: PairFactory, offset: int, fmt: str, value: int, error: type[Exception]
) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"for channel 0", 0)
    with pytest.raises(error):
        pair.responder.receive_record(_rewrite(record, offset, fmt, value))


def test_5_record_of_another_session_is_rejected(make_pair: PairFactory) -> None:
    one, two = make_pair(), make_pair(drop_forged=True)
    (record,) = one.initiator.send(b"session one")
    with pytest.raises(RemoteProtocolError, match="another session"):
        two.responder.receive_record(record)
    # even with the session field rewritten to match, the keys differ
    rewritten = bytearray(record)
    rewritten[4:20] = two.responder.binding.session
    with pytest.raises(AuthenticationError):
        two.responder.receive_record(bytes(rewritten))


def test_5_same_session_id_other_pair_fails_authentication(make_pair: PairFactory) -> None:
    session = os.urandom(16)
    one, two = make_pair(session=session), make_pair(session=session)
    (record,) = one.initiator.send(b"pair one")
    with pytest.raises(AuthenticationError):
        two.responder.receive_record(record)


# 6. Reflection ----------------------------------------------------------------------


def test_6_own_record_reflected_back(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"mine")
    with pytest.raises(RemoteProtocolError):
        pair.initiator.receive_record(record)


def test_6_own_record_reflected_with_rewritten_endpoints(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"mine")
    swapped = _rewrite(_rewrite(record, SENDER, ">I", 1), RECEIVER, ">I", 0)
    with pytest.raises(AuthenticationError):  # the other direction has another key
        pair.initiator.receive_record(swapped)


def test_6_handshake_message_reflected(make_pair: PairFactory) -> None:
    pair = make_pair(handshake=False)
    (first,) = pair.initiator.initiate()
    with pytest.raises(AuthenticationError, match="unexpected endpoint"):
        pair.initiator.receive_record(first)
    other = make_pair(handshake=False)
    (first,) = other.initiator.initiate()
    swapped = _rewrite(_rewrite(first, SENDER, ">I", 1), RECEIVER, ">I", 0)
    with pytest.raises((ProtocolError, AuthenticationError)):  # not the message it expects
        other.initiator.receive_record(swapped)
    assert other.initiator.state is State.ERROR


# 7. Truncation ---------------------------------------------------------------------------


def test_7_stream_cut_before_close_is_truncated(make_pair: PairFactory) -> None:
    pair = make_pair()
    stream = b"".join(bytes(r) for r in pair.initiator.send(b"partial output"))
    assert pair.responder.receive_data(stream) == [Message(0, b"partial output")]
    with pytest.raises(TruncatedError, match="before the peer's authenticated close"):
        pair.responder.receive_eof()


def test_7_close_in_the_middle_of_a_message_is_truncated(make_pair: PairFactory) -> None:
    pair = make_pair()
    records = pair.initiator.send(os.urandom(1 << 21))
    pair.responder.receive_record(records[0])
    # an attacker cannot forge a close; the sender closing mid-message is reported
    (close,) = pair.initiator.close()
    with pytest.raises(TruncatedError):
        pair.responder.receive_record(close)


# 8. Bit flips ------------------------------------------------------------------------------


def test_8_every_single_bit_flip_is_rejected(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    (record,) = pair.initiator.send(b"bit flips everywhere")
    for bit in range(len(record) * 8):
        flipped = bytearray(record)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises((ProtocolError, AuthenticationError)):
            pair.responder.receive_record(bytes(flipped))
    assert pair.responder.rejected == len(record) * 8
    assert pair.responder.receive_record(record) == [Message(0, b"bit flips everywhere")]


def test_8_bit_flips_in_a_stream(make_pair: PairFactory) -> None:
    for offset in (0, 3, LENGTH + 3, HEADER_SIZE + 2, -1):
        pair = make_pair()
        (record,) = pair.initiator.send(b"stream record")
        flipped = bytearray(record)
        flipped[offset] ^= 0x04
        with pytest.raises((ProtocolError, AuthenticationError)):
            # a longer length makes the reader wait; the end of stream then reports it
            pair.responder.receive_data(bytes(flipped))
            pair.responder.receive_eof()


# 9. Oversize length --------------------------------------------------------------------------


def test_9_oversize_length_rejected_before_allocation(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"x")
    huge = _rewrite(record, LENGTH, ">I", 2**32 - 1)
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum"):
        pair.responder.receive_data(huge[:HEADER_SIZE])  # the header alone is enough


def test_9_oversize_frame_rejected_by_the_stream_framing() -> None:
    decoder = FrameDecoder(max_frame=1 << 20)
    decoder.feed(struct.pack(">I", 2**32 - 1))
    with pytest.raises(RemoteProtocolError, match="exceeds the maximum"):
        decoder.next_frame()
    assert decoder.buffered == 4


# 11. Downgrade -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["service", "session", "endpoints"],
)
def test_11_prologue_mismatch_fails_the_handshake(make_pair: PairFactory, change: str) -> None:
    base = Binding(os.urandom(16), 0, 1, "test")
    other = {
        "service": Binding(base.session, 0, 1, "test-v0"),
        "session": Binding(os.urandom(16), 0, 1, "test"),
        "endpoints": Binding(base.session, 1, 0, "test"),
    }[change]
    pair = make_pair(session=base.session, responder_binding=other, handshake=False)
    with pytest.raises((AuthenticationError, RemoteProtocolError)):
        pair.handshake()


@pytest.mark.parametrize(
    "responder_protocol",
    ["Noise_KK_25519_ChaChaPoly_SHA256", "Noise_KK_25519_AESGCM_BLAKE2s", "Noise_IK_25519_AESGCM_SHA256"],
)
def test_11_cipher_or_pattern_downgrade_fails(responder_protocol: str) -> None:
    k0, k1 = generate_keypair(), generate_keypair()
    binding = Binding(os.urandom(16), 0, 1, "test")
    init = SecureChannel(role=Role.INITIATOR, binding=binding, static_key=k0, remote_static=public_bytes(k1))
    resp = SecureChannel(
        role=Role.RESPONDER,
        binding=binding,
        static_key=k1,
        remote_static=public_bytes(k0) if "KK" in responder_protocol else None,
        protocol=responder_protocol,
    )
    (first,) = init.initiate()
    with pytest.raises(AuthenticationError):
        resp.receive_record(first)
        for record in resp.records_to_send():
            init.receive_record(record)


def test_11_other_record_version_rejected(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"v1")
    old = bytearray(record)
    old[0] = 0
    with pytest.raises(RemoteProtocolError, match="version"):
        pair.responder.receive_record(bytes(old))


def test_11_and_15_no_plaintext_on_the_wire(make_pair: PairFactory) -> None:
    pair = make_pair()
    secret = b"cat /home/alice/.ssh/id_ed25519 # secret command"
    trace = b"".join(bytes(r) for r in pair.initiator.send(secret) + pair.responder.send(secret * 3))
    assert secret not in trace
    assert b"secret" not in trace


# 12. Counter near exhaustion ---------------------------------------------------------------------


def test_12_rekey_then_hard_stop(make_pair: PairFactory) -> None:
    limits = Limits(rekey_shift=2, max_counter=10)  # rekey every 4 records, stop after 11
    pair = make_pair(limits=limits)
    records = [pair.initiator.send(f"r{i}".encode(), 3)[0] for i in range(11)]
    with pytest.raises(LocalProtocolError, match="exhausted"):
        pair.initiator.send(b"one too many", 3)
    delivered = [e for r in records for e in pair.responder.receive_record(r)]
    assert [m.data for m in delivered if isinstance(m, Message)] == [f"r{i}".encode() for i in range(11)]
    # the key really changed at counter 4: it is REKEY(k0), not k0 (Noise §11.3)
    (send_key, _) = _transport_keys(pair)
    k0 = channel_key(HASHES["SHA256"], send_key, 3)
    k1 = rekey_bytes(AESGCM_FUNCTIONS, k0)
    rec4 = records[4]
    aad, body = bytes(rec4[:HEADER_SIZE]), bytes(rec4[HEADER_SIZE:])
    nonce = AESGCM_FUNCTIONS.nonce(4)
    assert AESGCM_FUNCTIONS.make(k1).decrypt(nonce, body, aad) == b"r4"
    with pytest.raises(InvalidTag):
        AESGCM_FUNCTIONS.make(k0).decrypt(nonce, body, aad)


def _transport_keys(pair: object) -> tuple[bytes, bytes]:
    # Recompute from the private test hooks: the Sealer keeps the direction key.
    sealer = pair.initiator._sealer  # type: ignore[attr-defined]
    opener = pair.initiator._opener  # type: ignore[attr-defined]
    return sealer._key, opener._key


def test_12_receiver_refuses_counter_beyond_limit(make_pair: PairFactory) -> None:
    pair = make_pair(limits=Limits(rekey_shift=2, max_counter=10))
    (record,) = pair.initiator.send(b"x")
    beyond = _rewrite(record, COUNTER, ">Q", 11)
    with pytest.raises(RemoteProtocolError, match="beyond the limit"):
        pair.responder.receive_record(beyond)


def test_12_default_limits_follow_noise() -> None:
    limits = Limits()
    assert limits.max_counter == 2**64 - 2  # 2**64-1 is reserved (Noise §5.1)
    assert limits.rekey_shift == 30
    with pytest.raises(LocalProtocolError):
        Limits(max_counter=2**64 - 1)


def test_12_counter_far_ahead_does_not_derive_keys_forever(make_pair: PairFactory) -> None:
    pair = make_pair()
    (record,) = pair.initiator.send(b"x")
    far = _rewrite(record, COUNTER, ">Q", 2**63)
    with pytest.raises(RemoteProtocolError, match="too far ahead"):
        pair.responder.receive_record(far)


# 13. Invalid or low-order public keys ---------------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_13_low_order_ephemeral_in_handshake(make_pair: PairFactory, point: bytes) -> None:
    pair = make_pair(handshake=False)
    (first,) = pair.initiator.initiate()
    evil = bytearray(first)
    evil[HEADER_SIZE : HEADER_SIZE + 32] = point
    with pytest.raises(AuthenticationError):
        pair.responder.receive_record(bytes(evil))
    assert pair.responder.state is State.ERROR


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_13_low_order_static_key(point: bytes) -> None:
    channel = SecureChannel(
        role=Role.INITIATOR,
        binding=Binding(os.urandom(16), 0, 1, "x"),
        static_key=generate_keypair(),
        remote_static=point,
    )
    with pytest.raises(AuthenticationError):
        channel.initiate()


def test_header_struct_is_44_bytes() -> None:
    assert HEADER.size == HEADER_SIZE == 44
