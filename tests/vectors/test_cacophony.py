"""Every vector of tests/vectors/cacophony.json, byte for byte.

Each handshake message, each transport message and the final handshake hash must be
exactly the published bytes; both sides are ours, run from the vector's keys.

The vectors are the cacophony project's (public domain: haskell-cryptography/cacophony,
vectors/cacophony.txt, as also carried by the snow crate), the subset for NN, KK, IK and XX
over 25519 without PSK or fallback; the file's "source" field says so too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish.wire.noise import CipherState, HandshakeState

VECTORS_FILE = Path(__file__).with_name("cacophony.json")


def _load() -> list[dict[str, Any]]:
    if not VECTORS_FILE.exists():
        pytest.fail(f"test vectors missing: {VECTORS_FILE}")
    vectors: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]
    return vectors


VECTORS = _load()


def _key(vector: dict[str, Any], name: str) -> X25519PrivateKey | None:
    value = vector.get(name)
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(value)) if value else None


def _bytes(vector: dict[str, Any], name: str) -> bytes | None:
    value = vector.get(name)
    return bytes.fromhex(value) if value else None


def test_all_32_vectors_are_present() -> None:
    names = {v["protocol_name"] for v in VECTORS}
    assert len(VECTORS) == 32
    for pattern in ("NN", "KK", "IK", "XX"):
        assert sum(n.startswith(f"Noise_{pattern}_") for n in names) == 8


@pytest.mark.parametrize("vector", VECTORS, ids=[v["protocol_name"] for v in VECTORS])
def test_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    initiator = HandshakeState(
        vector["protocol_name"],
        initiator=True,
        prologue=_bytes(vector, "init_prologue") or b"",
        s=_key(vector, "init_static"),
        e=_key(vector, "init_ephemeral"),
        rs=_bytes(vector, "init_remote_static"),
    )
    responder = HandshakeState(
        vector["protocol_name"],
        initiator=False,
        prologue=_bytes(vector, "resp_prologue") or b"",
        s=_key(vector, "resp_static"),
        e=_key(vector, "resp_ephemeral"),
        rs=_bytes(vector, "resp_remote_static"),
    )
    transport: dict[str, CipherState] = {}
    handshake_messages = len(initiator.protocol.pattern.messages)
    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        from_initiator = index % 2 == 0
        if index < handshake_messages:
            sender, receiver = (initiator, responder) if from_initiator else (responder, initiator)
            ciphertext = sender.write_message(payload)
            assert ciphertext == expected, f"handshake message {index}"
            assert receiver.read_message(ciphertext) == payload
            if index == handshake_messages - 1:
                assert initiator.complete and responder.complete
                assert initiator.handshake_hash.hex() == vector["handshake_hash"]
                assert responder.handshake_hash == initiator.handshake_hash
                transport["i_send"], transport["i_recv"] = initiator.split()
                transport["r_send"], transport["r_recv"] = responder.split()
        else:
            send, recv = ("i_send", "r_recv") if from_initiator else ("r_send", "i_recv")
            ciphertext = transport[send].encrypt_with_ad(b"", payload)
            assert ciphertext == expected, f"transport message {index}"
            assert transport[recv].decrypt_with_ad(b"", ciphertext) == payload
    assert len(vector["messages"]) > handshake_messages  # transport messages were checked too
