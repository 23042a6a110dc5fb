"""Setup of a secure communicator (collective): a job secret handed down a tree of KK handshakes.

Theory of operation
-------------------
1. The user's communicator is duplicated four times: ``p2p`` (point-to-point records;
   exposed as :attr:`SecureComm.raw` for attack tests), ``p2p_bulk`` (the continuation
   records of messages larger than one record), ``coll`` and ``coll_bulk`` (the same
   for collectives). Secure traffic never mixes with the user's own raw traffic, and
   collectives never match user point-to-point messages. The setup messages travel on
   ``p2p`` (tag :data:`SETUP_TAG`) and are all received before :func:`secure` returns.
2. Rank 0 draws the job id (16 bytes, public) and the job secret (32 bytes). The ranks
   form a binary tree (parent of ``r``: ``(r - 1) // 2``). On every edge, three
   fixed-size slots (:data:`SLOT` bytes) go down, up, down:

   - DOWN1, parent to child: status, job id, the parent's public key;
   - UP, child to parent: status, the child's public key, Noise KK message 1 (the child
     initiates) — sent only if the child trusts the parent's key;
   - DOWN2, parent to child: status, KK message 2 carrying the job secret as payload —
     sent only if the parent trusts the child's key and message 1 verified.

   The prologue of each handshake binds protocol name and version, the job id, the
   ordered pair (child, parent), the communicator size and the ``MPI.COMM_WORLD`` ranks
   of child, parent and the communicator's rank 0 (service
   ``"mpish.comm.tree.v3:<size>:<world child>,<world parent>,<world rank 0>"``,
   wire/channel.py's :class:`Binding`); each side computes the world ranks locally
   (``Group.Translate_ranks``), so a keyless rank that relays setup messages between two
   communicators it belongs to (it is a child in one and a parent in the other) fails
   the prologue check. The handshake records carry job and pair in their header too.
   An edge between two worlds (a communicator merged from a spawned
   intercommunicator) cannot be named by world ranks on both sides; it binds
   ``-1, -1, -1`` instead and keeps only the job id, pair and size.
   A rank forwards DOWN1 to its children as soon as it has its own, so the tree's
   handshakes run in parallel; each rank then derives every key it needs from the
   secret, lazily (secret.py).
3. The keys: the tree's handshakes prove the keys of both ends of each edge, but each
   end checks only the other; so with alice trusting bob and bob trusting carol, carol
   as bob's child would get the secret though alice never trusted her. So after the
   tree, every rank sends its parent a **key report**: each distinct public key proven
   in its subtree's handshakes (its own, its children's, their reports'), with the
   least rank known to hold it, MACed under a key of the job secret for that ordered
   pair (secret.py: :func:`seal_keys`). Rank 0 forms the union and sends it down the
   tree the same way; every rank checks every key of the union against its own trusted
   set, and refuses the ones it does not trust. The rule: **every rank trusts every key
   in the job, or secure() fails on every rank** (step 4). A report is
   ``9 + 36 * keys + 32`` bytes: its cost grows with the number of distinct keys
   (usually one), not with the world size.
4. Nobody waits forever: every rank sends every slot it owes (with a status saying
   why not, when it cannot: no key, refused key, failed handshake, or an upstream
   failure), and one ``Allreduce`` (op ``MAX``, so that no rank can lower another's
   flag) of five flags (a rank without a key, a refused key, a failed handshake, a rank
   left without the secret, a rank whose MPI runs on another user's shared memory:
   ``transport/shm.py``) makes every rank raise, or none. A setup message is
   matched before it is received (``Mprobe``): one of the wrong size (a rogue rank's) is
   received whole, dropped, and fails its slot, as does an MPI error, so the rank still
   sends what it owes and joins the agreement. A rank that sends nothing at all blocks
   its neighbours (as it could block any collective: a denial of service, not a key).
   An untrusted key is named on every rank: the first refusal (refusals by a parent first) is agreed with one
   ``Allreduce`` and both keys are broadcast by the refusing rank (a rogue rank can
   garble this message, not the verdict).

Why this is sound (the argument; secret.py has the key derivation's):

- Who gets the secret: a rank whose tree parent holds it, accepted its key and whose
  key it accepted (mutual KK authentication with keys from each side's trusted set:
  own key plus ``authorized_keys``). By induction from rank 0, only holders of keys
  admitted along the path from rank 0 get it; an outsider's key stops at its first
  edge. A rank holding the user's key (or one the user authorized) could anyway have
  joined the job under any rank number, so keys, not ranks, are the trust unit.
- Who is in the job when secure() returns: every key that got the secret was proven
  in a handshake by a parent holding the secret, which reports it (MACed under the
  secret: an outsider cannot forge or strip a report); so the union rank 0 hands down
  holds every key in the job, and every rank checked all of them (step 3). A key one
  rank does not trust raises its flag, which nobody can lower (``MAX``).
- Replay of a setup message: message 1 is bound (prologue) to the fresh job id, so a
  message 1 from an earlier job or communicator fails; within the job it is bound to
  its (child, parent) pair, so it cannot be moved to another edge, and each slot is
  received exactly once. Message 2 is bound to the child's fresh ephemeral key of this
  handshake (``ee``), so a replayed message 2 fails to decrypt. A failed check fails
  the setup on every rank (step 4); it never yields a key. Tested in
  ``tests/unit/test_comm_secret.py`` (sans-I/O edges) and ``tests/mpi/comm_setup_replay.py``.
- Deadlock freedom of the setup: messages flow down the tree and back up one edge at a
  time, then the key reports up and down; a rank blocks only on its parent (DOWN1, DOWN2,
  the union) and its children (UP, their reports), which never wait on it in turn. No
  lazy handshake exists later: "both ranks Send, then both Recv" cannot deadlock on keys.

Setup cost per rank: one handshake at a leaf, three at an inner rank, six key reports at
most, constant-size collectives, no per-peer work (a pair's keys come on its first record).
Latency: three times ``log2(size)`` tree levels. ``bench/comm.py`` prints CPU and work.
"""

