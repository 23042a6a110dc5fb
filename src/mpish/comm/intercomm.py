"""Secure intercommunicators: ``Create_intercomm`` of a secure communicator (``mpi4py.futures``'
``MPICommExecutor`` is built on one).

Theory of operation
-------------------
Keys. An intercommunicator joins two groups, each with a secure intracommunicator of its
own, and a peer communicator that holds both leaders; it must be a secure one. The two
leaders each draw 32 random bytes and exchange them over the peer communicator (as
authenticated, encrypted records: nobody else learns them), and each leader broadcasts
both halves to its group over its own secure communicator. The intercommunicator's secret
and id are ``HKDF(low half, "mpish.comm intercomm" || high half)``, where the low half is
that of the leader with the lower rank in the peer communicator. For the record keys
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
reduction of the other group's contributions, folded in rank order. Each rank sends to
every rank of the other group directly (no local communicator is needed; fine for the
small groups an intercommunicator usually joins). ``Ibarrier`` runs the barrier at the
call. The other collectives, ``Create``/``Split`` and topologies raise ``Unsupported``;
``Dup`` and ``Merge`` work.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

from mpi4py import MPI

from ..wire.record import SESSION_SIZE
from .buffers import Unsupported, byte_view, mpi_error, typed_spec
from .collectives import COLL_TAG, _dumps, _loads
from .lane import Lane, Stats, wait_all
from .requests import SecureRequest
from .secret import SECRET_SIZE, CommSecret, InterSecret
from .unsupported import _Unsupported

_HALF = 32


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
        halves: Any = None
        if self.rank == local_leader:
            if not hasattr(peer_comm, "_keys"):
                halves = "the peer communicator of Create_intercomm must be a secure one (mpish.secure)"
            else:
                mine = os.urandom(_HALF)
                theirs = peer_comm.sendrecv(mine, remote_leader, tag, None, remote_leader, tag)
                if not isinstance(theirs, bytes) or len(theirs) != _HALF:
                    halves = "the other group's leader sent no key half"
                else:
                    halves = (mine, theirs, peer_comm.rank < remote_leader)
        halves = self.bcast(halves, local_leader)
        if isinstance(halves, str):
            raise Unsupported(halves)
        mine, theirs, low = halves
        comms = tuple(
            c.Create_intercomm(
                local_leader, peer_comm._comms[2] if self.rank == local_leader else c, remote_leader, tag
            )
            for c in self._comms
        )
        n_local, n_remote = comms[0].Get_size(), comms[0].Get_remote_size()
        low_half, high_half = (mine, theirs) if low else (theirs, mine)
        secret, ident = self._keys.protocol.hash.hkdf(low_half, b"mpish.comm intercomm" + high_half, 2)
        keys = InterSecret(
            self._keys.protocol,
            secret[:SECRET_SIZE],
            ident[:SESSION_SIZE],
            (0 if low else n_remote) + comms[0].Get_rank(),
            n_local + n_remote,
            n_local if low else 0,
        )
        return self._kinds["Create_intercomm"](comms, keys, self._stats)


class Intercomm:
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
        self._p2p.send(memoryview(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)), dest, tag)

    Bsend = Rsend = Send
    bsend = send

    # -- collectives (module doc)

    def _remotes(self) -> range:
        return range(self._coll.size)

    def _to_every_remote(self, data: memoryview) -> list[Any]:
        requests = []
        for peer in self._remotes():
            requests.extend(self._coll.isend(data, peer, COLL_TAG)[0])
        return requests

    def Barrier(self) -> None:
        requests = self._to_every_remote(memoryview(b""))
        try:
            for peer in self._remotes():
                self._c_recv_bytes(peer)
        finally:
            wait_all(requests)

    barrier = Barrier

    def Ibarrier(self) -> SecureRequest:
        self.Barrier()
        return SecureRequest(self._coll)

    ibarrier = Ibarrier

    def _root_role(self, root: int) -> str:
        if root == MPI.ROOT:
            return "send"
        if root == MPI.PROC_NULL:
            return "none"
        if not 0 <= root < self._coll.size:
            raise mpi_error(MPI.ERR_ROOT, f"invalid root {root} for a remote group of {self._coll.size}")
        return "receive"

    def Bcast(self, buf: Any, root: int = 0) -> None:
        role = self._root_role(root)
        if role == "send":
            wait_all(self._to_every_remote(byte_view(buf, writable=False)))
        elif role == "receive":
            self._c_recv_into(byte_view(buf, writable=True), root)

    def bcast(self, obj: Any, root: int = 0) -> Any:
        role = self._root_role(root)
        if role == "send":
            wait_all(self._to_every_remote(_dumps(obj)))
        elif role == "receive":
            return _loads(self._c_recv_bytes(root))
        return None

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any = MPI.SUM) -> None:
        send = byte_view(sendbuf, writable=False)
        recv = byte_view(recvbuf, writable=True)[: len(send)]
        requests = self._to_every_remote(send)
        try:
            acc: bytearray | None = None
            incoming = bytearray(len(send))
            for peer in self._remotes():
                self._c_recv_into(memoryview(incoming), peer)
                if acc is None:
                    acc, incoming = incoming, bytearray(len(send))
                    continue
                # Reduce_local(in, inout): inout = in op inout (rank order: acc op incoming)
                op.Reduce_local(typed_spec(sendbuf, acc, len(send)), typed_spec(sendbuf, incoming, len(send)))
                acc, incoming = incoming, acc
            if acc is not None:
                recv[:] = acc
        finally:
            wait_all(requests)

    def allreduce(self, sendobj: Any, op: Any = MPI.SUM) -> Any:
        requests = self._to_every_remote(_dumps(sendobj))
        try:
            result: Any = None
            for index, peer in enumerate(self._remotes()):
                item = _loads(self._c_recv_bytes(peer))
                result = item if index == 0 else op(result, item)
            return result
        finally:
            wait_all(requests)

    # -- new communicators

    def Dup(self, info: Any = None) -> Any:
        self._derived += 1
        comms = tuple(c.Dup() for c in self._comms)
        keys = self._keys.child(struct.pack(">Q", self._derived) + b"inter_dup")
        return type(self)(comms, keys, self._stats)

    Clone = Dup

    def Merge(self, high: bool = False) -> Any:
        """The intracommunicator of both groups (collective over both)."""
        self._derived += 1
        comms = tuple(c.Merge(high) for c in self._comms)
        base = self._keys.child(struct.pack(">Q", self._derived) + b"merge")
        keys = CommSecret(base.protocol, base.secret, base.ident, comms[0].Get_rank(), comms[0].Get_size())
        return self._kinds["Merge"](comms, keys, self._stats)

    def Disconnect(self) -> None:
        self.Free()  # type: ignore[attr-defined]


for _name in ("Gather", "gather", "Gatherv", "Scatter", "scatter", "Scatterv", "Allgather", "allgather",
              "Allgatherv", "Alltoall", "alltoall", "Alltoallv", "Alltoallw", "Reduce", "reduce",
              "Reduce_scatter", "Reduce_scatter_block", "Scan", "scan", "Exscan", "exscan", "Create",
              "Create_group", "Split", "Split_type", "Create_cart", "Create_graph", "Create_dist_graph",
              "Create_dist_graph_adjacent", "Create_intercomm", "Dup_with_info", "Ibcast", "Igather",
              "Igatherv", "Iscatter", "Iscatterv", "Iallgather", "Iallgatherv", "Ialltoall", "Ialltoallv",
              "Ialltoallw", "Ireduce", "Iallreduce", "Ireduce_scatter_block", "Ireduce_scatter", "Iscan",
              "Iexscan", "Cart_map", "Graph_map"):
    setattr(Intercomm, _name, _Unsupported(_name))
for _name in [n for n in dir(MPI.Intracomm) if n.endswith("_init") and not n.endswith("send_init")]:
    if _name != "Recv_init":
        setattr(Intercomm, _name, _Unsupported(_name))
