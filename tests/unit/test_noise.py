"""The Noise layer's edges: misuse, failures, rekey, name parsing."""

from __future__ import annotations

import os

import pytest

from mpish.wire.errors import AuthenticationError, LocalProtocolError
from mpish.wire.noise import (
    AESGCM_FUNCTIONS,
    MAX_NONCE,
    CipherState,
    HandshakeState,
    ProtocolName,
    generate_keypair,
    public_bytes,
)


def _kk_pair() -> tuple[HandshakeState, HandshakeState]:
    a, b = generate_keypair(), generate_keypair()
    init = HandshakeState("Noise_KK_25519_AESGCM_SHA256", initiator=True, s=a, rs=public_bytes(b))
    resp = HandshakeState("Noise_KK_25519_AESGCM_SHA256", initiator=False, s=b, rs=public_bytes(a))
    return init, resp


@pytest.mark.parametrize(
    "name",
    [
        "Noise_NK_25519_AESGCM_SHA256",
        "Noise_KK_448_AESGCM_SHA256",
        "Noise_KK_25519_AES256_SHA256",
        "Noise_KK_25519_AESGCM_MD5",
        "Noise_KK_25519_AESGCM",
        "noise_KK_25519_AESGCM_SHA256",
    ],
)
def test_unsupported_protocol_names(name: str) -> None:
    with pytest.raises(LocalProtocolError, match="unsupported"):
        ProtocolName.parse(name)


def test_protocol_name_round_trip() -> None:
    assert ProtocolName.parse("Noise_XX_25519_ChaChaPoly_BLAKE2b").name == "Noise_XX_25519_ChaChaPoly_BLAKE2b"


def test_missing_keys_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError, match="this side's static key"):
        HandshakeState("Noise_KK_25519_AESGCM_SHA256", initiator=True, rs=bytes(32))
    with pytest.raises(LocalProtocolError, match="peer's static public key"):
        HandshakeState("Noise_KK_25519_AESGCM_SHA256", initiator=True, s=generate_keypair())
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        HandshakeState("Noise_IK_25519_AESGCM_SHA256", initiator=True, s=generate_keypair(), rs=b"short")
    with pytest.raises(LocalProtocolError, match="static key"):
        HandshakeState("Noise_XX_25519_AESGCM_SHA256", initiator=True)


def test_turns_are_enforced() -> None:
    init, resp = _kk_pair()
    with pytest.raises(LocalProtocolError, match="turn"):
        resp.write_message()
    with pytest.raises(LocalProtocolError, match="no handshake message"):
        init.read_message(b"x" * 64)
    resp.read_message(init.write_message())
    init.read_message(resp.write_message())
    assert init.complete and resp.complete
    with pytest.raises(LocalProtocolError):
        init.write_message()
    with pytest.raises(LocalProtocolError):
        resp.read_message(b"")


def test_transport_keys_before_completion() -> None:
    init, _ = _kk_pair()
    with pytest.raises(LocalProtocolError, match="not complete"):
        init.transport_keys()


@pytest.mark.parametrize("cut", [0, 10, 32, 47])
def test_short_handshake_messages_fail_authentication(cut: int) -> None:
    init, resp = _kk_pair()
    message = init.write_message()
    with pytest.raises(AuthenticationError):
        resp.read_message(message[:cut])


def test_oversize_handshake_message() -> None:
    init, resp = _kk_pair()
    with pytest.raises(LocalProtocolError, match="65535"):
        init.write_message(bytes(70000))
    with pytest.raises(AuthenticationError, match="too long"):
        resp.read_message(bytes(70000))


def test_xx_short_static_fails() -> None:
    a, b = generate_keypair(), generate_keypair()
    init = HandshakeState("Noise_XX_25519_AESGCM_SHA256", initiator=True, s=a)
    resp = HandshakeState("Noise_XX_25519_AESGCM_SHA256", initiator=False, s=b)
    resp.read_message(init.write_message())
    message2 = resp.write_message()
    with pytest.raises(AuthenticationError):
        init.read_message(message2[:40])


def test_cipher_state_without_key_is_identity_and_rekey_needs_key() -> None:
    state = CipherState(AESGCM_FUNCTIONS)
    assert not state.has_key()
    assert state.encrypt_with_ad(b"ad", b"plain") == b"plain"
    assert state.decrypt_with_ad(b"ad", b"plain") == b"plain"
    with pytest.raises(LocalProtocolError):
        state.rekey()


def test_cipher_state_nonce_exhaustion() -> None:
    sender = CipherState(AESGCM_FUNCTIONS, os.urandom(32))
    receiver = CipherState(AESGCM_FUNCTIONS, sender.key)
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    with pytest.raises(LocalProtocolError, match="exhausted"):
        sender.encrypt_with_ad(b"", b"one more")
    with pytest.raises(LocalProtocolError, match="exhausted"):
        receiver.decrypt_with_ad(b"", b"x" * 16)


def test_cipher_state_rekey_changes_key_keeps_nonce() -> None:
    a = CipherState(AESGCM_FUNCTIONS, os.urandom(32))
    b = CipherState(AESGCM_FUNCTIONS, a.key)
    a.encrypt_with_ad(b"", b"x")
    old = a.key
    a.rekey()
    assert a.key != old and a.n == 1
    b.set_nonce(1)
    with pytest.raises(AuthenticationError):
        b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", b"after rekey"))
    b.rekey()
    b.set_nonce(2)
    assert b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", b"both rekeyed")) == b"both rekeyed"


def test_decrypt_failure_does_not_advance_nonce() -> None:
    a = CipherState(AESGCM_FUNCTIONS, os.urandom(32))
    b = CipherState(AESGCM_FUNCTIONS, a.key)
    good = a.encrypt_with_ad(b"", b"good")
    with pytest.raises(AuthenticationError):
        b.decrypt_with_ad(b"", b"\0" * len(good))
    assert b.n == 0
    assert b.decrypt_with_ad(b"", good) == b"good"


def test_state_table_refuses_undefined_transitions() -> None:
    from mpish.wire.state import Input, State, next_state

    assert next_state(State.OPEN, Input.FAIL) is State.ERROR
    with pytest.raises(LocalProtocolError, match="cannot send_close in state idle"):
        next_state(State.IDLE, Input.SEND_CLOSE)


def test_remote_error_carries_the_remote_traceback() -> None:
    from mpish.wire.errors import RemoteError

    error = RemoteError("boom", remote_type="ValueError", remote_traceback="Traceback...\nValueError: boom\n")
    assert error.remote_type == "ValueError"
    assert str(error).endswith("--- remote traceback ---\nTraceback...\nValueError: boom")
    assert str(RemoteError("plain")) == "plain"