from __future__ import annotations

import os
import secrets
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpi4py import MPI

from ..keys import Identity, fingerprint, load_identity, trusted_keys
from ..transport.mpi import discard, probed_size
from ..transport.shm import memory_problem
from ..wire.channel import Binding
from ..wire.errors import AuthenticationError, LocalProtocolError, MpishError
from ..wire.noise import DHLEN, HandshakeState, ProtocolName
from ..wire.record import HEADER_SIZE, SESSION_SIZE, Header, RecordType, parse_header
from .communicator import BY_TOPOLOGY, SecureComm
from .derive import made_each
from .handles import guard_threads
from .lane import Stats
from .secret import SECRET_SIZE, CommSecret, key_report_size, open_keys, seal_keys

PROTOCOL = "Noise_KK_25519_AESGCM_SHA256"
# the record format secure() speaks is part of the name: ranks of an mpish whose records differ
# (v2: continuation records carry FLAG_CONTINUATION; v3: synchronous sends await the receiver's
# acknowledgement) fail the setup instead of losing long messages or hanging in Ssend
SERVICE = "mpish.comm.tree.v3"
SETUP_TAG = 1
SLOT = 160  # bytes per setup message: status, a public key or job id and key, a handshake record
HANDSHAKE_SLOT = SLOT
FANOUT = 2
OK, ABORT, REFUSED, FAILED = 1, 0, 2, 3  # slot status: sent, upstream failure, key refused, bad message


def parent_of(rank: int) -> int | None:
    return None if rank == 0 else (rank - 1) // FANOUT


def children_of(rank: int, size: int) -> list[int]:
    return [c for c in range(FANOUT * rank + 1, FANOUT * rank + FANOUT + 1) if c < size]


# -- one tree edge, sans-I/O: child initiates, parent answers with the secret


def _binding(job: bytes, child: int, parent: int, size: int, world: tuple[int, int, int]) -> Binding:
    return Binding(job, child, parent, f"{SERVICE}:{size}:" + ",".join(map(str, world)))


def world_ranks(comm: Any, ranks: list[int]) -> list[int]:
    """The ``MPI.COMM_WORLD`` ranks of ``ranks`` of ``comm`` (computed locally; -1 outside this world)."""
    group, world = comm.Get_group(), MPI.COMM_WORLD.Get_group()
    try:
        found = MPI.Group.Translate_ranks(group, ranks, world)
    finally:
        group.Free()
        world.Free()
    return [-1 if r == MPI.UNDEFINED else r for r in found]


