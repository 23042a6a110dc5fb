"""The Noise Protocol Framework, revision 34, on pyca/cryptography primitives.

Theory of operation
-------------------
This module follows the spec's own objects one to one, so that a reader can hold
the spec beside it: the crypto functions (§4), ``CipherState`` (§5.1),
``SymmetricState`` (§5.2) and ``HandshakeState`` (§5.3). It supports the DH
function 25519, the ciphers AESGCM and ChaChaPoly, the hashes SHA256, SHA512,
BLAKE2s and BLAKE2b, and the handshake patterns NN, KK, IK and XX (§7.4, §7.5).

It is pure: no I/O, no clock, no global state. Ephemeral keys come from
``cryptography``'s generator unless the caller injects them, which the test vectors
do to replay a published handshake byte for byte.

Every failure of a tag, a DH or a malformed handshake message raises
:class:`~mpish.wire.errors.AuthenticationError` (deliberately opaque); misuse of the
API raises :class:`~mpish.wire.errors.LocalProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .errors import AuthenticationError, LocalProtocolError

DHLEN = 32
TAGLEN = 16
MAX_NONCE = 2**64 - 1  # §5.1: this nonce value is reserved; reaching it is an error
MAX_MESSAGE = 65535  # §3: every Noise message is at most 65535 bytes


# --- §4.1 DH functions -------------------------------------------------------------


def generate_keypair() -> X25519PrivateKey:
    """GENERATE_KEYPAIR() for 25519."""
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32-byte public key of ``key``."""
    return key.public_key().public_bytes_raw()


def dh(private: X25519PrivateKey, public: bytes) -> bytes:
    """DH(key_pair, public_key) for 25519.

    A low-order or otherwise invalid public key gives an all-zero shared secret,
    which ``cryptography`` refuses; that is an authentication failure (THREAT-MODEL
    attack 13), never a silent zero key.
    """
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as exc:
        raise AuthenticationError("invalid X25519 public key") from exc


# --- §4.2 Cipher functions -----------------------------------------------------------


Buffer = bytes | bytearray | memoryview


class AEAD(Protocol):
    """The shape shared by AESGCM and ChaCha20Poly1305 in ``cryptography``."""

    def encrypt(self, nonce: bytes, data: Buffer, associated_data: Buffer | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: Buffer, associated_data: Buffer | None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CipherFunctions:
    """One of the Noise cipher functions: its name, its AEAD and its nonce encoding."""

    name: str
    make: Callable[[bytes], AEAD]
    nonce_format: struct.Struct  # 4 zero bytes then the 64-bit counter (§12.3, §12.4)

    def nonce(self, n: int) -> bytes:
        """The 96-bit nonce for counter ``n``."""
        return self.nonce_format.pack(0, n)


AESGCM_FUNCTIONS = CipherFunctions("AESGCM", AESGCM, struct.Struct(">IQ"))  # big-endian
CHACHAPOLY_FUNCTIONS = CipherFunctions("ChaChaPoly", ChaCha20Poly1305, struct.Struct("<IQ"))
CIPHERS = {c.name: c for c in (AESGCM_FUNCTIONS, CHACHAPOLY_FUNCTIONS)}


# --- §4.3 Hash functions -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HashFunctions:
    """One of the Noise hash functions, with HMAC and HKDF built on it (§4.3)."""

    name: str
    hashlen: int
    constructor: Callable[..., typing.Any]

    def hash(self, data: bytes) -> bytes:
        digest: bytes = self.constructor(data).digest()
        return digest

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.constructor).digest()

    def hkdf(self, chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
        """HKDF(chaining_key, input_key_material, num_outputs) as §4.3 defines it."""
        temp_key = self.hmac(chaining_key, ikm)
        out: list[bytes] = []
        previous = b""
        for i in range(1, outputs + 1):
            previous = self.hmac(temp_key, previous + bytes([i]))
            out.append(previous)
        return out


HASHES = {
    h.name: h
    for h in (
        HashFunctions("SHA256", 32, hashlib.sha256),
        HashFunctions("SHA512", 64, hashlib.sha512),
        HashFunctions("BLAKE2s", 32, hashlib.blake2s),
        HashFunctions("BLAKE2b", 64, hashlib.blake2b),
    )
}


# --- §7 Handshake patterns -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """A pattern: pre-message tokens of each side, then the message token lists."""

    name: str
    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]  # messages[0] is sent by the initiator


