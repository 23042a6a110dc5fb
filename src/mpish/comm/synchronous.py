"""Synchronous sends (``Ssend``, ``Issend``, ``ssend``, ``issend``, ``Ssend_init``): complete
only once the matching *receive* took the message, as MPI specifies.

Theory of operation
-------------------
MPI completes a synchronous send once a matching receive has started to receive the
message; a probe does not complete it. MPI's own synchronous mode cannot give that here:
a probe of a secure communicator authenticates a message by receiving it out of MPI
(lane.py), which would complete MPI's ``Issend`` at the probe. So the receiver says when
it received, with an authenticated acknowledgement:

1. The sender seals the message's first record with :data:`FLAG_SYNC` (in the header,
   so authenticated with the record: record.py), posts it with a standard ``Isend``, and
   notes ``(dest, tag, counter)`` of that record as pending (:meth:`Acks.expect`).
2. The receiver's *receive* of that record (a blocking ``Recv``, a posted ``Irecv``
   completed by any call or by the progress thread, the receive of a message a probe or
   ``Mprobe`` took out of MPI) seals an acknowledgement: a record on the ``ack`` lane,
   with the receiver's own keys and counters (``key(receiver, sender, "ack")``, session
   ``H(id || "ack")``: secret.py), channel 0, whose 12-byte body names the first record's
   ``(tag, counter)``; it is sent with ``Isend`` on the collective lane's bulk
   communicator, tag :data:`ACK_TAG`. A probe never acknowledges: it keeps the debt
   with the message it took (``Early.ack``), paid by the receive that delivers it.
3. The sender completes the send once an acknowledgement that authenticates names a
   pending ``(dest, tag, counter)``; every other one is dropped and counted.

Why a forged, replayed or moved acknowledgement never completes a send:

- Forged: the acknowledgement is an AEAD record under the key of the direction
  receiver -> sender of the ``ack`` lane; without the communicator's secret nobody makes
  one that opens (a rank of the job can: the trust unit of secret.py).
- Moved: its header names the session (communicator and lane), sender and receiver, all
  authenticated, and the opener is chosen by the MPI source: an acknowledgement of
  another communicator or pair, or a data record moved to :data:`ACK_TAG` (another
  lane's session and key), fails the checks; an acknowledgement moved onto a data lane
  fails there for the same reason.
- Replayed: the ``ack`` lane's record of accepted counters refuses one already accepted;
  and an acknowledgement naming a send already acknowledged, or one not sent yet (a guessed
  later counter), names no pending send and is refused. Record counters never repeat per
  direction (one counter for every tag of a lane: wire/shared.py), so the ``(tag,
  counter)`` named identifies exactly one message: one genuine acknowledgement completes
  exactly the send whose first record its receiver received.
- Every refused acknowledgement goes to the lane's ``Stats.reject`` (``rejected``, the
  ``on_reject`` callback), as a refused data record does; in strict mode its error is raised
  by the synchronous send that completes next, once its own acknowledgement came (its
  message was received: a program that retried the failed send must not deliver it twice).

:data:`ACK_TAG` on the collective bulk communicator is never matched by anything else:
that communicator is only received from with :data:`collectives.COLL_TAG` and explicit
sources (bulk.py's drain), so no new communicator (and no setup cost) is needed.

Progress. The acknowledgement is sent the moment the receive takes the message, from
whatever call does that, and never waits on the sender (an ``Isend`` of 72 bytes; the
records are kept until MPI has sent them). The sender takes acknowledgements in every
``Test``/``Wait`` of the request (and the progress thread of handles.py does, while MPI
waits on the request's handle); a blocking ``Ssend`` or ``Wait`` blocks in MPI (an
``Mprobe`` of an acknowledgement) unless posted receives need progress (posted.py's
``_ACTIVE``), in which case it polls and progresses them, so ``Irecv`` to itself then
``Ssend`` completes. As in MPI, an ``Ssend`` to a rank that never receives blocks, and a
request of an ``Issend`` whose message was probed, or that was cancelled (sends are never
cancelled here: requests.py), stays pending. Without ``MPI_THREAD_MULTIPLE`` there is no
progress thread: a message matched by a posted ``Irecv`` while its receiver waits in a raw
MPI call is acknowledged only at the receiver's next secure call.

Cost: nothing on standard sends and receives (their records have no flags and take the
hot paths unchanged: a flag is looked at only where flags are set). A synchronous send
costs one record back, as MPI's own synchronous mode costs a message back. A message a
rank sent to itself is acknowledged in place (its sender is the same lane, and its record
authenticated as this rank's): no record, and the send is complete as soon as the receive
returns, as MPI's is (mpi4py's testManyISSendAndRecv tests that with ``MPI.Request.Testall``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpi4py import MPI

from ..transport.mpi import discard, probed_size
from ..wire.errors import RemoteProtocolError
from ..wire.noise import TAGLEN
from ..wire.record import FLAG_SYNC, HEADER_SIZE, RecordType
from .limits import RECORD_ERRORS, Stats
from .peers import as_int
from .posted import _ACTIVE, PerPeer, progress, wait_all
from .secret import CommSecret

if TYPE_CHECKING:
    from .lane import Lane

__all__ = ["ACK_TAG", "FLAG_SYNC", "Acks", "Pending", "acknowledge", "issend", "owed", "ssend"]

ACK_TAG = 3  # acknowledgements, on the collective lane's bulk communicator (module doc)
ACK_LANE = b"ack"  # their keys and session (secret.py)
_ACK = struct.Struct(">IQ")  # body: the acknowledged first record's tag and counter
ACK_RECORD = HEADER_SIZE + _ACK.size + TAGLEN  # every acknowledgement is this long (72 bytes)
_FLAGS_OFFSET = 2  # record.py's header layout: the flags byte, and the counter
_COUNTER = struct.Struct(">Q")
_COUNTER_OFFSET = HEADER_SIZE - 12
_PRUNE = 32  # acknowledgement sends kept before the finished ones are dropped
_ORPHANS: list[tuple[Any, bytes | bytearray]] = []  # sends of freed communicators' acknowledgements


class Acks:
    """A point-to-point lane's acknowledgements: those it owes (sent) and those it awaits."""

    def __init__(self, comm: Any, keys: CommSecret, stats: Stats) -> None:
        self.comm = comm  # the collective lane's bulk communicator (module doc)
        self.rank = keys.rank
        self.stats = stats
        self.sealers: PerPeer[Any] = PerPeer(lambda peer: keys.sealer(ACK_LANE, peer))
        self.openers: PerPeer[Any] = PerPeer(lambda peer: keys.opener(ACK_LANE, peer))
        self.pending: set[tuple[int, int, int]] = set()  # (dest, tag, counter) awaiting their ack
        self._sending: list[tuple[Any, bytes | bytearray]] = []  # (Isend, record) until MPI is done
        self._prune = _PRUNE
        self._status = MPI.Status()
        self.kept: BaseException | None = None  # strict mode: a refused one's error (_reject)

    # -- the receiver's side

    def send(self, dest: int, tag: int, counter: int) -> None:
        """Acknowledge the message whose first record from ``dest`` was (tag, counter)."""
        if dest == self.rank:  # a message to itself: its sender is this very lane, no record needed
            self.pending.discard((dest, tag, counter))
            return
        record = self.sealers[dest].seal(_ACK.pack(tag, counter), channel=0)
        self._sending.append((self.comm.Isend([record, MPI.BYTE], dest, ACK_TAG), record))
        if len(self._sending) >= self._prune:
            self._sending = [sent for sent in self._sending if not sent[0].Test()]
            self._prune = max(_PRUNE, 2 * len(self._sending))

    def free(self) -> None:
        """Keep the records of acknowledgements still being sent alive (the communicator goes)."""
        _ORPHANS[:] = [sent for sent in _ORPHANS if not sent[0].Test()]
        _ORPHANS.extend(self._sending)
        self._sending = []

    # -- the sender's side

    def expect(self, dest: int, tag: int, counter: int) -> Pending:
        key = (dest, tag, counter)
        self.pending.add(key)
        return Pending(self, key)

    def poll(self) -> None:
        """Take every acknowledgement that has arrived (never blocks)."""
        status = self._status
        while (message := self.comm.Improbe(MPI.ANY_SOURCE, ACK_TAG, status)) is not None:
            self._take(message, status)

    def wait(self, key: tuple[int, int, int]) -> None:
        """Until ``key``'s acknowledgement arrived: blocking in MPI, or polling while posted
        receives need progress (module doc)."""
        status = self._status
        while key in self.pending:
            if _ACTIVE:
                self.poll()
                if key in self.pending:
                    progress()
            else:
                self._take(self.comm.Mprobe(MPI.ANY_SOURCE, ACK_TAG, status), status)

    def _take(self, message: Any, status: Any) -> None:
        """Receive one matched acknowledgement; accept it only if it authenticates and names a
        pending send (module doc), else drop and count it."""
        source, count = status.Get_source(), probed_size(status)
        if count != ACK_RECORD:
            discard(message, count)
            error = f"an acknowledgement of {count} bytes from rank {source}, not {ACK_RECORD}"
            self._reject(RemoteProtocolError(error))
            return
        record = bytearray(count)
        message.Recv([record, MPI.BYTE])
        try:
            rtype, flags, channel, _, body = self.openers[source].open_fields(record)
            tag, counter = _ACK.unpack(body)
            key = (source, tag, counter)
            if rtype != RecordType.DATA or flags or channel or key not in self.pending:
                raise RemoteProtocolError(
                    f"an acknowledgement from rank {source} of no pending synchronous send "
                    f"(tag {tag}, record {counter})"
                )
        except RECORD_ERRORS as exc:
            self._reject(exc)
            return
        self.pending.discard(key)

    def _reject(self, exc: BaseException) -> None:
        """Count a refused acknowledgement. In strict mode its error is kept, and raised by the
        synchronous send that completes next (Pending.arrived): raised at once, it left the
        send's own acknowledgement unread, and a program that sent again, not knowing whether
        its message had been received, delivered it twice (helper-129)."""
        try:
            self.stats.reject(exc)
        except BaseException as error:
            if self.kept is None:
                self.kept = error


