"""The record keys of a secure communicator, derived from its secret (no handshake per pair).

Theory of operation
-------------------
A secure communicator has a 32-byte **secret**, known to its ranks only, and a 16-byte
**id**, fresh per communicator (setup.py: rank 0 draws both at random for
``secure(comm)`` and hands the secret to every rank through authenticated handshakes
along a tree; a derived communicator gets both from its parent, below). The key that
seals the records from rank ``s`` to rank ``r`` on lane ``l`` (``p2p`` or ``coll``) is::

    key(s, r, l) = HKDF(secret, "mpish.comm pair" || id || len(l) || l || s || r)

with the suite's HKDF (noise.py: the secret as chaining key, so HMAC keyed by a uniform
secret, a PRF) and ``s``, ``r`` as 4-byte integers. The record layer derives one key from
it for every channel (MPI tag) of the lane, with one counter (wire/shared.py: no state per
tag). So:

- Distinct per pair, direction, lane and communicator: the input differs in ``s``,
  ``r``, ``l`` or ``id`` (fixed-size or length-prefixed fields: unambiguous), and a
  PRF maps distinct inputs to independent keys. Exactly one rank seals with a given
  key (rank ``s``, on lane ``l`` of that communicator), and its counters never repeat
  (one counter for every tag of the lane), so no (key, nonce) pair is used twice.
- Bound to the header: every record also names its session (``H(id || lane)``),
  sender and receiver in its authenticated header (record.py), so a record moved to
  another pair, direction, lane or communicator fails both the header check and the tag.
- Who can derive which key: every rank of the communicator can derive every pair's
  keys, so a rank could forge records "from" another rank. This is the trust unit the
  design accepts: every rank of a job holds a key that every rank trusts (its own or
  one in its ``authorized_keys``; setup.py checks every key on every rank),
  and with such a key any of them could already have run a handshake under any rank
  number (ranks are not separate principals; a rank that misbehaves is the user's own
  program). What an outsider without an authorized key cannot do is learn the secret:
  it crosses the wire only inside Noise KK handshakes between authorized keys.
- Nothing is computed per peer at setup: a pair's Sealer and Opener are derived when the
  first record to or from that peer is sealed or opened (lane.py), so the setup of
  one rank costs the same at any world size.

Derived communicators (``Dup``, ``Split``...) need no handshake: their secret and id are
``HKDF(parent secret, "mpish.comm child" || context)``, where the context is agreed by
construction on every member rank (the parent's count of derivations so far, the kind
of call, the color and the parent rank of the new communicator's rank 0, which is
distinct for disjoint groups). Nobody outside the parent learns the child's secret, and
two children of one parent never share an id.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from ..wire.errors import AuthenticationError, LocalProtocolError
from ..wire.noise import ProtocolName
from ..wire.record import SESSION_SIZE
from ..wire.shared import SharedOpener, SharedSealer

SECRET_SIZE = 32
LANES = (b"p2p", b"coll")
_PAIR = struct.Struct(">II")


@dataclass(frozen=True)
class CommSecret:
    """What a rank knows of its communicator's keys: secret, id, its rank and the size."""

    protocol: ProtocolName
    secret: bytes = field(repr=False)
    ident: bytes
    rank: int
    size: int

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_SIZE or len(self.ident) != SESSION_SIZE:
            raise LocalProtocolError("a communicator secret is 32 bytes and its id 16")
        if not 0 <= self.rank < self.size:
            raise LocalProtocolError(f"rank {self.rank} outside a communicator of {self.size}")

    def key(self, lane: bytes, sender: int, receiver: int) -> bytes:
        """The first key of the records from ``sender`` to ``receiver`` on ``lane``."""
        if not (0 <= sender < self.size and 0 <= receiver < self.size):
            raise LocalProtocolError(f"no pair ({sender}, {receiver}) in a communicator of {self.size}")
        info = b"mpish.comm pair" + self.ident + bytes([len(lane)]) + lane + _PAIR.pack(sender, receiver)
        return self.protocol.hash.hkdf(self.secret, info, 1)[0][:32]

    def session(self, lane: bytes) -> bytes:
        """The session id of a lane: in every record header, the same in both directions."""
        return hashlib.sha256(b"mpish.comm session " + self.ident + b"|" + lane).digest()[:SESSION_SIZE]

    def sealer(self, lane: bytes, peer: int) -> SharedSealer:
        """Seals this rank's records to ``peer`` on ``lane``."""
        key = self.key(lane, self.rank, peer)
        return SharedSealer(
            self.protocol.cipher, self.protocol.hash, key, self.session(lane), self.rank, peer
        )

    def opener(self, lane: bytes, peer: int) -> SharedOpener:
        """Opens the records of ``peer`` to this rank on ``lane``."""
        key = self.key(lane, peer, self.rank)
        return SharedOpener(
            self.protocol.cipher, self.protocol.hash, key, self.session(lane), peer, self.rank
        )

    def child(self, context: bytes, rank: int, size: int) -> CommSecret:
        """The secret of a communicator derived from this one (see the module doc)."""
        secret, ident = self.protocol.hash.hkdf(self.secret, b"mpish.comm child" + context, 2)
        return CommSecret(self.protocol, secret[:SECRET_SIZE], ident[:SESSION_SIZE], rank, size)


