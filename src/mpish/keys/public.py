"""Public keys: the ``mpish-x25519 <base64> [comment]`` line and SHA256 fingerprints.

Keys that are not X25519 points of large order are refused (THREAT-MODEL attack 13):
a low-order key would make every DH output all zero.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ._files import KeyFormatError

KEY_TYPE = "mpish-x25519"
KEY_LEN = 32
MAX_COMMENT_BYTES = 1024


def fingerprint(pub: bytes) -> str:
    """``SHA256:<unpadded base64>``, the fingerprint format of ``ssh-keygen -l``."""
    digest = hashlib.sha256(pub).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def check_comment(comment: str) -> str:
    if any(ch in comment for ch in "\r\n\0") or not comment.isprintable():
        raise KeyFormatError("a key comment must be one line of printable text")
    if len(comment.encode("utf-8")) > MAX_COMMENT_BYTES:
        raise KeyFormatError(f"a key comment is limited to {MAX_COMMENT_BYTES} bytes")
    return comment


def check_public(pub: bytes) -> bytes:
    """``pub`` if it is a usable X25519 public key; KeyFormatError otherwise.

    A low-order point (THREAT-MODEL attack 13) makes any DH output all zero, which
    ``cryptography`` refuses; one throwaway exchange detects every such point.
    """
    if len(pub) != KEY_LEN:
        raise KeyFormatError(f"an {KEY_TYPE} public key is {KEY_LEN} bytes, not {len(pub)}")
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError as exc:
        raise KeyFormatError("invalid X25519 public key (low order)") from exc
    return pub


def format_public_key(pub: bytes, comment: str = "") -> str:
    """One public key line, ``mpish-x25519 <base64> <comment>``, without a newline."""
    check_public(pub)
    check_comment(comment)
    encoded = base64.b64encode(pub).decode("ascii")
    return f"{KEY_TYPE} {encoded} {comment}" if comment else f"{KEY_TYPE} {encoded}"


def decode_key_b64(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError("the key is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:  # one spelling per key only
        raise KeyFormatError("the key is not in canonical base64")
    return check_public(raw)


def parse_public_key(line: str) -> tuple[bytes, str]:
    """``(raw public key, comment)`` from a line ``mpish-x25519 <base64> [comment]``."""
    parts = line.strip().split(maxsplit=2)
    if len(parts) < 2:
        raise KeyFormatError(f"expected '{KEY_TYPE} <base64> [comment]'")
    if parts[0] != KEY_TYPE:
        raise KeyFormatError(f"unsupported key type {parts[0]!r} (expected '{KEY_TYPE}')")
    pub = decode_key_b64(parts[1])
    comment = parts[2] if len(parts) == 3 else ""
    return pub, check_comment(comment)