def edge_worlds(comm: Any, edges: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """What each edge ``(child, parent)`` binds: world ranks of child, parent and rank 0, computed
    locally (one ``Translate_ranks`` for all); ``(-1, -1, -1)`` across worlds (module doc)."""
    ranks = sorted({0, *(r for edge in edges for r in edge)})
    world = dict(zip(ranks, world_ranks(comm, ranks), strict=True))
    return [(-1, -1, -1) if -1 in (world[c], world[p]) else (world[c], world[p], world[0]) for c, p in edges]


def _record(job: bytes, sender: int, receiver: int, index: int, body: bytes) -> bytes:
    return Header(RecordType.HANDSHAKE, 0, job, sender, receiver, 0, index, len(body)).pack() + body


def _body(record: bytes | memoryview, job: bytes, sender: int, receiver: int, index: int) -> bytes:
    """The Noise message of a handshake record, after checking what its header binds."""
    header = parse_header(record)
    if header.type is not RecordType.HANDSHAKE or header.counter != index:
        raise AuthenticationError(f"bad setup message from rank {sender}")
    if (header.session, header.sender, header.receiver) != (job, sender, receiver):
        raise AuthenticationError(f"setup message from rank {sender} is bound to another job or pair")
    if HEADER_SIZE + header.length > len(record):
        raise AuthenticationError(f"truncated setup message from rank {sender}")
    return bytes(record[HEADER_SIZE : HEADER_SIZE + header.length])


@dataclass
class Edge:
    """The handshake of one tree edge, as one of its two sides sees it."""

    protocol: ProtocolName
    job: bytes
    child: int
    parent: int
    size: int
    world: tuple[int, int, int] = (-1, -1, -1)  # COMM_WORLD ranks of child, parent, rank 0 (edge_world)
    state: HandshakeState | None = field(default=None, repr=False)

    def _state(self, identity: Identity, peer_key: bytes, *, initiator: bool) -> HandshakeState:
        binding = _binding(self.job, self.child, self.parent, self.size, self.world)
        prologue = binding.prologue(self.protocol.name)
        return HandshakeState(
            self.protocol, initiator=initiator, prologue=prologue, s=identity.private, rs=peer_key
        )

    def hello(self, identity: Identity, parent_key: bytes) -> bytes:
        """Child: message 1 (as a handshake record)."""
        self.state = self._state(identity, parent_key, initiator=True)
        return _record(self.job, self.child, self.parent, 0, self.state.write_message(b""))

    def answer(self, identity: Identity, child_key: bytes, hello: bytes | memoryview, secret: bytes) -> bytes:
        """Parent: read message 1, write message 2 carrying ``secret``."""
        state = self._state(identity, child_key, initiator=False)
        state.read_message(_body(hello, self.job, self.child, self.parent, 0))
        return _record(self.job, self.parent, self.child, 1, state.write_message(secret))

    def finish(self, answer: bytes | memoryview) -> bytes:
        """Child: read message 2; return the secret it carried."""
        if self.state is None:
            raise LocalProtocolError("finish() before hello()")
        secret = self.state.read_message(_body(answer, self.job, self.parent, self.child, 1))
        if len(secret) != SECRET_SIZE:
            raise AuthenticationError(f"setup message from rank {self.parent} carries no job secret")
        return secret


# -- the collective


@dataclass
class _Outcome:
    """What one rank saw during the tree setup."""

    no_key: int = 0
    foreign_memory: int = 0  # 1 if MPI runs here on shared memory another user controls
    no_secret: int = 0  # 1 if this rank ended without the secret (whatever the reason)
    refused: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)  # refuser, refused, keys
    failures: list[str] = field(default_factory=list)
    proven: dict[bytes, int] = field(default_factory=dict)  # keys proven in this rank's handshakes -> rank


def _post(comm: Any, slot: bytes | bytearray, dest: int) -> Any:
    """Send one setup slot (a function of its own so that attack tests can replay slots)."""
    return comm.Isend([bytes(slot).ljust(SLOT, b"\0"), MPI.BYTE], dest, SETUP_TAG)


def _receive(comm: Any, source: int) -> memoryview | None:
    """The next setup slot from ``source``; None (a failed slot) if it is not :data:`SLOT` bytes."""
    return _match(comm, source, SLOT, SLOT)


def _await(comm: Any, source: int, status: Any) -> Any:
    """The next setup message from ``source``, polled with a yield (MPICH's blocking Mprobe
    spins: 32 ranks on 2 cores took 575-660 ms of wall time, not 90)."""
    while (message := comm.Improbe(source, SETUP_TAG, status)) is None:
        os.sched_yield()
    return message