@dataclass(frozen=True)
class InterSecret(CommSecret):
    """The keys of an intercommunicator (intercomm.py): ``rank`` and ``size`` number both
    groups in one sequence (the low group first), and a peer, a rank of the other group, is
    ``remote_offset + peer`` in it. So each direction of each pair has its own key, and a
    record reflected back to its sender names the wrong sender and receiver."""

    remote_offset: int = 0

    def sealer(self, lane: bytes, peer: int) -> SharedSealer:
        me, them = self.rank, self.remote_offset + peer
        key = self.key(lane, me, them)
        return SharedSealer(self.protocol.cipher, self.protocol.hash, key, self.session(lane), me, them)

    def opener(self, lane: bytes, peer: int) -> SharedOpener:
        me, them = self.rank, self.remote_offset + peer
        key = self.key(lane, them, me)
        return SharedOpener(self.protocol.cipher, self.protocol.hash, key, self.session(lane), them, me)

    def child(self, context: bytes, rank: int = 0, size: int = 0) -> InterSecret:
        """The keys of a Dup of the intercommunicator: same numbering (``rank``, ``size`` unused)."""
        base = CommSecret.child(self, context, self.rank, self.size)
        return InterSecret(self.protocol, base.secret, base.ident, self.rank, self.size, self.remote_offset)


# -- the key reports of the setup (setup.py, step 3): which public keys the job holds

KEY_REPORT = struct.Struct(">BI")  # status (1: keys follow, else none), number of keys
KEY_ENTRY = struct.Struct(">32sI")  # a public key, the least rank known to hold it
KEY_MAC = 32


def key_report_size(size: int) -> int:
    """The largest key report in a communicator of ``size`` (at most one key per rank)."""
    return KEY_REPORT.size + KEY_ENTRY.size * size + KEY_MAC


def _report_mac(
    protocol: ProtocolName, secret: bytes, job: bytes, sender: int, receiver: int, body: bytes
) -> bytes:
    key = protocol.hash.hkdf(secret, b"mpish.comm setup keys" + job + _PAIR.pack(sender, receiver), 1)[0][:32]
    return protocol.hash.hmac(key, body)[:KEY_MAC]


def seal_keys(
    protocol: ProtocolName,
    secret: bytes | None,
    job: bytes,
    sender: int,
    receiver: int,
    keys: dict[bytes, int] | None,
) -> bytes:
    """A key report from ``sender`` to ``receiver``: ``keys`` (key -> rank), MACed with a key of
    the job secret for this ordered pair; without a secret or keys, an empty report saying so."""
    if secret is None or keys is None:
        return KEY_REPORT.pack(0, 0) + bytes(KEY_MAC)
    body = KEY_REPORT.pack(1, len(keys)) + b"".join(KEY_ENTRY.pack(k, r) for k, r in sorted(keys.items()))
    return body + _report_mac(protocol, secret, job, sender, receiver, body)


def open_keys(
    protocol: ProtocolName, secret: bytes, job: bytes, sender: int, receiver: int, report: bytes, size: int
) -> dict[bytes, int]:
    """The keys of a report from ``sender``; AuthenticationError if it is not one (see :func:`seal_keys`)."""
    if len(report) < KEY_REPORT.size + KEY_MAC:
        raise AuthenticationError(f"a malformed key report from rank {sender}")
    status, count = KEY_REPORT.unpack_from(report)
    body, mac = report[:-KEY_MAC], report[-KEY_MAC:]
    if status != 1:
        raise AuthenticationError(f"rank {sender} sent no key report (its setup failed)")
    if count > size or len(body) != KEY_REPORT.size + KEY_ENTRY.size * count:
        raise AuthenticationError(f"a malformed key report from rank {sender}")
    if not hmac.compare_digest(mac, _report_mac(protocol, secret, job, sender, receiver, body)):
        raise AuthenticationError(f"a forged key report from rank {sender}")
    keys: dict[bytes, int] = {}
    for key, rank in KEY_ENTRY.iter_unpack(body[KEY_REPORT.size :]):
        keys[key] = min(rank, keys.get(key, rank))
    return keys
