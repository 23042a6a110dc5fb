"""Interoperability with an independent implementation (the PyPI noiseprotocol package).

It is unmaintained since 2020 and serves only as a test oracle here: our handshake must
talk to it in both roles with fresh random keys and prologues, beyond the fixed vectors.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization

from mpish.wire.noise import HandshakeState, generate_keypair, public_bytes

noise_connection = pytest.importorskip("noise.connection")


def _raw_private(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


@pytest.mark.parametrize("pattern", ["KK", "IK", "XX"])
@pytest.mark.parametrize("suite", ["AESGCM_SHA256", "ChaChaPoly_BLAKE2s", "AESGCM_BLAKE2b"])
@pytest.mark.parametrize("we_initiate", [True, False])
def test_interop_with_noiseprotocol(pattern: str, suite: str, we_initiate: bool) -> None:
    name = f"Noise_{pattern}_25519_{suite}"
    prologue = os.urandom(40)
    ours, theirs = generate_keypair(), generate_keypair()
    knows_remote = pattern == "KK" or (pattern == "IK" and we_initiate)
    hs = HandshakeState(
        name,
        initiator=we_initiate,
        prologue=prologue,
        s=ours,
        rs=public_bytes(theirs) if knows_remote else None,
    )
    other = noise_connection.NoiseConnection.from_name(name.encode())
    if we_initiate:
        other.set_as_responder()
    else:
        other.set_as_initiator()
    other.set_prologue(prologue)
    other.set_keypair_from_private_bytes(noise_connection.Keypair.STATIC, _raw_private(theirs))
    if pattern == "KK" or (pattern == "IK" and not we_initiate):
        other.set_keypair_from_public_bytes(noise_connection.Keypair.REMOTE_STATIC, public_bytes(ours))
    other.start_handshake()
    payload = os.urandom(17)
    while not hs.complete:
        if hs.is_my_turn():
            other.read_message(hs.write_message(b""))
        else:
            assert hs.read_message(other.write_message(b"")) == b""
    assert other.handshake_finished
    assert hs.handshake_hash == other.get_handshake_hash()
    assert hs.remote_static == public_bytes(theirs)
    send, recv = hs.split()
    assert other.decrypt(send.encrypt_with_ad(b"", payload)) == payload
    assert recv.decrypt_with_ad(b"", other.encrypt(payload)) == payload