def _match(comm: Any, source: int, least: int, most: int) -> memoryview | None:
    """The next setup message from ``source``; None if not ``least`` to ``most`` bytes (one of
    another size is matched first, received whole and dropped, not truncated)."""
    try:
        status = MPI.Status()
        message, count = _await(comm, source, status), probed_size(status)
        if not least <= count <= most:
            discard(message, count)
            return None
        buf = bytearray(count)
        message.Recv([buf, MPI.BYTE])
    except MPI.Exception:
        return None
    return memoryview(buf)


def _tree(
    comm: Any,
    identity: Identity | None,
    trusted: frozenset[bytes] | set[bytes],
    protocol: ProtocolName,
    outcome: _Outcome,
) -> tuple[bytes, bytes | None]:
    """Run this rank's part of the tree setup; return the job id and the secret (None: failed)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    parent, children = parent_of(rank), children_of(rank, size)
    public = identity.public if identity is not None else bytes(DHLEN)
    sends: list[Any] = []
    secret: bytes | None = None
    if parent is None:
        job = secrets.token_bytes(SESSION_SIZE)
        if identity is not None:
            secret = secrets.token_bytes(SECRET_SIZE)
            outcome.proven[identity.public] = rank
        healthy = identity is not None
    else:
        down1 = _receive(comm, parent)
        if down1 is None:
            outcome.failures.append(f"rank {rank}: a malformed setup message from rank {parent}")
            down1 = memoryview(bytes(SLOT))  # status ABORT: this rank only passes on the failure
        job = bytes(down1[1 : 1 + SESSION_SIZE])
        parent_key = bytes(down1[1 + SESSION_SIZE : 1 + SESSION_SIZE + DHLEN])
        healthy = down1[0] == OK and identity is not None
    for child in children:  # forwarded at once: the subtrees start their handshakes meanwhile
        sends.append(_post(comm, bytes([OK if healthy else ABORT]) + job + public, child))
    down = [(child, rank) for child in children]
    worlds = edge_worlds(comm, down if parent is None else [(rank, parent), *down])
    if parent is not None:
        edge = Edge(protocol, job, rank, parent, size, worlds.pop(0))
        status, hello = (OK if healthy else ABORT), b""
        if healthy and parent_key not in trusted:
            status = REFUSED
            outcome.refused.append((rank, parent, parent_key, public))
        elif healthy:
            try:
                assert identity is not None
                hello = edge.hello(identity, parent_key)
            except (MpishError, ValueError) as exc:  # ValueError: a degenerate key from cryptography
                status = FAILED
                outcome.failures.append(f"rank {rank} with rank {parent}: {exc}")
        sends.append(_post(comm, bytes([status]) + public + hello, parent))
        down2 = _receive(comm, parent)
        if down2 is None:
            outcome.failures.append(f"rank {rank}: a malformed setup message from rank {parent}")
        elif status == OK and down2[0] == OK:
            try:
                secret = edge.finish(down2[1:])
            except (MpishError, ValueError) as exc:  # ValueError: a degenerate key from cryptography
                outcome.failures.append(f"rank {rank} from rank {parent}: {exc}")
    for child, world in zip(children, worlds, strict=True):
        up = _receive(comm, child)
        status, answer = ABORT, b""
        if up is None:
            status = FAILED
            outcome.failures.append(f"rank {rank}: a malformed setup message from rank {child}")
        elif secret is not None and up[0] in (OK, REFUSED):
            child_key = bytes(up[1 : 1 + DHLEN])  # a child that refused us is checked too
            if child_key not in trusted:
                status = REFUSED
                outcome.refused.append((rank, child, child_key, public))
            elif up[0] == OK:
                assert identity is not None
                try:
                    below = Edge(protocol, job, child, rank, size, world)
                    answer = below.answer(identity, child_key, up[1 + DHLEN :], secret)
                    status = OK
                    outcome.proven.setdefault(child_key, child)
                except (MpishError, ValueError) as exc:  # ValueError: a degenerate key from cryptography
                    status = FAILED
                    outcome.failures.append(f"rank {rank} from rank {child}: {exc}")
        sends.append(_post(comm, bytes([status]) + answer, child))
    MPI.Request.Waitall(sends)
    outcome.no_secret = int(secret is None)
    return job, secret


def _send_keys(comm: Any, report: bytes, dest: int) -> Any:
    return comm.Isend([report, MPI.BYTE], dest, SETUP_TAG)


def _check_keys(
    comm: Any,
    protocol: ProtocolName,
    job: bytes,
    secret: bytes | None,
    trusted: frozenset[bytes] | set[bytes],
    public: bytes,
    outcome: _Outcome,
) -> None:
    """Step 4: gather the keys proven in the tree's handshakes up to rank 0, hand their union
    down, and refuse every key of it this rank does not trust (see the module doc)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    parent, children = parent_of(rank), children_of(rank, size)
    least, most = key_report_size(0), key_report_size(size)
    known = dict(outcome.proven)
    union: dict[bytes, int] | None = None
    sends: list[Any] = []

    def read(peer: int) -> dict[bytes, int] | None:
        report = _match(comm, peer, least, most)
        if secret is None:
            return None  # this rank's failure is flagged already
        try:
            if report is None:
                raise AuthenticationError(f"a malformed key report from rank {peer}")
            return open_keys(protocol, secret, job, peer, rank, bytes(report), size)
        except AuthenticationError as exc:
            outcome.failures.append(f"rank {rank}: {exc}")
            return None

    for child in children:
        for key, holder in (read(child) or {}).items():
            known[key] = min(holder, known.get(key, holder))
    if parent is None:
        union = known if secret is not None else None
    else:
        sends.append(_send_keys(comm, seal_keys(protocol, secret, job, rank, parent, known), parent))
        union = read(parent)
    for child in children:
        sends.append(_send_keys(comm, seal_keys(protocol, secret, job, rank, child, union), child))
    for key, holder in sorted((union or {}).items(), key=lambda item: item[1]):
        if key not in trusted:
            outcome.refused.append((rank, holder, key, public))
    MPI.Request.Waitall(sends)


