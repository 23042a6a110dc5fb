"""SecureComm: mpi4py's intracommunicator methods over authenticated, encrypted records.

Records and progress are the lane's (lane.py), collectives the mixin's (collectives.py).
``Ssend``/``Issend`` (and their object and persistent forms) complete once the receiver's
receive (not a probe) took the message, as in MPI: it acknowledges it (synchronous.py).
Calls from several threads run one at a time under one lock, and may wait on each other's
calls: once a second thread exists, blocking calls poll and let the others run (handles.py).
Everything of the mpi4py API not offered here raises :class:`Unsupported` (both
``NotImplementedError`` and ``AttributeError``), never silent plaintext.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

from ..wire.record import SMALL_RECORD
from . import ending, serial
from .buffers import _PLAIN_BUFFERS as PLAIN_BUFFERS
from .buffers import byte_view, check_fits, each_start, mpi_error, receive_into, set_status, warn_buf
from .derive import Deriving
from .handles import _OWNED, _PY_THREADS, lock_public_methods
from .intercomm import Bridges, Intercomm
from .lane import _ACTIVE, Deferring, Early, Lane, Stats
from .messages import SecureMessage
from .nonblocking import NonBlocking
from .packing import derived, own_datatypes, unpack
from .peers import peer_buffer, send_bytes, valid_tag
from .posted import detach
from .requests import PersistentRequest, SecureRequest
from .secret import LANES, CommSecret
from .settings import LocalSettings, freed_kind
from .synchronous import Acks, issend, ssend
from .topology import Cartesian, Constructors, DistGraph, Graph
from .unsupported import refuse_unoffered

_EMPTY = memoryview(b"")
_NO_BUFFER = object()
_PROC_NULL = MPI.PROC_NULL
_KEPT = PLAIN_BUFFERS - {bytes, bytearray, memoryview}  # numpy's ndarray, if numpy is installed


class SecureComm(LocalSettings, Deriving, Constructors, Bridges, NonBlocking):
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
        self._groups_made: dict[tuple[tuple[int, ...], int], int] = {}  # (members, tag) -> Create_group calls
        self._stats = stats or Stats()
        self.rank: int = p2p.Get_rank()  # attributes, as mpi4py's properties (read-only there)
        self.size: int = p2p.Get_size()
        self._freed = False
        self._bsend_buffer: Any = None
        self._p2p = Lane(p2p, p2p_bulk, keys, LANES[0], self._stats)
        self._deferred = Deferring(self._stats)  # strict errors raised at a collective's end
        self._coll = Lane(coll, coll_bulk, keys, LANES[1], self._deferred)
        self._started: list[Any] = []  # started Ibarriers (nonblocking.py)
        self._p2p.acks = Acks(coll_bulk, keys, self._stats)  # on coll_bulk: synchronous.py says why
        ending.register(self)  # at exit: a receiver of long messages waits for their senders (ending.py)
        # The last small numpy array sent / received into, and its flat byte view (_small_view).
        # Both start as a private object that no caller can pass (None is a legal buffer).
        self._sent: Any = _NO_BUFFER
        self._sent_view = _EMPTY
        self._into: Any = _NO_BUFFER
        self._into_view = _EMPTY

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
        self._alive()
        return self.rank

    def Get_size(self) -> int:
        self._alive()
        return self.size

    def __bool__(self) -> bool:
        return not self._freed  # as mpi4py's: False once freed (equal to MPI.COMM_NULL)

    def __reduce__(self) -> Any:
        raise TypeError(
            f"cannot pickle a secure communicator ({type(self).__name__}): it holds this process's keys"
            " and MPI communicators; send the data, and build secure(...) on each process"
        )

    def Get_group(self) -> Any:
        return self._comms[0].Get_group()

    def Compare(self, comm: Any) -> int:
        """IDENT for this communicator; else MPI's answer for the communicators underneath.

        A secure communicator runs on duplicates of the one it was made from, so it is
        CONGRUENT to that one and to its own Dup (never IDENT). It has no MPI handle of its
        own, deliberately: ``MPI.Comm(secure)`` and the class-level ``MPI.Comm.Compare(secure,
        ...)`` raise TypeError, so no class-level MPI call can send plaintext through it.
        """
        if comm is self:
            return int(MPI.IDENT)
        other = comm._comms[0] if isinstance(comm, SecureComm) else comm
        return int(self._comms[0].Compare(other))

    def Abort(self, errorcode: int = 0) -> None:
        """MPI_Abort; on COMM_WORLD itself when this communicator spans the same processes
        (MPICH's abort of a duplicate ended the job with status 9, not ``errorcode``, in 3 of 6 runs)."""
        whole = self._comms[0].Compare(MPI.COMM_WORLD) in (MPI.IDENT, MPI.CONGRUENT)
        (MPI.COMM_WORLD if whole else self._comms[0]).Abort(errorcode)

    def Is_inter(self) -> bool:
        self._alive()
        return False

    def Is_intra(self) -> bool:
        self._alive()
        return True

    # mpi4py's properties and local settings (no traffic: nothing to protect)
    is_inter = property(Is_inter)
    is_intra = property(Is_intra)
    group = property(Get_group)

    def Attach_buffer(self, buf: Any) -> None:
        """Accepted and kept for Detach_buffer: Bsend never needs it (its sealed copy is the buffer)."""
        self._bsend_buffer = buf

    def Detach_buffer(self) -> Any:
        buf, self._bsend_buffer = self._bsend_buffer, None
        return buf

    def Flush_buffer(self) -> None:
        """Buffered sends are standard sends here: nothing is ever pending in a buffer."""

    def Iflush_buffer(self) -> SecureRequest:
        return SecureRequest(self._p2p)

    def __eq__(self, other: object) -> bool:
        """Equal to MPI.COMM_NULL once freed (as mpi4py's communicators); else identity."""
        if isinstance(other, MPI.Comm):
            return bool(other == MPI.COMM_NULL) and self._freed
        return self is other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = object.__hash__

    # -- point to point: buffers

    def Send(self, buf: Any, dest: int, tag: int = 0) -> None:
        if len(_PY_THREADS) > 1 and not _OWNED():  # the lock, unless this is the only thread
            return _LOCKED["Send"](self, buf, dest, tag)
        lane = self._p2p
        if 0 <= dest < lane.size and tag >= 0 and not _ACTIVE:  # the hot path: small messages
            data = self._sent_view if buf is self._sent else self._small_view(buf, writable=False)
            if data is not None:
                mpi_send = lane.mpi_send  # (bound: wire/shared.py's _pack_head)
                mpi_send(lane.seal_small[dest](data, tag), dest, tag)
                return
        lane.send(send_bytes(buf, dest), dest, tag)

    def _small_view(self, buf: Any, *, writable: bool) -> memoryview | None:
        """byte_view's hot path for a message of fewer than SMALL_RECORD bytes: its flat bytes,
        or None (anything else: byte_view says why it is refused, or the general path sends it).

        A numpy array's view is kept for the next call with that array (the last one sent
        and the last one received into, each): its memory cannot move while the view
        exists (numpy refuses to resize an array whose buffer is exported), and a view
        costs as much as a tenth of a small message's Python work. The price: the array
        is kept alive and cannot be resized until another array takes its place (or the
        communicator is freed).
        """
        kind: type = buf.__class__
        if kind not in PLAIN_BUFFERS:
            return None
        view = memoryview(buf)
        if not view.c_contiguous or (writable and view.readonly):
            return None
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        if len(view) >= SMALL_RECORD:
            return None
        if kind in _KEPT:
            if writable:
                self._into, self._into_view = buf, view
            else:
                self._sent, self._sent_view = buf, view
        return view

    def Ssend(self, buf: Any, dest: int, tag: int = 0) -> None:
        """Synchronous: returns once the receiver's receive took the message (synchronous.py)."""
        ssend(self._p2p, send_bytes(buf, dest), dest, tag)

    def Bsend(self, buf: Any, dest: int, tag: int = 0) -> None:
        """Buffered: returns at once, as MPI's does once the message is in the attached buffer
        (both ranks Bsend, then both Recv: no deadlock). Its sealed records are mpish's own copy
        and go on in the background, so no attached buffer is used or needed; a Bsend larger than
        it, which MPI refuses (ERR_BUFFER), is sent. It was a Send: a ring of Bsends of 8 MB
        deadlocked where raw MPI completes (helper-134)."""
        detach(*self._p2p.isend(send_bytes(buf, dest), dest, tag))

    Rsend = Send

    def Recv(
        self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> None:
        if len(_PY_THREADS) > 1 and not _OWNED():
            return _LOCKED["Recv"](self, buf, source, tag, status)
        if buf is self._into and buf.flags.writeable:  # numpy's own flag, as memoryview reads it
            s, t, n, _ = self._p2p.recv(source, tag, self._into_view)
        else:
            buf = peer_buffer(buf, source)
            sink = self._small_view(buf, writable=True)
            spec = None if sink is not None else derived(buf)  # gaps: received packed, scattered by MPI
            if sink is None:
                sink = byte_view(buf, writable=True) if spec is None else memoryview(bytearray(spec[1]))
            s, t, n, _ = self._p2p.recv(source, tag, sink)
            if spec is not None:
                unpack(sink[:n], spec[0])
        if status is not None:
            set_status(status, s, t, n)

    def Isend(self, buf: Any, dest: int, tag: int = 0) -> SecureRequest:
        requests, buffers = self._p2p.isend(send_bytes(buf, dest), dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers)

    def Issend(self, buf: Any, dest: int, tag: int = 0) -> SecureRequest:
        requests, buffers, ack = issend(self._p2p, send_bytes(buf, dest), dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers, ack=ack)

    Ibsend = Irsend = Isend

    def Irecv(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> SecureRequest:
        sink, scatter = receive_into(peer_buffer(buf, source))
        return SecureRequest(self._p2p, posted=self._p2p.post(source, tag, sink), unpack=scatter)

    # -- persistent requests: the buffer is read (sealed) at each Start

    def Send_init(self, buf: Any, dest: int, tag: int = 0) -> PersistentRequest:
        data = each_start(peer_buffer(buf, dest), writable=False)
        self._p2p.sealer_for(dest, tag)  # a bad rank or tag raises here, as MPI does
        isend = self.Isend  # bound now: a request outlives its communicator's Free (MPI's)
        data, held = own_datatypes(data)  # the program may free its datatype now
        return PersistentRequest(self._p2p, lambda: isend(data, dest, tag), held)

    def Ssend_init(self, buf: Any, dest: int, tag: int = 0) -> PersistentRequest:
        data = each_start(peer_buffer(buf, dest), writable=False)
        self._p2p.sealer_for(dest, tag)
        issend = self.Issend
        data, held = own_datatypes(data)
        return PersistentRequest(self._p2p, lambda: issend(data, dest, tag), held)

    Bsend_init = Send_init
    Rsend_init = Send_init

    def Recv_init(self, buf: Any, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> PersistentRequest:
        data = each_start(peer_buffer(buf, source), writable=True)
        valid_tag(tag, receive=True)  # a bad source or tag raises here, as MPI's Recv_init
        if source not in (MPI.ANY_SOURCE, MPI.PROC_NULL) and not 0 <= source < self.size:
            raise mpi_error(MPI.ERR_RANK, f"rank {source}, in a communicator of {self.size}")
        irecv = self.Irecv
        data, held = own_datatypes(data)
        return PersistentRequest(self._p2p, lambda: irecv(data, source, tag), held)

    def Isendrecv(
        self,
        sendbuf: Any,
        dest: int,
        sendtag: int = 0,
        recvbuf: Any = None,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
    ) -> SecureRequest:
        sink, scatter = receive_into(peer_buffer(recvbuf, source))
        posted = self._p2p.post(source, recvtag, sink)
        requests, buffers = self._p2p.isend(send_bytes(sendbuf, dest), dest, sendtag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers, posted=posted, unpack=scatter)

    def Isendrecv_replace(
        self,
        buf: Any,
        dest: int,
        sendtag: int = 0,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
    ) -> SecureRequest:
        sink, scatter = receive_into(peer_buffer(buf, source))  # a read-only one raises before any send
        data = memoryview(bytes(send_bytes(buf, dest)))  # sealed at once: buf is free
        requests, buffers = self._p2p.isend(data, dest, sendtag)
        posted = self._p2p.post(source, recvtag, sink)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers, posted=posted, unpack=scatter)

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
        self._p2p.exchange(send_bytes(sendbuf, dest), dest, sendtag,
                           lambda: self.Recv(recvbuf, source, recvtag, status))

    def Sendrecv_replace(
        self,
        buf: Any,
        dest: int,
        sendtag: int = 0,
        source: int = MPI.ANY_SOURCE,
        recvtag: int = MPI.ANY_TAG,
        status: Any = None,
    ) -> None:
        if derived(buf) is None:
            byte_view(peer_buffer(buf, source), writable=True)  # a read-only one raises before any send
        self._p2p.exchange(send_bytes(buf, dest), dest, sendtag,  # sealed at once: buf is free
                           lambda: self.Recv(buf, source, recvtag, status))

    def Probe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        self._probe(source, tag, status, block=True)
        return True

    def Iprobe(self, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None) -> bool:
        return self._probe(source, tag, status, block=False) is not None

    def _probe(self, source: int, tag: int, status: Any, *, block: bool) -> Early | None:
        if source == MPI.PROC_NULL:
            valid_tag(tag, receive=True)  # MPI's ERR_TAG for a bad one, as raw MPI checks it for PROC_NULL
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
        if len(_PY_THREADS) > 1 and not _OWNED():
            return _LOCKED["send"](self, obj, dest, tag)
        data = MPI.pickle.dumps(obj) if dest != _PROC_NULL else b""  # serial.dumps's, as bytes
        lane = self._p2p
        if len(data) < SMALL_RECORD and 0 <= dest < lane.size and tag >= 0 and not _ACTIVE:
            mpi_send = lane.mpi_send  # the hot path, as Send's
            mpi_send(lane.seal_small[dest](data, tag), dest, tag)
        else:
            lane.send(memoryview(data), dest, tag)

    def ssend(self, obj: Any, dest: int, tag: int = 0) -> None:
        self.Ssend(serial.dumps(obj, dest), dest, tag)


    def recv(
        self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG, status: Any = None
    ) -> Any:
        if len(_PY_THREADS) > 1 and not _OWNED():
            return _LOCKED["recv"](self, buf, source, tag, status)
        limit = None if buf is None else warn_buf(buf)
        s, t, n, data = self._p2p.recv(source, tag, None)
        if status is not None:
            set_status(status, s, t, n)
        check_fits(n, limit)
        # Authenticated bytes from a peer holding an authorized key; None: empty, or PROC_NULL.
        return serial.loads(data) if data else None

    def isend(self, obj: Any, dest: int, tag: int = 0) -> SecureRequest:
        requests, buffers = self._p2p.isend(serial.dumps(obj, dest), dest, tag)
        return SecureRequest(self._p2p, sends=requests, buffers=buffers)

    def issend(self, obj: Any, dest: int, tag: int = 0) -> SecureRequest:
        return self.Issend(serial.dumps(obj, dest), dest, tag)

    ibsend = isend

    def bsend(self, obj: Any, dest: int, tag: int = 0) -> None:
        """Buffered, as :meth:`Bsend`: returns once the object is pickled and sealed."""
        detach(*self._p2p.isend(serial.dumps(obj, dest), dest, tag))

    def irecv(self, buf: Any = None, source: int = MPI.ANY_SOURCE, tag: int = MPI.ANY_TAG) -> SecureRequest:
        limit = None if buf is None else warn_buf(buf)
        return SecureRequest(self._p2p, posted=self._p2p.post(source, tag, None), is_object=True, limit=limit)

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
        limit = warn_buf(recvbuf)
        request = self.isend(sendobj, dest, sendtag)
        inner = MPI.Status()
        obj = self.recv(None, source, recvtag, inner)
        request.Wait()
        set_status(status, inner.Get_source(), inner.Get_tag(), inner.Get_count(MPI.BYTE))
        check_fits(inner.Get_count(MPI.BYTE), limit)
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

    def Free(self) -> None:
        self._alive()  # a second Free: ERR_COMM, as raw MPI's
        ending.unregister(self)
        for lane in (self._p2p, self._coll):
            lane.free()
        self._freed = True
        self.__class__ = freed_kind(type(self))


class SecureCartcomm(Cartesian, SecureComm):
    """A secure Cartesian grid (topology.py): ``Create_cart`` of a secure communicator."""


class SecureGraphcomm(Graph, SecureComm):
    """A secure graph (topology.py): ``Create_graph`` of a secure communicator."""


class SecureDistgraphcomm(DistGraph, SecureComm):
    """A secure distributed graph (topology.py): ``Create_dist_graph(_adjacent)``."""


class SecureIntercomm(Intercomm, SecureComm):
    """A secure intercommunicator (intercomm.py): ``Create_intercomm`` of a secure communicator."""


SecureComm._kinds = {"Create_cart": SecureCartcomm, "Create_graph": SecureGraphcomm}
SecureComm._kinds.update(Create_intercomm=SecureIntercomm, Merge=SecureComm, Split=SecureComm)
for _call in ("Create_dist_graph", "Create_dist_graph_adjacent"):
    SecureComm._kinds[_call] = SecureDistgraphcomm
refuse_unoffered(SecureComm)  # the topologies inherit the refusals of what they do not offer
# secure(comm) of a communicator with a topology: its Dups keep it, and so does the secure one
BY_TOPOLOGY = {MPI.CART: SecureCartcomm, MPI.GRAPH: SecureGraphcomm, MPI.DIST_GRAPH: SecureDistgraphcomm}

# One thread at a time in secure code (handles.py); the hot methods lock only with a second thread.
_LOCKED = lock_public_methods(SecureComm, hot=("Send", "Recv", "send", "recv"))
for _kind in (SecureCartcomm, SecureGraphcomm, SecureDistgraphcomm, SecureIntercomm):
    lock_public_methods(_kind)
