"""Receives posted by the user (Irecv) and the progress that MPI's guarantees need.

Theory of operation
-------------------
Progress (MPI's guarantee: every program that completes on the raw communicator
completes here). A sender posts every record of a message (``Isend``) before it blocks
on anything, so once a receiver has its first record, the continuation records are
all on their way and draining them cannot wait on the sender. Receives of first
records are real MPI receives (``Irecv``), posted when the user posts them. Lanes with
posted receives are listed in :data:`_ACTIVE`; every blocking call (Send, Recv, Wait,
Probe, collectives) of any secure communicator polls instead of blocking while that
list is not empty, and completes any posted receive whose first record arrived,
draining its continuation records: so a sender waiting for them never waits on a
receiver that is blocked elsewhere. Without posted receives the calls block in MPI.

A forged first record consumed by a posted ``Irecv`` costs no genuine message: a new MPI
receive is posted, last in MPI's queue and in the lane's list (``_post_again``), so the list
(of slots: an MPI receive, its landing and ``order``) stays in MPI's matching order, which the
flush (``flush_posted``: a message's earlier matching receives are processed first, so records
are opened in counter order) relies on. The receives of the robbed one's envelope each move
one slot on (the robbed one takes the next one's, the last the new one), so receives of one
envelope still get the messages in the order they were posted, as without the forged record;
a flush in progress finds its record's receive by its landing. Receives whose envelopes differ
but overlap are not moved: after a forged record they may complete in another order than MPI
would have matched them (README), which can leave a receive waiting for a message another took
(a pattern where it can match only some of them). A blocking
receive made while receives are posted is, under MPICH, a posted receive itself, last in
that list (``_poll_first``): its own MPI receive, outside the list, stood ahead of a robbed
receive's new one and took the message the robbed one was owed; the flush then opened the
robbed one's later message first and refused the earlier one as a replay, and the blocking
receive waited for ever (a security review). Under Open MPI it takes its message with a
matched probe, after the posted ones; a posted receive of its envelope robbed meanwhile is
given that message, and the blocking receive takes over its slot (``_hand_back``). A probe
(Probe, Iprobe, Mprobe...) that matched a message a robbed posted receive is owed gives it to
that receive and probes again (``give_probed``), under either MPI. A
``Cancel`` that MPI could not do because the receive had matched a forged record cancels
the receive posted again (requests.py).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from mpi4py import MPI

from .buffers import matches
from .landings import LANDINGS
from .limits import FIRST_MAX, MATCH_FIRST, RECORD_ERRORS, Deferring, Early, Result, Stats, deliver_early
from .peers import as_int, valid_tag

T = TypeVar("T")

_ORDER = itertools.count(1)  # MPI receives of first records, in the order they were posted
_ACTIVE: set[PostedReceives] = set()  # lanes with posted receives, progressed by every blocking call
_DETACHED: list[tuple[list[Any], Any]] = []  # the MPI sends of freed requests, and what they send
# receives whose request was freed (Request.Free): the progress thread completes them too
FREED: list[tuple[PostedReceives, PostedRecv]] = []


def progress() -> None:
    """Complete every posted receive (of any secure communicator) whose first record arrived."""
    if len(_DETACHED) >= _SWEEP_AT[0]:
        _sweep()
    for lane in list(_ACTIVE):
        lane.progress()


def progress_freed() -> bool:
    """Complete the freed receives whose first record arrived (into their buffers, as MPI's
    freed receive); True if any did. The progress thread's work (handles.py): a program that
    waits in MPI's calls, or computes, makes no secure call that would progress them, and a
    sender of a long message waits for them to drain it."""
    still = [(lane, posted) for lane, posted in FREED
             if not posted.done and not lane.complete(posted, block=False)]
    moved = len(still) != len(FREED)
    FREED[:] = still
    return moved


def detach(sends: list[Any], keep: Any) -> None:
    """A freed or dropped request's MPI sends go on in the background (``Request.Free``, as
    MPI's): their records (``keep``, mpish's own sealed copies) stay alive until MPI is done
    with them. Swept by progress once their number doubled since the last sweep (a sweep per
    detach made N detaches cost N^2 tests), and at exit (ending.py)."""
    _DETACHED.append((sends, keep))
    if len(_DETACHED) >= _SWEEP_AT[0]:
        _sweep()


_SWEEP_AT = [64]


def _sweep() -> None:
    _DETACHED[:] = [(sends, keep) for sends, keep in _DETACHED if not MPI.Request.Testall(sends)]
    _SWEEP_AT[0] = max(64, 2 * len(_DETACHED))


def finish_detached(deadline: float) -> None:
    """At exit: the detached sends completed, progressing MPI, until ``deadline``."""
    while _DETACHED and time.monotonic() < deadline:
        _sweep()
        if _DETACHED:
            time.sleep(0.001)


def wait_all(requests: list[Any]) -> None:
    """Wait for MPI requests, progressing posted receives meanwhile (see module doc)."""
    if not _ACTIVE:
        MPI.Request.Waitall(requests)
        return
    while not MPI.Request.Testall(requests):
        progress()


def _same_envelope(one: PostedRecv, other: PostedRecv) -> bool:
    return one.source == other.source and one.tag == other.tag


class PerPeer(dict[int, T]):
    """Per-peer objects made on first use by ``make(peer)`` (indexed like a list by rank)."""

    def __init__(self, make: Callable[[int], T]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, peer: int) -> T:
        rank = as_int(peer)  # np.int64(2) finds 2 (equal hash); 1.0 or 0.5 as mpi4py reads them
        value = self[peer] = self._make(rank) if rank is peer else self[rank]
        return value


class PostedRecv:
    """An Irecv posted on a lane: the MPI request of its first record and what became of it."""

    __slots__ = ("buf", "done", "error", "obj", "order", "request", "result", "sink", "source", "tag", "then")

    def __init__(self, source: int, tag: int, sink: memoryview | None) -> None:
        self.source = source
        self.tag = tag
        self.sink = sink  # user buffer, or None for a pickled object
        self.buf: bytearray | memoryview = bytearray(0)
        self.request: Any = None  # with buf and order: its slot (the MPI receive; _post_again)
        self.order = 0  # when that MPI receive was posted (the list is in this order)
        self.done = False
        self.result: tuple[int, int, int] | None = None  # (source, tag, nbytes)
        self.obj: bytes | bytearray | None = None
        self.error: BaseException | None = None
        self.then: Callable[[int], None] | None = None  # a freed receive's last step (its byte count)


class PostedReceives:
    """The Lane's methods for posted receives (a mixin: the state is the Lane's)."""

    comm: Any
    stats: Stats | Deferring
    posted: list[PostedRecv]
    early: list[Early]
    freeing = False  # freed by the program: the communicators go once no receive is posted

    if TYPE_CHECKING:

        def process(
            self, record: memoryview | bytearray, source: int, tag: int, sink: memoryview | None
        ) -> Result: ...

        def _oversized(self, exc: Any) -> None: ...

        def _within(self, message: Any, status: Any, limit: int) -> Any: ...

        def take_early(self, source: int, tag: int) -> Early | None: ...

        def keep(self, record: memoryview | bytearray, source: int, tag: int) -> Early | None: ...

        def free(self) -> None: ...

    def _poll_first(self, source: int, tag: int, sink: memoryview | None) -> Result | None:
        """A blocking receive while posted receives need progress (they come first): its
        message, or None if a forged record was dropped (the caller receives again).

        Under MPICH the receive is a posted one itself, last in the list (module doc); under
        Open MPI a matched probe takes the message (limits.MATCH_FIRST)."""
        if not MATCH_FIRST:
            return self._completed(self.post(source, tag, sink))
        buf = bytearray(FIRST_MAX)  # the caller keeps a view of it
        status = MPI.Status()
        while True:
            message = self.comm.Improbe(source, tag, status)
            if message is None:
                progress()
            elif self._within(message, status, FIRST_MAX) is not None:
                message.Recv([buf, MPI.BYTE], status)
                break
        s, t = status.Get_source(), status.Get_tag()
        self.flush_posted(s, t, None)
        # Posted receives of this envelope still waiting lost their slot to a forged record in
        # the flush, and were posted again after this message was matched: it is the first's.
        owed = [p for p in self.posted if p.source == source and p.tag == tag and p.request is not None]
        result: Result | None = None
        error: Exception | None = None
        before = len(self.early)
        try:
            result = self.process(memoryview(buf)[: status.Get_count(MPI.BYTE)], s, t,
                                  owed[0].sink if owed else sink)
        except RECORD_ERRORS as exc:
            try:
                self.stats.reject(exc)
            except BaseException:  # strict mode: a message kept whole goes to a receive still waiting
                self._give_kept(before)
                raise
            return None
        except Exception as exc:
            if not owed:
                raise
            error = exc
        if not owed:
            assert result is not None
            return result
        mine = PostedRecv(source, tag, sink)
        self._hand_back(owed, mine)
        if result is not None:
            owed[0].result, owed[0].obj = result[:3], result[3]
        self._finish(owed[0], error)
        return self._completed(mine)

    def _completed(self, posted: PostedRecv) -> Result:
        self.complete(posted, block=True)
        if posted.error is not None:
            raise posted.error
        assert posted.result is not None
        return (*posted.result, posted.obj)

    def _hand_back(self, owed: list[PostedRecv], mine: PostedRecv) -> None:
        """The first of ``owed`` takes a message received outside the list: each of the others
        takes the slot of the one before it, and the blocking receive ``mine`` the last's."""
        slots = [(p.request, p.buf, p.order, self.posted.index(p)) for p in owed]
        for receive, (request, buf, order, at) in zip([*owed[1:], mine], slots, strict=True):
            receive.request, receive.buf, receive.order = request, buf, order
            self.posted[at] = receive
        owed[0].request, owed[0].buf = None, bytearray(0)

    def owed_probed(self, source: int, tag: int) -> list[PostedRecv]:
        """Posted receives owed a message from (source, tag) that a probe matched, flushed:
        those still waiting on an MPI receive. MPI gives an arriving message to a waiting
        receive before any probe sees it, so each of these lost its slot to a forged record
        (the flush posted it again, after the message was matched): the first is owed it."""
        return [p for p in self.posted if p.request is not None and matches(p.source, p.tag, source, tag)]

    def give_probed(self, owed: list[PostedRecv], record: memoryview, source: int,
                    tag: int) -> tuple[bytearray, int, int, int] | None:
        """Give the authenticated message whose first record a probe took to ``owed[0]``
        (:meth:`owed_probed`, as :meth:`_poll_first` gives a blocking receive's), so the
        probe reports the next one, as MPI's would (a security review: a Probe took the
        message a posted Irecv was owed, which then got the next one); :meth:`_shift` moves
        the others on."""
        result: Result | None = None
        error: Exception | None = None
        try:
            result = self.process(record, source, tag, owed[0].sink)
        except RECORD_ERRORS:  # a forged record: raised, nothing moved
            raise
        except Exception as exc:  # the message is first's still (a truncation: its Wait raises it)
            error = exc
        return self._shift(owed, result, error)

    def _give_kept(self, before: int) -> None:
        """Strict mode: a receive raised a forged record met inside a genuine long message,
        which was kept whole in ``early`` (past ``before`` entries): the first posted receive
        waiting for its envelope takes it (else only a receive posted later could, and the
        posted ones got the messages after it first: helper-139), the others move on
        (:meth:`_shift`); a message the spare slot had taken is kept in ``early`` in its turn."""
        early = self.early[before:]
        owed = self.owed_probed(early[0].source, early[0].tag) if early else []
        if not owed or any(not q.done and q.request is None and _same_envelope(q, owed[0])
                           for q in self.posted):  # one is being completed further up the stack
            return  # (its own record taken already: the kept message stays in early, as before)
        self.early.remove(early[0])
        result: Result | None = None
        error: Exception | None = None
        try:
            result = deliver_early(early[0], owed[0].sink)
        except Exception as exc:  # a truncation: the receive's Wait raises it
            error = exc
        taken = self._shift(owed, result, error)
        if taken is not None:
            record, s, t, order = taken
            self.flush_posted(s, t, order)  # the slots before the spare's matched messages before its
            self.keep(record, s, t)

    def _shift(self, owed: list[PostedRecv], result: Result | None,
               error: Exception | None) -> tuple[bytearray, int, int, int] | None:
        """``owed[0]`` completes with ``result`` (or ``error``), out of its slot: each later
        receive of its envelope takes the slot of the one before it; the last slot is cancelled,
        and a message it had taken already is returned (record, source, tag, the slot's order):
        given to the receive it is owed to, or kept."""
        first = owed[0]
        chain = [p for p in owed if _same_envelope(p, first)]  # (a slot's MPI receive has its envelope)
        slots = [(p.request, p.buf, p.order, self.posted.index(p)) for p in chain]
        for receive, (request, buf, order, at) in zip(chain[1:], slots, strict=False):
            receive.request, receive.buf, receive.order = request, buf, order
            self.posted[at] = receive
        spare, landing, spare_order, at = slots[-1]
        del self.posted[at]
        first.request, first.buf = None, bytearray(0)
        if result is not None:
            first.result, first.obj = result[:3], result[3]
        self._finish(first, error)
        status = MPI.Status()
        taken = None
        try:
            spare.Cancel()
            spare.Wait(status)
            if not status.Is_cancelled():  # it matched a message meanwhile: given on by the caller
                copied = bytearray(landing[: status.Get_count(MPI.BYTE)])
                taken = copied, status.Get_source(), status.Get_tag(), spare_order
        except MPI.Exception as exc:  # a forged message longer than any record: dropped, counted
            self._oversized(exc)
        if isinstance(landing, memoryview):
            LANDINGS.give(landing)
        if not self.posted:
            _ACTIVE.discard(self)
        return taken

    def post(self, source: int, tag: int, sink: memoryview | None) -> PostedRecv:
        """Irecv of a first record (a real MPI Irecv, so MPI's matching order holds)."""
        source, tag = as_int(source), as_int(tag)  # np.int64, a float: as mpi4py reads them
        posted = PostedRecv(source, tag, sink)
        if source == MPI.PROC_NULL:  # completes at once, empty, as in MPI (a bad tag: ERR_TAG)
            valid_tag(tag, receive=True)
            posted.result, posted.done = (MPI.PROC_NULL, MPI.ANY_TAG, 0), True
            return posted
        early = self.take_early(source, tag)
        if early is not None:
            try:
                s, t, n, data = deliver_early(early, sink)
                posted.result, posted.obj = (s, t, n), data
            except Exception as exc:
                posted.error = exc
            posted.done = True
            return posted
        # Room for any first record: a genuine message too long for ``sink`` is received
        # whole, authenticated and drained, then reported as MPI's ERR_TRUNCATE; an MPI
        # truncation of this receive is always a forged message.
        posted.buf = LANDINGS.take()
        posted.request = self.comm.Irecv([posted.buf, MPI.BYTE], source, tag)
        posted.order = next(_ORDER)
        self.posted.append(posted)
        _ACTIVE.add(self)
        return posted

    def complete(self, posted: PostedRecv, *, block: bool, once: bool = False) -> bool:
        """Complete ``posted`` if its first record arrived (or wait for it when ``block``).

        ``once``: stop after one record was processed even if it was rejected (flush).
        """
        status = MPI.Status()
        while not posted.done:
            request = posted.request
            if request is None:  # its first record is being processed further up the stack
                return False
            try:
                if once or (block and len(self.posted) == 1 and len(_ACTIVE) == 1):
                    request.Wait(status)  # matched already (flush), or nothing else to progress
                elif not request.Test(status):
                    if not block:
                        return False
                    progress()
                    continue
            except MPI.Exception as exc:
                try:
                    self._oversized(exc)
                except BaseException as error:  # strict mode, or another MPI error
                    self._finish(posted, error)
                    return True
                self._post_again(posted)
                if once:
                    return False
                continue
            posted.request = None
            self._first_arrived(posted, status)
            if once:
                break
        return posted.done

    def _first_arrived(self, posted: PostedRecv, status: Any) -> None:
        s, t, count = status.Get_source(), status.Get_tag(), status.Get_count(MPI.BYTE)
        landing = posted.buf
        self.flush_posted(s, t, posted.order)
        if posted.buf is not landing:  # a forged record in the flush moved this slot (_post_again)
            posted = next(p for p in self.posted if p.buf is landing)
        before = len(self.early)
        try:
            _, t, n, data = self.process(memoryview(landing)[:count], s, t, posted.sink)  # (ABORT_TAG)
        except RECORD_ERRORS as exc:
            try:
                self.stats.reject(exc)
            except BaseException as error:
                self._finish(posted, error)
                self._give_kept(before)
                return
            self._post_again(posted)  # dropped: wait for the genuine message
            return
        except Exception as exc:
            self._finish(posted, exc)
            return
        posted.result, posted.obj = (s, t, n), data
        self._finish(posted, None)

    def _post_again(self, posted: PostedRecv) -> None:
        """A forged record took ``posted``'s MPI receive (its slot): post a new MPI receive,
        last in MPI's queue and so last in the list; ``posted`` takes the slot of the next
        receive of its envelope, that one the next's, and the last the new one (module doc), so
        each message, arrived or not, goes to the receive MPI would have given it."""
        at = self.posted.index(posted)
        later = [i for i in range(at + 1, len(self.posted)) if _same_envelope(self.posted[i], posted)]
        chain = [posted] + [self.posted[i] for i in later]
        request = self.comm.Irecv([posted.buf, MPI.BYTE], posted.source, posted.tag)
        slots = [(p.request, p.buf, p.order) for p in chain[1:]] + [(request, posted.buf, next(_ORDER))]
        for receive, slot in zip(chain, slots, strict=True):
            receive.request, receive.buf, receive.order = slot
        for receive, i in zip(chain, later, strict=False):
            self.posted[i] = receive
        del self.posted[at]
        self.posted.append(chain[-1])

    def _finish(self, posted: PostedRecv, error: BaseException | None) -> None:
        posted.error, posted.done = error, True
        then, posted.then = posted.then, None
        if then is not None and error is None and posted.result is not None:
            with contextlib.suppress(Exception):  # freed: nobody is there to be told
                then(posted.result[2])  # a datatype with gaps: the bytes go to their places
        if posted in self.posted:
            self.posted.remove(posted)
        if not self.posted:
            _ACTIVE.discard(self)
            if self.freeing:  # Comm.Free came while receives were pending: now it can be done
                self.free()
        if isinstance(posted.buf, memoryview):
            LANDINGS.give(posted.buf)
        posted.buf = bytearray(0)

    def cancel(self, posted: PostedRecv) -> bool:
        """Cancel ``posted``'s MPI receive; True if cancelled. A message it had matched is processed as
        usual: a forged or oversized one is dropped, counted, and the receive posted again is cancelled."""
        while not posted.done and posted.request is not None:
            status = MPI.Status()
            try:
                posted.request.Cancel()
                posted.request.Wait(status)
            except MPI.Exception as exc:  # longer than any record: MPI's truncation, as complete()
                try:
                    self._oversized(exc)
                except BaseException as error:  # strict mode, or another MPI error: Wait raises it
                    posted.request = None
                    self._finish(posted, error)
                    return False
                self._post_again(posted)
                continue
            posted.request = None
            if status.Is_cancelled():
                self._finish(posted, None)  # off the lane, its landing given back
                posted.result = (MPI.ANY_SOURCE, MPI.ANY_TAG, 0)
                return True
            self._first_arrived(posted, status)
        return False

    def flush_posted(self, source: int, tag: int, until: int | None) -> None:
        """Complete the receives whose MPI receive was posted before the one of order
        ``until`` (None: before now) and whose envelope matches (source, tag).

        MPI matched them before the message from (source, tag) just received, so waiting
        on them cannot block, and processing them first keeps counters in send order. A
        forged record among them moves receives between slots (``_post_again``), so the
        list is searched again after each: the slots, not the receives, are in MPI's order.
        """
        bound = next(_ORDER) if until is None else until
        while True:
            for posted in self.posted:  # in slot order
                if posted.order >= bound:
                    return
                if posted.request is not None and matches(posted.source, posted.tag, source, tag):
                    break
            else:
                return
            self.complete(posted, block=True, once=True)  # the slot is gone or posted again after

    def progress(self) -> None:
        for posted in list(self.posted):
            if not posted.done:
                self.complete(posted, block=False)