def _refusal_report(comm: Any, outcome: _Outcome, size: int) -> str:
    """Name the first refused key on every rank (two collectives, only when a key was refused)."""
    rank = comm.Get_rank()
    none = 2 * size * size

    def order(refuser: int, refused: int) -> int:  # refusals by a parent first, then by rank
        return (0 if parent_of(refused) == refuser else 1) * size * size + refused * size + refuser

    mine = min((order(a, b) for a, b, _, _ in outcome.refused), default=none)
    first = array("q", [0])
    comm.Allreduce([array("q", [mine]), MPI.INT64_T], [first, MPI.INT64_T], op=MPI.MIN)
    refuser, refused = first[0] % size, (first[0] % (size * size)) // size
    keys = bytearray(2 * DHLEN)
    if rank == refuser:
        for a, b, refused_key, own in outcome.refused:
            if (a, b) == (refuser, refused):
                keys[:] = refused_key + own
    comm.Bcast([keys, MPI.BYTE], refuser)
    return (f"rank {refused} ({fingerprint(bytes(keys[:DHLEN]))}) is not trusted by rank {refuser} "
            f"({fingerprint(bytes(keys[DHLEN:]))})")


def _agree(comm: Any, outcome: _Outcome, local_error: BaseException | None) -> None:
    """Raise on every rank if the setup failed anywhere (one ``Allreduce`` of five flags).

    The op is ``MAX``: a rank can raise a flag but not lower another rank's (a keyless rank
    sending -1 cancelled a failure under ``SUM``). The flags say only *that* and *how* the
    setup failed somewhere; this rank's own failures raise whatever they say."""
    mine = array("q", [outcome.no_key, int(bool(outcome.refused)), int(bool(outcome.failures)),
                       outcome.no_secret, outcome.foreign_memory])
    flags = array("q", [0] * len(mine))
    comm.Allreduce([mine, MPI.INT64_T], [flags, MPI.INT64_T], op=MPI.MAX)
    no_key, refused, failed, no_secret, foreign = (max(a, b) > 0 for a, b in zip(flags, mine, strict=True))
    if not (no_key or refused or failed or no_secret or foreign):
        return
    if local_error is not None:
        raise local_error
    if foreign:
        raise AuthenticationError("secure(): another rank runs MPI on shared memory another user "
                                  "controls (a planted /dev/shm file: its error names it); not going on")
    if no_key:
        raise AuthenticationError("secure(): a rank could not load its mpish identity")
    if refused:
        first = _refusal_report(comm, outcome, comm.Get_size())
        local = ""
        if outcome.refused:
            names = sorted({b for _, b, _, _ in outcome.refused})
            local = (
                f"; this rank (rank {comm.Get_rank()}) does not trust rank(s) {names}: add their public keys "
                "to authorized_keys"
            )
        raise AuthenticationError(f"secure(): untrusted mpish key: {first}{local}")
    if not failed:  # only a forged status can leave a rank without the secret and nothing counted
        raise AuthenticationError("secure(): a rank got no job secret (a forged setup message)")
    detail = "; ".join(outcome.failures) if outcome.failures else "this rank's handshakes succeeded"
    raise AuthenticationError(f"secure(): the setup handshake failed ({detail})")