PATTERNS = {
    p.name: p
    for p in (
        HandshakePattern("NN", (), (), (("e",), ("e", "ee"))),
        HandshakePattern("KK", ("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
        HandshakePattern("IK", (), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
        HandshakePattern("XX", (), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    )
}


@dataclass(frozen=True, slots=True)
class ProtocolName:
    """A parsed Noise protocol name such as ``Noise_KK_25519_AESGCM_SHA256``."""

    pattern: HandshakePattern
    cipher: CipherFunctions
    hash: HashFunctions

    @property
    def name(self) -> str:
        return f"Noise_{self.pattern.name}_25519_{self.cipher.name}_{self.hash.name}"

    @classmethod
    def parse(cls, name: str) -> ProtocolName:
        parts = name.split("_")
        if len(parts) != 5 or parts[0] != "Noise" or parts[2] != "25519":
            raise LocalProtocolError(f"unsupported Noise protocol name {name!r}")
        try:
            return cls(PATTERNS[parts[1]], CIPHERS[parts[3]], HASHES[parts[4]])
        except KeyError:
            raise LocalProtocolError(f"unsupported Noise protocol name {name!r}") from None


# --- §5.1 CipherState ----------------------------------------------------------------


class CipherState:
    """A key (or none) and a nonce counter (§5.1)."""

    __slots__ = ("_aead", "functions", "key", "n")

    def __init__(self, functions: CipherFunctions, key: bytes | None = None) -> None:
        self.functions = functions
        self.key: bytes | None = None
        self._aead: AEAD | None = None
        self.n = 0
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        self.key = key
        self._aead = None if key is None else self.functions.make(key)
        self.n = 0

    def has_key(self) -> bool:
        return self.key is not None

    def set_nonce(self, n: int) -> None:
        self.n = n

    def _next_nonce(self) -> bytes:
        if self.n >= MAX_NONCE:
            raise LocalProtocolError("Noise nonce exhausted; the session must be renewed")
        nonce = self.functions.nonce(self.n)
        self.n += 1
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self.n >= MAX_NONCE:
            raise LocalProtocolError("Noise nonce exhausted; the session must be renewed")
        try:
            plaintext = self._aead.decrypt(self.functions.nonce(self.n), ciphertext, ad)
        except InvalidTag:
            raise AuthenticationError("authentication failed") from None
        self.n += 1  # §5.1: the nonce advances only on success
        return plaintext

    def rekey(self) -> None:
        """REKEY(k) (§4.2, §11.3): the first 32 bytes of ENCRYPT(k, maxnonce, "", zeros)."""
        if self._aead is None:
            raise LocalProtocolError("cannot rekey a CipherState without a key")
        n = self.n
        new_key = self._aead.encrypt(self.functions.nonce(MAX_NONCE), bytes(32), b"")[:32]
        self.initialize_key(new_key)
        self.n = n


def rekey_bytes(functions: CipherFunctions, key: bytes) -> bytes:
    """REKEY(k) on a raw key, for record layers that manage their own nonces."""
    return functions.make(key).encrypt(functions.nonce(MAX_NONCE), bytes(32), b"")[:32]


# --- §5.2 SymmetricState -------------------------------------------------------------


class SymmetricState:
    """The chaining key, the handshake hash and a CipherState (§5.2)."""

    def __init__(self, protocol: ProtocolName) -> None:
        self.hashes = protocol.hash
        name = protocol.name.encode("ascii")
        if len(name) <= self.hashes.hashlen:
            self.h = name.ljust(self.hashes.hashlen, b"\0")
        else:
            self.h = self.hashes.hash(name)
        self.ck = self.h
        self.cipher = CipherState(protocol.cipher)

    def _truncate(self, key: bytes) -> bytes:
        return key[:32]  # §5.2: with HASHLEN 64, keys are the first 32 bytes

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = self.hashes.hkdf(self.ck, ikm, 2)
        self.cipher.initialize_key(self._truncate(temp_k))

    def mix_hash(self, data: bytes) -> None:
        self.h = self.hashes.hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """The two transport keys: initiator-to-responder, then responder-to-initiator."""
        k1, k2 = self.hashes.hkdf(self.ck, b"", 2)
        return self._truncate(k1), self._truncate(k2)


# --- §5.3 HandshakeState -------------------------------------------------------------


class HandshakeState:
    """One side of a Noise handshake (§5.3).

    ``s`` is this side's static key, ``rs`` the peer's static public key where the
    pattern needs it in advance (KK: both; IK: the initiator knows the responder's).
    ``e`` injects an ephemeral key (test vectors only). After the last message,
    :attr:`complete` is true and :meth:`transport_keys` gives the split.
    """

    def __init__(
        self,
        protocol: ProtocolName | str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: X25519PrivateKey | None = None,
        rs: bytes | None = None,
        e: X25519PrivateKey | None = None,
    ) -> None:
        if isinstance(protocol, str):
            protocol = ProtocolName.parse(protocol)
        self.protocol = protocol
        self.initiator = initiator
        self.s = s
        self.e = e
        self.rs = rs
        self.re: bytes | None = None
        self.symmetric = SymmetricState(protocol)
        self._index = 0
        self._keys: tuple[bytes, bytes] | None = None
        self.symmetric.mix_hash(prologue)
        pattern = protocol.pattern
        # §7.3: pre-message public keys are hashed, the initiator's first.
        for side_is_initiator, tokens in ((True, pattern.initiator_pre), (False, pattern.responder_pre)):
            for token in tokens:
                if token != "s":
                    raise LocalProtocolError(f"unsupported pre-message token {token!r}")
                mine = side_is_initiator == initiator
                if mine:
                    if s is None:
                        raise LocalProtocolError(f"{pattern.name} needs this side's static key")
                    self.symmetric.mix_hash(public_bytes(s))
                else:
                    if rs is None:
                        raise LocalProtocolError(f"{pattern.name} needs the peer's static public key")
                    if len(rs) != DHLEN:
                        raise LocalProtocolError("a static public key is 32 bytes")
                    self.symmetric.mix_hash(rs)
        needs_s = any("s" in m for i, m in enumerate(pattern.messages) if (i % 2 == 0) == initiator)
        if needs_s and s is None:
            raise LocalProtocolError(f"{pattern.name} needs this side's static key")

    # -- queries

    @property
    def complete(self) -> bool:
        return self._keys is not None

    @property
    def handshake_hash(self) -> bytes:
        """h, which both sides share at the end: the channel binding value (§11.2)."""
        return self.symmetric.h

    @property
    def remote_static(self) -> bytes | None:
        return self.rs

    def is_my_turn(self) -> bool:
        """True when the next handshake message is ours to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    def transport_keys(self) -> tuple[bytes, bytes]:
        """(send key, receive key) for this side, after the handshake."""
        if self._keys is None:
            raise LocalProtocolError("the handshake is not complete")
        k1, k2 = self._keys
        return (k1, k2) if self.initiator else (k2, k1)

    def split(self) -> tuple[CipherState, CipherState]:
        """(send CipherState, receive CipherState) as §5.2 Split() gives them."""
        send, receive = self.transport_keys()
        cipher = self.protocol.cipher
        return CipherState(cipher, send), CipherState(cipher, receive)

    # -- the tokens

    def _dh_token(self, token: str) -> None:
        mine, theirs = token[0], token[1]  # as seen by the initiator: "es" = e_init, s_resp
        if not self.initiator:
            mine, theirs = theirs, mine
        local = self.e if mine == "e" else self.s
        remote = self.re if theirs == "e" else self.rs
        if local is None or remote is None:
            raise LocalProtocolError(f"token {token!r} needs a key this side does not have")
        self.symmetric.mix_key(dh(local, remote))

    def _advance(self) -> None:
        self._index += 1
        if self._index == len(self.protocol.pattern.messages):
            self._keys = self.symmetric.split()

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage(payload): the next handshake message of this side."""
        if not self.is_my_turn():
            raise LocalProtocolError("it is not this side's turn to write a handshake message")
        out = bytearray()
        for token in self.protocol.pattern.messages[self._index]:
            if token == "e":
                if self.e is None:
                    self.e = generate_keypair()
                epub = public_bytes(self.e)
                out += epub
                self.symmetric.mix_hash(epub)
            elif token == "s":
                assert self.s is not None  # checked in __init__
                out += self.symmetric.encrypt_and_hash(public_bytes(self.s))
            else:
                self._dh_token(token)
        out += self.symmetric.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise LocalProtocolError("handshake message longer than 65535 bytes")
        self._advance()
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage(message): process the peer's next message, return its payload."""
        if self.complete or self.is_my_turn():
            raise LocalProtocolError("no handshake message is expected from the peer now")
        if len(message) > MAX_MESSAGE:
            raise AuthenticationError("handshake message too long")
        view = memoryview(message)
        for token in self.protocol.pattern.messages[self._index]:
            if token == "e":
                if len(view) < DHLEN:
                    raise AuthenticationError("handshake message too short")
                self.re = bytes(view[:DHLEN])
                view = view[DHLEN:]
                self.symmetric.mix_hash(self.re)
            elif token == "s":
                size = DHLEN + (TAGLEN if self.symmetric.cipher.has_key() else 0)
                if len(view) < size:
                    raise AuthenticationError("handshake message too short")
                self.rs = self.symmetric.decrypt_and_hash(bytes(view[:size]))
                view = view[size:]
            else:
                self._dh_token(token)
        if self.symmetric.cipher.has_key() and len(view) < TAGLEN:
            raise AuthenticationError("handshake message too short")
        payload = self.symmetric.decrypt_and_hash(bytes(view))
        self._advance()
        return payload
