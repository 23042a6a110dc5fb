"""SecureComm: mpi4py's intracommunicator methods over authenticated, encrypted records.

Records and progress are the lane's (lane.py), collectives the mixin's (collectives.py).
Send and Ssend (and their nonblocking and object forms) share one implementation:
MPI's synchronous mode is not kept (an ``Ssend`` may complete before the receive
starts, as a buffered send does), which no correct program can notice except by timing.
Not thread-safe: like ``MPI_THREAD_SERIALIZED``, one thread at a time per communicator.
Everything of the mpi4py API not offered here raises :class:`Unsupported` (both
``NotImplementedError`` and ``AttributeError``), never silent plaintext.
"""

from __future__ import annotations

import pickle
import struct
import warnings
from typing import Any

from mpi4py import MPI

from ..wire.record import SMALL_RECORD
from .buffers import Unsupported, byte_view, set_status
from .collectives import Collectives
from .lane import _ACTIVE, Early, Lane, Stats, deliver_early
from .requests import SecureRequest
from .secret import LANES, CommSecret


def _loads(data: bytes | bytearray) -> Any:
    return pickle.loads(data)  # noqa: S301 - authenticated bytes from a peer holding an authorized key


def _warn_buf(buf: Any) -> None:
    if buf is not None:
        warnings.warn("the 'buf' argument is deprecated", UserWarning, stacklevel=3)


class SecureMessage:
    """A message matched by ``Mprobe``/``Improbe`` (already authenticated and taken out of MPI)."""

    def __init__(self, lane: Lane, early: Early) -> None:
        self._lane = lane
        self._early: Early | None = early

    def __bool__(self) -> bool:
        return self._early is not None

    def _take(self) -> Early:
        if self._early is None:
            raise ValueError("this message was already received")
        early, self._early = self._early, None
        return early

    def Recv(self, buf: Any, status: Any = None) -> None:
        s, t, n, _ = deliver_early(self._take(), byte_view(buf, writable=True))
        set_status(status, s, t, n)

    def recv(self, status: Any = None) -> Any:
        s, t, n, data = deliver_early(self._take(), None)
        set_status(status, s, t, n)
        assert data is not None
        return _loads(data)

    def Irecv(self, buf: Any) -> SecureRequest:
        request = SecureRequest(self._lane)
        self.Recv(buf)
        return request

    def irecv(self) -> Any:
        return _Done(self.recv())


class _Done:
    """A request that completed when it was made (the irecv of a probed message)."""

    def __init__(self, value: Any) -> None:
        self._value = value
        self._active = True

    def __bool__(self) -> bool:
        return self._active

    def wait(self, status: Any = None) -> Any:
        value, self._value, self._active = self._value, None, False
        return value

    def test(self, status: Any = None) -> tuple[bool, Any]:
        return True, self.wait(status)