class Pending:
    """A synchronous send's acknowledgement, awaited (SecureRequest asks it)."""

    __slots__ = ("acks", "error", "key")

    def __init__(self, acks: Acks, key: tuple[int, int, int]) -> None:
        self.acks = acks
        self.key = key
        self.error: BaseException | None = None  # strict mode: what the completed send raises

    def arrived(self, *, block: bool) -> bool:
        """True once the acknowledgement arrived (``block``: wait for it). In strict mode a
        refused acknowledgement's error goes to the send that completes first (``error``), which
        raises it where its outcome reaches the program (ssend; SecureRequest's Wait/Test): raised
        here, a poll of the progress thread, which raises nothing, dropped it (helper-132)."""
        acks = self.acks
        if self.key in acks.pending:
            if block:
                acks.wait(self.key)
            else:
                acks.poll()
        if self.key in acks.pending:
            return False
        if acks.kept is not None and self.error is None:
            self.error, acks.kept = acks.kept, None
        return True


def issend(lane: Lane, data: memoryview, dest: int, tag: int) -> tuple[list[Any], list[Any], Pending | None]:
    """Post a synchronous send: (MPI requests, record buffers, the acknowledgement awaited;
    None for MPI.PROC_NULL, which completes at once)."""
    dest, tag = as_int(dest), as_int(tag)
    sealer = lane.sealer_for(dest, tag)
    if sealer is None:
        return [], [], None
    acks = lane.acks
    assert acks is not None, "synchronous sends go on the point-to-point lane"
    pending = acks.expect(dest, tag, sealer.next_counter(tag))  # before the record can be received
    try:
        requests, buffers = lane.isend(data, dest, tag, synchronous=True)
    except BaseException:
        acks.pending.discard(pending.key)
        raise
    return requests, buffers, pending


def ssend(lane: Lane, data: memoryview, dest: int, tag: int) -> None:
    """Blocking synchronous send: returns once the receiver received the message."""
    requests, _buffers, pending = issend(lane, data, dest, tag)  # the records live until we return
    wait_all(requests)
    if pending is not None:
        pending.arrived(block=True)
        if pending.error is not None:
            raise pending.error


def acknowledge(lane: Lane, source: int, tag: int, counter: int) -> None:
    """A receive took the synchronous message whose first record from ``source`` was (tag, counter)."""
    if lane.acks is None:  # authenticated, so from a rank of the job: its bug
        raise RemoteProtocolError(f"a synchronous record from rank {source} on the collective lane")
    lane.acks.send(source, tag, counter)


def owed(lane: Lane, record: bytearray | memoryview, source: int, tag: int) -> Callable[[], None] | None:
    """For a probe: what the receive of this (authenticated) first record owes its sender,
    if it is synchronous (an acknowledgement); None otherwise."""
    if not record[_FLAGS_OFFSET] & FLAG_SYNC:
        return None
    counter = _COUNTER.unpack_from(record, _COUNTER_OFFSET)[0]
    return functools.partial(acknowledge, lane, source, tag, counter)
