"""Secure intercommunicators: ``Create_intercomm`` of a secure communicator (``mpi4py.futures``'
``MPICommExecutor`` is built on one).

Theory of operation
-------------------
Keys. An intercommunicator joins two groups, each with a secure intracommunicator of its
own, and a peer communicator that holds both leaders; it must be a secure one. The two
leaders each draw 32 random bytes and exchange them over the peer communicator (as
authenticated, encrypted records, on its internal collective lane with a tag of their own,
so no pending user message or receive can take a half's place: nobody else learns them),
derive the intercommunicator's secret and id as ``HKDF(low half, "mpish.comm intercomm" ||
high half)`` (the low half is the lesser of the two, the same decision on both sides),
confirm to each other that they derived the same id, and broadcast the result to their
groups over their own secure communicators (a failure too: every rank raises). For the record keys
(secret.py) both groups are numbered in one sequence, the low group first
(:class:`~mpish.comm.secret.InterSecret`): each direction of each pair has its own key,
and a record reflected back to its sender is refused. MPI's own intercommunicators (one per
internal communicator of the secure one) carry the records; MPI's leader exchange for them
runs on the peer's internal collective communicator, never on the one that carries the
user's point-to-point records.

Collectives (MPI's intercommunicator semantics): ``Barrier`` returns once every rank of
the other group has entered it; ``Bcast``/``bcast`` from ``MPI.ROOT`` in one group to the
ranks of the other, which name the root's rank (its group's other ranks pass
``MPI.PROC_NULL`` and take no part); ``Allreduce``/``allreduce`` gives each group the
reduction of the other group's contributions, folded in rank order. The rooted gathers,
scatters and reductions, ``Allgather(v)``, ``Alltoall(v)``, ``Reduce_scatter_block`` and
their object forms, with the building blocks all of them share, are in
intercomm_collectives.py (its theory of operation). Each rank sends to every rank of the
other group directly (no local communicator is needed; fine for the small groups an
intercommunicator usually joins). ``Ibarrier`` is nonblocking (:class:`StartedInterBarrier`:
an empty record to each rank of the other group at the start, one from each received in
``Test``/``Wait``; every other collective first completes the started ones, as on an
intracommunicator, nonblocking.py); the other ``I``-forms run at the call. ``Alltoallw``,
``Reduce_scatter``, ``Scan``/``Exscan``, the persistent collectives, ``Create``/``Split`` and
topologies raise ``Unsupported``; ``Dup``, ``Merge`` and persistent point to point work.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from ..wire.errors import RemoteProtocolError
from ..wire.record import SESSION_SIZE
from .buffers import Unsupported, byte_view, check_op, mpi_error, typed_spec
from .collectives import Steps, _dumps, _loads
from .derive import made_each
from .intercomm_collectives import InterCollectives, _folder
from .lane import Lane, Stats, wait_all
from .nonblocking import COLLECTIVES, STEPPED, _i_name, after_started, blocking, started
from .peers import as_int
from .secret import SECRET_SIZE, CommSecret, InterSecret
from .unsupported import _Unsupported

_HALF = 32
INTERCOMM_TAG = 3  # the leaders' key halves, on the peer's collective lane (COLL_TAG: 1)
_TAGGED = struct.Struct(">q")  # the user's tag, sent with each half: both leaders must name the same


class Bridges:
    """``Create_intercomm`` of a secure intracommunicator (a mixin of SecureComm, which sets
    ``_kinds['Create_intercomm']``, the secure intercommunicator class)."""

    _comms: tuple[Any, Any, Any, Any]
    _kinds: dict[str, type]
    _keys: Any
    _stats: Stats
    rank: int
    bcast: Any

    def Create_intercomm(self, local_leader: int, peer_comm: Any, remote_leader: int, tag: int = 0) -> Any:
        agreed: Any = None
        if self.rank == local_leader:
            try:
                agreed = _leaders_exchange(self._keys.protocol, peer_comm, remote_leader, tag)
            except Unsupported as exc:  # the group hears of it (the bcast below), then every rank raises
                agreed = (None, str(exc), True)
            except Exception as exc:
                agreed = (None, f"Create_intercomm: the leaders could not agree on keys: {exc}", False)
        secret, ident, low = self.bcast(agreed, local_leader)
        if secret is None:
            raise Unsupported(ident) if low else mpi_error(MPI.ERR_OTHER, ident)
        comms = tuple(
            c.Create_intercomm(
                local_leader, peer_comm._comms[2] if self.rank == local_leader else c, remote_leader, tag
            )
            for c in self._comms
        )
        n_local, n_remote = comms[0].Get_size(), comms[0].Get_remote_size()
        keys = InterSecret(
            self._keys.protocol,
            secret,
            ident,
            (0 if low else n_remote) + comms[0].Get_rank(),
            n_local + n_remote,
            n_local if low else 0,
        )
        return self._kinds["Create_intercomm"](comms, keys, self._stats)


def _leaders_exchange(
    protocol: Any, peer_comm: Any, remote_leader: int, tag: int
) -> tuple[bytes, bytes, bool]:
    """(secret, id, whether this leader's group is the low one), agreed with the other leader
    over the peer communicator's internal collective lane, on a tag of its own (never the
    user's point-to-point records, which a pending message or receive would mix in); each
    leader then checks that the other derived the same id (a key confirmation)."""
    if not hasattr(peer_comm, "_coll"):
        raise Unsupported("the peer communicator of Create_intercomm must be a secure one (mpish.secure)")
    lane = peer_comm._coll
    mine = os.urandom(_HALF)

    def swap(data: bytes) -> bytes:
        requests, _ = lane.isend(memoryview(_TAGGED.pack(tag) + data), remote_leader, INTERCOMM_TAG)
        _, _, _, got = lane.recv(remote_leader, INTERCOMM_TAG, None)
        wait_all(requests)
        if len(got) != _TAGGED.size + len(data) or _TAGGED.unpack_from(got)[0] != tag:
            raise RemoteProtocolError("the other leader sent another tag or a malformed key half")
        return bytes(got[_TAGGED.size :])

    theirs = swap(mine)
    low = mine < theirs  # the same decision on both sides, whatever the peer communicator
    low_half, high_half = (mine, theirs) if low else (theirs, mine)
    secret, ident = protocol.hash.hkdf(low_half, b"mpish.comm intercomm" + high_half, 2)
    confirm = hashlib.sha256(b"mpish.comm intercomm confirm" + ident[:SESSION_SIZE]).digest()
    if not hmac.compare_digest(swap(confirm), confirm):
        raise RemoteProtocolError("the two leaders derived different keys")
    return secret[:SECRET_SIZE], ident[:SESSION_SIZE], low


class Intercomm(InterCollectives):
    """What a secure intercommunicator does differently (a mixin over SecureComm)."""

    _comms: tuple[Any, Any, Any, Any]
    _p2p: Lane
    _coll: Lane
    _keys: InterSecret
    _stats: Stats
    _derived: int
    _kinds: dict[str, type]
    rank: int
    size: int
    _c_recv_into: Any
    _c_recv_bytes: Any
    _started: list[Any]  # started collectives not done yet (nonblocking.py), oldest first
    _start: Any  # nonblocking.py: a collective started from its steps
    _c_send: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._p2p.acks.rank = -1  # type: ignore[union-attr]  # no remote rank is this process

    def Is_inter(self) -> bool:
        return True

    def Is_intra(self) -> bool:
        return False

    is_inter = property(Is_inter)
    is_intra = property(Is_intra)

    def Get_remote_size(self) -> int:
        return self._p2p.size

    def Get_remote_group(self) -> Any:
        return self._comms[0].Get_remote_group()

    remote_size = property(Get_remote_size)
    remote_group = property(Get_remote_group)

    # the small-message paths of SecureComm check ranks against its own size: not here
    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        self._p2p.send(byte_view(buf, writable=False), dest, tag)

    def send(self, obj: Any, dest: int, tag: int = 0) -> None:
        self._p2p.send(_dumps(obj), dest, tag)

    Bsend = Rsend = Send
    bsend = send

    # -- collectives (module doc; the others and their building blocks: intercomm_collectives.py)

    def _exchange_all(self, out: memoryview, receive: Callable[[int, Any], None]) -> Steps[None]:
        """Send ``out`` to every rank of the other group and hand the record of each, in rank
        order, to ``receive``; nothing is left for a later call (``_exchange_each``)."""
        yield from self._exchange_each([out] * self._coll.size, receive)

    def _Barrier_steps(self) -> Steps[None]:
        """An empty record to every rank of the other group, then one from each (``Ibarrier``
        too: the NBX exchange needs it not to wait at the call)."""
        def entered(peer: int, data: Any) -> None:
            if len(data):
                raise RemoteProtocolError(f"a barrier record of {len(data)} bytes from rank {peer}")

        yield from self._exchange_all(memoryview(b""), entered)

    def _root(self, root: int) -> int:
        """A root as MPI's intercommunicator collectives take it (checked by a started one's call)."""
        root = as_int(root)
        self._root_role(root)
        return root

    def _root_role(self, root: int) -> str:
        if root == MPI.ROOT:
            return "send"
        if root == MPI.PROC_NULL:
            return "none"
        if not 0 <= root < self._coll.size:
            raise mpi_error(MPI.ERR_ROOT, f"root {root}, for a remote group of {self._coll.size}")
        return "receive"

    def _send_all(self, make: Callable[[], memoryview]) -> None:
        self._send_each(lambda: [make()] * self._coll.size)

    def _Bcast_steps(self, buf: Any, root: int = 0) -> Steps[None]:
        role = self._root_role(root)
        if role == "send":
            self._send_all(lambda: byte_view(buf, writable=False))
        elif role == "receive":
            yield from self._recv_or_drop_steps(buf, root)  # the root's record is dropped if ``buf`` is wrong

    def bcast(self, obj: Any, root: int = 0) -> Any:
        role = self._root_role(root)
        if role == "send":
            self._send_all(lambda: _dumps(obj))
        elif role == "receive":
            return _loads(self._c_recv_bytes(root))
        return None

    def _Allreduce_steps(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> Steps[None]:
        try:
            send = byte_view(sendbuf, writable=False)
            recv = byte_view(recvbuf, writable=True)[: len(send)]
            typed_spec(sendbuf, bytearray(len(send)), len(send))  # a datatype MPI can reduce, or raise now
            check_op(op, sendbuf)  # with this operation (buffers.check_op)
        except Exception as exc:
            yield from self._failed_exchange(exc)
            raise
        size = len(send)
        fold, acc = _folder(sendbuf, size, op, "Allreduce")  # in rank order
        yield from self._exchange_all(send, fold)
        if len(recv) != size:
            raise ValueError(f"Allreduce: receive buffer of {len(recv)} bytes, send buffer {size}")
        recv[:] = acc[0]

    def allreduce(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        """The other group's objects (allgather), folded with ``op`` in their rank order."""
        return functools.reduce(op, self.allgather(sendobj))

    # -- new communicators

    def Dup(self, info: Any = None) -> Any:
        self._derived += 1
        comms = made_each(self._comms, lambda c: c.Dup())
        keys = self._keys.child(struct.pack(">Q", self._derived) + b"inter_dup")
        return type(self)(comms, keys, self._stats)

    Clone = Dup

    def Merge(self, high: bool = False) -> Any:
        """The intracommunicator of both groups (collective over both)."""
        self._derived += 1
        comms = made_each(self._comms, lambda c: c.Merge(high))
        base = self._keys.child(struct.pack(">Q", self._derived) + b"merge")
        keys = CommSecret(base.protocol, base.secret, base.ident, comms[0].Get_rank(), comms[0].Get_size())
        return self._kinds["Merge"](comms, keys, self._stats)

    def Disconnect(self) -> None:
        self.Free()  # type: ignore[attr-defined]