class SecureComm(Collectives):
    """An authenticated, encrypted intracommunicator with mpi4py's methods (see the package doc).

    Build one with :func:`mpish.secure`.
    """

    def __init__(
        self, comms: tuple[Any, Any, Any, Any], keys: CommSecret, stats: Stats | None = None
    ) -> None:
        p2p, p2p_bulk, coll, coll_bulk = comms
        self._comms = comms
        self._keys = keys  # this communicator's secret: every pair's keys derive from it (secret.py)
        self._derived = 0  # Dup/Split calls so far (equal on every rank: they are collective)
        self._stats = stats or Stats()
        self.rank: int = p2p.Get_rank()
        self.size: int = p2p.Get_size()
        self._p2p = Lane(p2p, p2p_bulk, keys, LANES[0], self._stats)
        self._coll = Lane(coll, coll_bulk, keys, LANES[1], self._stats)

    # -- introspection

    @property
    def raw(self) -> Any:
        """The internal duplicate that carries the point-to-point records (for tests and attacks)."""
        return self._comms[0]

    @property
    def rejected(self) -> int:
        """Records rejected so far (forged, replayed, moved, malformed, oversized)."""
        return self._stats.rejected

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def Get_group(self) -> Any:
        return self._comms[0].Get_group()

    def Abort(self, errorcode: int = 0) -> None:
        self._comms[0].Abort(errorcode)

    def Is_inter(self) -> bool:
        return False

    def Is_intra(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        raise Unsupported(
            f"{name} is not supported by mpish.secure (only authenticated operations are offered; "
            "use comm.raw explicitly for unprotected traffic)"
        )

    # -- point to point: buffers

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        data = byte_view(buf, writable=False)
        lane = self._p2p
        if len(data) < SMALL_RECORD and 0 <= dest < self.size and tag >= 0 and not _ACTIVE:
            lane.mpi_send(lane.seal_small[dest](data, channel=tag), dest, tag)  # hot path
        else:
            lane.send(data, dest, tag)

    Ssend = Send
    Bsend = Send
    Rsend = Send

    def Recv(
        self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> None:
        s, t, n, _ = self._p2p.recv(source, tag, byte_view(buf, writable=True))
        if status is not None:
            set_status(status, s, t, n)

    def Isend(self, buf: Any, dest: int, tag: int = 0) -> SecureRequest:
        requests, buffers = self._p2p.isend(byte_view(buf, writable=False), dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers)

    Issend = Isend
    Ibsend = Isend
    Irsend = Isend

    def Irecv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> SecureRequest:
        return SecureRequest(self._p2p, posted=self._p2p.post(source, tag, byte_view(buf, writable=True)))

    def Sendrecv(
        self,
        sendbuf: Any,
        dest: int,
        sendtag: int = 0,
        recvbuf: Any = None,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
        status: Any = None,
    ) -> None:
        request = self.Isend(sendbuf, dest, sendtag)
        self.Recv(recvbuf, source, recvtag, status)
        request.Wait()

    def Sendrecv_replace(
        self,
        buf: Any,
        dest: int,
        sendtag: int = 0,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
        status: Any = None,
    ) -> None:
        view = byte_view(buf, writable=True)
        request = self.Isend(bytes(view), dest, sendtag)  # the records are sealed now: buf is free
        self.Recv(buf, source, recvtag, status)
        request.Wait()

    def Probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        self._probe(source, tag, status, block=True)
        return True

    def Iprobe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        return self._probe(source, tag, status, block=False) is not None

    def _probe(self, source: int, tag: int, status: Any, *, block: bool) -> Early | None:
        if source == MPI.PROC_NULL:
            set_status(status, MPI.PROC_NULL, MPI.ANY_TAG, 0)
            return Early(MPI.PROC_NULL, MPI.ANY_TAG, b"")
        early = self._p2p.probe(source, tag, block=block)
        if early is not None:
            set_status(status, early.source, early.tag, len(early.data))
        return early

    def Mprobe(
        self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> SecureMessage:
        return self._message(self._probe(source, tag, status, block=True))

    def Improbe(
        self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> SecureMessage | None:
        early = self._probe(source, tag, status, block=False)
        return None if early is None else self._message(early)

    def _message(self, early: Early | None) -> SecureMessage:
        assert early is not None
        if early in self._p2p.early:
            self._p2p.early.remove(early)
        return SecureMessage(self._p2p, early)

    # -- point to point: objects (unpickled only after the record authenticated)

    def send(self, obj: Any, dest: int, tag: int = 0) -> None:
        self._p2p.send(memoryview(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)), dest, tag)

    ssend = send
    bsend = send

    def recv(
        self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> Any:
        _warn_buf(buf)
        s, t, n, data = self._p2p.recv(source, tag, None)
        set_status(status, s, t, n)
        return None if data is None else _loads(data)  # None: from MPI.PROC_NULL

    def isend(self, obj: Any, dest: int, tag: int = 0) -> SecureRequest:
        requests, buffers = self._p2p.isend(memoryview(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)), dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers)

    issend = isend
    ibsend = isend

    def irecv(self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> SecureRequest:
        return SecureRequest(self._p2p, posted=self._p2p.post(source, tag, None), is_object=True)

    def sendrecv(
        self,
        sendobj: Any,
        dest: int,
        sendtag: int = 0,
        recvbuf: Any = None,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
        status: Any = None,
    ) -> Any:
        _warn_buf(recvbuf)
        request = self.isend(sendobj, dest, sendtag)
        obj = self.recv(None, source, recvtag, status)
        request.Wait()
        return obj

    def probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        return self.Probe(source, tag, status)

    def iprobe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        return self.Iprobe(source, tag, status)

    def mprobe(
        self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> SecureMessage:
        return self.Mprobe(source, tag, status)

    def improbe(
        self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> SecureMessage | None:
        return self.Improbe(source, tag, status)

    # -- new communicators (collective): keys derived from this one's, no new handshake

    def _derive_comm(self, comms: tuple[Any, Any, Any, Any], label: bytes) -> SecureComm:
        """A derived communicator: its secret from this one's and a context every member agrees on.

        The context names this communicator's derivation count, the call and the parent
        rank of the new rank 0, so disjoint groups of one Split never share keys (secret.py).
        """
        self._derived += 1
        group, parent = comms[0].Get_group(), self._comms[0].Get_group()
        leader = MPI.Group.Translate_ranks(group, [0], parent)[0]
        group.Free()
        parent.Free()
        context = struct.pack(">QQ", self._derived, leader) + label
        keys = self._keys.child(context, comms[0].Get_rank(), comms[0].Get_size())
        return SecureComm(comms, keys, self._stats)

    def Dup(self, info: Any = None) -> SecureComm:
        comms = tuple(c.Dup() for c in self._comms)
        return self._derive_comm(comms, b"dup")

    Clone = Dup

    def Split(self, color: int = 0, key: int = 0) -> Any:
        comms = tuple(c.Split(color, key) for c in self._comms)
        return self._child(comms, b"split" + struct.pack(">q", color))

    def Split_type(self, split_type: int, key: int = 0, info: Any = MPI.INFO_NULL) -> Any:
        comms = tuple(c.Split_type(split_type, key, info) for c in self._comms)
        return self._child(comms, b"split_type" + struct.pack(">q", split_type))

    def _child(self, comms: tuple[Any, ...], label: bytes) -> Any:
        if comms[0] == MPI.COMM_NULL:
            self._derived += 1  # stay in step with the ranks that got a communicator
            return MPI.COMM_NULL
        return self._derive_comm(comms, label)

    def Free(self) -> None:
        for lane in (self._p2p, self._coll):
            lane.free()
