"""Setup of a secure communicator (collective): identities, trust check, KK handshakes.

Theory of operation
-------------------
1. The user's communicator is duplicated four times: ``p2p`` (point-to-point records;
   exposed as :attr:`SecureComm.raw` for attack tests), ``p2p_bulk`` (the continuation
   records of messages larger than one record), ``coll`` and ``coll_bulk`` (the same
   for collectives). Secure traffic never mixes with the user's own raw traffic, and
   collectives never match user point-to-point messages.
2. One ``Allgather`` (buffer API) carries, per rank, whether it loaded its key, 16
   random bytes (rank 0's are the job id) and its 32-byte X25519 public key; a rank
   that could not load its key makes every rank raise. Every rank checks every key against
   its trusted set (own key + ``authorized_keys``) BEFORE any handshake. The verdicts
   are summed with one ``Allreduce``, so a rank with an untrusted key makes every rank
   raise :class:`AuthenticationError` naming its fingerprint, instead of hanging.
3. Every pair runs a Noise KK handshake, eagerly, in two ``Alltoall`` rounds of fixed
   128-byte slots (message 1 from the initiator, message 2 back). Each rank initiates
   with the half of its peers that follow it round the ring (:func:`_initiates`), so
   every round costs every rank the same CPU.
   The prologue binds protocol name and version, the job id, the ordered pair and the
   communicator (service ``"mpish.comm:<size>"``). A failed handshake anywhere is
   agreed on with one more ``Allreduce`` and raised on every rank.
4. Each pair's two transport keys are expanded per lane (``p2p``, ``coll``) with the
   suite's HKDF, and each lane has its own session id, so a record moved between the
   point-to-point and collective lanes fails both the session check and the tag.

Setup cost: the handshakes are eager, one KK handshake per pair. ``bench/comm.py``
prints the CPU time of one (both sides): 0.62 ms on the idle 2-core reference machine,
up to 1.3 ms when loaded. So ``secure()`` costs every rank ~0.31 ms x (size - 1) of
CPU, O(size^2) in total: ~10 ms per rank at 32 ranks, ~3 s per rank at 10,000 ranks,
plus two Alltoalls of 128-byte slots (1.3 MB sent per rank per round at 10,000).
Lazy per-pair handshakes are not implemented on purpose: KK needs a round trip before
the first record (THREAT-MODEL: no application data in the first handshake message),
so a lazy first ``Send`` would wait for the receiver to enter a receive call, and the
legal MPI pattern "both ranks Send (eager), then both Recv" would deadlock.
"""

from __future__ import annotations

import secrets
from array import array
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from ..keys import Identity, fingerprint, load_identity, trusted_keys
from ..wire.channel import Binding
from ..wire.errors import AuthenticationError, LocalProtocolError, MpishError
from ..wire.noise import HandshakeState, ProtocolName
from ..wire.record import HEADER_SIZE, Header, RecordType, parse_header
from .communicator import SecureComm
from .lane import Stats

PROTOCOL = "Noise_KK_25519_AESGCM_SHA256"
SERVICE = "mpish.comm"
_SETUP_SLOT = 1 + 16 + 32  # per rank in the first Allgather: loaded flag, random bytes, public key
HANDSHAKE_SLOT = 128  # bytes per pair in the handshake Alltoall (a KK message record is 92)


def _agree(comm: Any, ok: bool) -> int:
    """Number of ranks for which ``ok`` is false (collective)."""
    mine, total = array("i", [0 if ok else 1]), array("i", [0])
    comm.Allreduce([mine, MPI.INT], [total, MPI.INT], op=MPI.SUM)
    return total[0]


def _handshake_slot(header: Header, body: bytes) -> bytes:
    record = header.pack() + body
    if len(record) > HANDSHAKE_SLOT:
        raise LocalProtocolError("handshake message larger than its slot")
    return record.ljust(HANDSHAKE_SLOT, b"\0")