for _name in COLLECTIVES:  # a started Ibarrier's records are taken before another collective's
    if _name in vars(Intercomm) or _name in vars(InterCollectives):
        setattr(Intercomm, _name, after_started(getattr(Intercomm, _name)))
for _name in STEPPED:  # blocking and started, from the steps above (nonblocking.py)
    _steps = f"_{_name}_steps"
    if _steps in vars(Intercomm) or _steps in vars(InterCollectives):
        setattr(Intercomm, _name, blocking(_name, Intercomm))
        setattr(Intercomm, _i_name(_name), started(_name, Intercomm))
Intercomm.barrier, Intercomm.ibarrier = Intercomm.Barrier, Intercomm.Ibarrier  # type: ignore[attr-defined]
for _name in ("Alltoallw", "Reduce_scatter", "Scan", "scan", "Exscan", "exscan", "Create",
              "Create_group", "Split", "Split_type", "Create_cart", "Create_graph", "Create_dist_graph",
              "Create_dist_graph_adjacent", "Create_intercomm", "Dup_with_info", "Ialltoallw",
              "Ireduce_scatter", "Iscan", "Iexscan", "Cart_map", "Graph_map"):
    setattr(Intercomm, _name, _Unsupported(_name))
_P2P_INIT = ("Send_init", "Ssend_init", "Bsend_init", "Rsend_init", "Recv_init")  # Send_init was refused
for _name in [n for n in dir(MPI.Intracomm) if n.endswith("_init") and n not in _P2P_INIT]:
    setattr(Intercomm, _name, _Unsupported(_name))