def secure(
    comm: Any,
    *,
    home: str | None = None,
    identity: Identity | None = None,
    trusted: frozenset[bytes] | set[bytes] | None = None,
    protocol: str | None = None,  # None: PROTOCOL; None as well tells "not given" from the default
    strict: bool | None = None,  # None: False
    on_reject: Callable[[BaseException], None] | None = None,
) -> SecureComm:
    """Wrap an mpi4py intracommunicator in an authenticated, encrypted one (collective).

    Keys come from the user's mpish identity (``home``, else ``$MPISH_HOME``, else
    ``~/.mpish``); the trusted peers are the own key plus ``authorized_keys``.
    A forged, replayed or moved record is dropped and counted (``comm.rejected``), then
    passed to ``on_reject`` (and logged); with ``strict=True`` the receiving call raises it.
    A secure communicator given without options gives its ``Dup`` (collective as well).
    """
    if isinstance(comm, SecureComm) and (home, identity, trusted, protocol, strict, on_reject) == (None,) * 6:
        return comm.Dup()  # type: ignore[no-any-return]  # a library securing whatever it is given
    if isinstance(comm, SecureComm):
        raise TypeError("mpish.secure(comm, ...): comm is already secure, with its keys and settings; pass "
                        "these options when securing the mpi4py communicator it was made from")
    if not isinstance(comm, MPI.Comm):
        raise TypeError(
            "mpish.secure(comm) takes an mpi4py communicator such as MPI.COMM_WORLD, "
            f"not {type(comm).__name__}"
        )
    if comm.Is_inter():
        raise NotImplementedError("mpish.secure wraps intracommunicators only")
    name = ProtocolName.parse(PROTOCOL if protocol is None else protocol)
    if name.pattern.name != "KK":
        raise LocalProtocolError(f"secure(comm) runs Noise KK handshakes, not {name.pattern.name}")
    p2p = comm.Dup()
    # errors returned, whatever the wrapped communicator's handler (a Dup inherits it): a forged
    # oversized message is an ERR_TRUNCATE that mpish drops, never the end of the job
    p2p.Set_errhandler(MPI.ERRORS_RETURN)
    outcome = _Outcome()
    local_error: BaseException | None = None
    try:
        if identity is None:
            identity = load_identity(home)
        if trusted is None:
            trusted = trusted_keys(identity, home)
    except MpishError as exc:
        local_error, identity, outcome.no_key = exc, None, 1
    if problem := memory_problem(f"rank {comm.Get_rank()}"):  # MPI_Init mapped its segments: whose?
        outcome.foreign_memory, local_error = 1, local_error or AuthenticationError(f"secure(): {problem}")
    try:
        job, secret = _tree(p2p, identity, trusted or frozenset(), name, outcome)
        public = identity.public if identity is not None else bytes(DHLEN)
        _check_keys(p2p, name, job, secret, trusted or frozenset(), public, outcome)
        _agree(p2p, outcome, local_error)
    except BaseException:
        p2p.Free()
        raise
    if secret is None:  # _agree raised on every rank: this rank's flag was up (kept as a guard)
        p2p.Free()
        raise AuthenticationError("secure(): this rank got no job secret")
    keys = CommSecret(name, secret, job, p2p.Get_rank(), p2p.Get_size())
    comms = made_each((p2p, comm, comm, comm), lambda c: c if c is p2p else c.Dup())  # (an error frees p2p)
    p2p.Set_name(comm.Get_name())  # secure(COMM_WORLD).Get_name() is "MPI_COMM_WORLD", as a drop-in
    for internal in comms[1:]:
        internal.Set_errhandler(MPI.ERRORS_RETURN)
    guard_threads()  # before the first secure communicator exists (handles.py: threads)
    kind = BY_TOPOLOGY.get(comm.Get_topology(), SecureComm)  # secure(cart) is a Cartesian one
    return kind(comms, keys, Stats(strict=bool(strict), on_reject=on_reject))