def _read_slot(slot: memoryview, job: bytes, sender: int, receiver: int, index: int) -> bytes:
    header = parse_header(slot)
    if header.type is not RecordType.HANDSHAKE or header.counter != index:
        raise AuthenticationError(f"bad handshake message from rank {sender}")
    if (header.session, header.sender, header.receiver) != (job, sender, receiver):
        raise AuthenticationError(f"handshake message from rank {sender} is bound to another job or pair")
    if HEADER_SIZE + header.length > HANDSHAKE_SLOT:
        raise AuthenticationError(f"oversize handshake message from rank {sender}")
    return bytes(slot[HEADER_SIZE : HEADER_SIZE + header.length])


def _initiates(rank: int, peer: int, size: int) -> bool:
    """Whether ``rank`` initiates the handshake with ``peer``: each rank initiates with the
    half of its peers that follow it round the ring, so every round of ``_handshakes``
    costs every rank about the same CPU (no rank computes while the others spin)."""
    distance = (peer - rank) % size
    return 2 * distance < size or (2 * distance == size and rank < peer)


def _handshakes(
    comm: Any, job: bytes, identity: Identity, keys: list[bytes], protocol: ProtocolName, service: str
) -> list[tuple[bytes, bytes]]:
    """Run the KK handshake with every rank (two Alltoall rounds); return per-peer transport keys."""
    rank, size = comm.Get_rank(), comm.Get_size()
    initiated = [peer for peer in range(size) if peer != rank and _initiates(rank, peer, size)]
    answered = [peer for peer in range(size) if peer != rank and not _initiates(rank, peer, size)]
    name = protocol.name
    states: dict[int, HandshakeState] = {}
    errors: list[str] = []
    pair_keys: list[tuple[bytes, bytes]] = [(b"", b"")] * size

    def state(initiator: int, responder: int) -> HandshakeState:
        prologue = Binding(job, initiator, responder, service).prologue(name)
        peer = responder if initiator == rank else initiator
        return HandshakeState(
            protocol, initiator=initiator == rank, prologue=prologue, s=identity.private, rs=keys[peer]
        )

    # This rank with itself: both sides here.
    me_i = state(rank, rank)
    me_r = HandshakeState(
        protocol,
        initiator=False,
        prologue=Binding(job, rank, rank, service).prologue(name),
        s=identity.private,
        rs=keys[rank],
    )
    me_r.read_message(me_i.write_message(b""))
    me_i.read_message(me_r.write_message(b""))
    pair_keys[rank] = me_i.transport_keys()[0], me_r.transport_keys()[1]

    out, incoming = bytearray(size * HANDSHAKE_SLOT), bytearray(size * HANDSHAKE_SLOT)
    view = memoryview(incoming)
    for peer in initiated:  # round 1: we initiate
        try:
            states[peer] = state(rank, peer)
            body = states[peer].write_message(b"")
            header = Header(RecordType.HANDSHAKE, 0, job, rank, peer, 0, 0, len(body))
            out[peer * HANDSHAKE_SLOT : (peer + 1) * HANDSHAKE_SLOT] = _handshake_slot(header, body)
        except MpishError as exc:
            errors.append(f"rank {peer}: {exc}")
    comm.Alltoall([out, MPI.BYTE], [incoming, MPI.BYTE])
    out = bytearray(size * HANDSHAKE_SLOT)
    for peer in answered:  # round 2: we answer
        try:
            hs = state(peer, rank)
            hs.read_message(_read_slot(view[peer * HANDSHAKE_SLOT :], job, peer, rank, 0))
            body = hs.write_message(b"")
            header = Header(RecordType.HANDSHAKE, 0, job, rank, peer, 0, 1, len(body))
            out[peer * HANDSHAKE_SLOT : (peer + 1) * HANDSHAKE_SLOT] = _handshake_slot(header, body)
            pair_keys[peer] = hs.transport_keys()
        except MpishError as exc:
            errors.append(f"rank {peer}: {exc}")
    comm.Alltoall([out, MPI.BYTE], [incoming, MPI.BYTE])
    for peer in initiated:
        try:
            if peer not in states:
                continue
            states[peer].read_message(_read_slot(view[peer * HANDSHAKE_SLOT :], job, peer, rank, 1))
            pair_keys[peer] = states[peer].transport_keys()
        except MpishError as exc:
            errors.append(f"rank {peer}: {exc}")
    failed = _agree(comm, not errors)
    if failed:
        detail = "; ".join(errors) if errors else "this rank's handshakes succeeded"
        raise AuthenticationError(f"secure(): the handshake failed on {failed} rank(s) ({detail})")
    return pair_keys


def secure(
    comm: Any,
    *,
    home: str | None = None,
    identity: Identity | None = None,
    trusted: frozenset[bytes] | set[bytes] | None = None,
    protocol: str = PROTOCOL,
    strict: bool = False,
    on_reject: Callable[[BaseException], None] | None = None,
) -> SecureComm:
    """Wrap an mpi4py intracommunicator in an authenticated, encrypted one (collective).

    Keys come from the user's mpish identity (``home``, else ``$MPISH_HOME``, else
    ``~/.mpish``); the trusted peers are the own key plus ``authorized_keys``.
    A forged, replayed or moved record is dropped and counted (``comm.rejected``), then
    passed to ``on_reject`` (and logged); with ``strict=True`` the receiving call raises it.
    """
    if comm.Is_inter():
        raise NotImplementedError("mpish.secure wraps intracommunicators only")
    p2p = comm.Dup()
    rank, size = p2p.Get_rank(), p2p.Get_size()
    # Identity: a rank that cannot load its key makes every rank fail, instead of hanging.
    local_error: BaseException | None = None
    try:
        if identity is None:
            identity = load_identity(home)
        if trusted is None:
            trusted = trusted_keys(identity, home)
    except MpishError as exc:
        local_error = exc
    # One Allgather carries, per rank: a "key loaded" flag, 16 random bytes (rank 0's are
    # the job id) and the public key (one collective instead of Allreduce, Bcast, Allgather).
    mine = bytearray(_SETUP_SLOT)
    if local_error is None:
        assert identity is not None
        mine[0] = 1
        mine[1:17] = secrets.token_bytes(16) if rank == 0 else bytes(16)
        mine[17:] = identity.public
    everyone = bytearray(_SETUP_SLOT * size)
    p2p.Allgather([mine, MPI.BYTE], [everyone, MPI.BYTE])
    failed = sum(1 for r in range(size) if everyone[r * _SETUP_SLOT] != 1)
    if failed:
        p2p.Free()
        if local_error is not None:
            raise local_error
        raise AuthenticationError(f"secure(): {failed} rank(s) could not load their mpish identity")
    assert identity is not None and trusted is not None
    job = everyone[1:17]
    keys = [bytes(everyone[r * _SETUP_SLOT + 17 : (r + 1) * _SETUP_SLOT]) for r in range(size)]

    # Trust check BEFORE any handshake; the verdicts are summed so every rank agrees.
    verdict = array("i", [0 if key in trusted else 1 for key in keys])
    refused = array("i", [0] * size)
    p2p.Allreduce([verdict, MPI.INT], [refused, MPI.INT], op=MPI.SUM)
    if any(refused):
        p2p.Free()
        lines = [
            f"rank {r} ({fingerprint(keys[r])}) is not trusted by {refused[r]} of {size} rank(s)"
            for r in range(size)
            if refused[r]
        ]
        mine_refused = [r for r in range(size) if verdict[r]]
        local = (
            f"; this rank (rank {rank}) does not trust rank(s) {mine_refused}: add their public keys to "
            "authorized_keys"
            if mine_refused
            else ""
        )
        raise AuthenticationError("secure(): untrusted mpish key: " + "; ".join(lines) + local)

    name = ProtocolName.parse(protocol)
    service = f"{SERVICE}:{size}"
    try:
        pair_keys = _handshakes(p2p, bytes(job), identity, keys, name, service)
    except BaseException:
        p2p.Free()
        raise
    comms = (p2p, comm.Dup(), comm.Dup(), comm.Dup())
    return SecureComm(comms, bytes(job), pair_keys, name, Stats(strict=strict, on_reject=on_reject))
