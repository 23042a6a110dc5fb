"""MPI adapter: one secure record per MPI message, buffer API only, low-CPU waiting.

Theory of operation
-------------------
Records move with the buffer API (``Isend`` of a bytes-like object as ``MPI.BYTE``;
``Improbe`` then ``Message.Recv`` into a buffer of the probed size). No pickle-based
mpi4py call (lowercase ``send``/``recv``/``bcast``) is used: whatever arrives is only
bytes, handed to a :class:`~mpish.wire.channel.SecureChannel` that authenticates it.
A probed size above :data:`MAX_RECORD` is refused before any allocation (the message
is received chunk over chunk into one scratch chunk, and dropped: :func:`discard`). Records are
received into one buffer of MAX_RECORD bytes allocated once per link: :meth:`MpiLink.poll`
returns a view of it, valid until the next poll (every caller authenticates and decodes
a record before polling again), so a 1 MiB record costs no allocation and no zero-fill.

Waiting: MPICH's blocking calls busy-wait, so an idle rank would burn a core. The
adapter therefore never blocks in MPI: :meth:`MpiLink.poll` runs ``Improbe`` and tests
pending sends, and :class:`Backoff` says how long to sleep between empty polls: zero for
a short hot period after the last activity, sleeps are 20 us (a round trip stays well
below a millisecond, and on a small machine the poller does not steal the CPU from the
command it waits for); then the sleep doubles up to :data:`MAX_SLEEP` (10 ms), and after
:data:`IDLE_SECONDS` without a record up to :data:`IDLE_SLEEP` (50 ms): each wake-up
costs ~0.15 ms of CPU (Python's loop, Improbe), so 10 ms sleeps kept an idle server at
1.6% of a core (64 ranks on a node: a core), 50 ms at ~0.3%; the first record after a
quiet spell waits up to 50 ms. :meth:`MpiLink.wait` (the :class:`~mpish.transport.link.Link`
protocol) sleeps for the link's own backoff, which every record sent or received makes
hot again; callers that also wait on descriptors (the shell server's pipe readers) pass
them in, so local events wake them at once and only MPI arrivals see the backoff delay.

Records are received with ``Improbe`` into a buffer of the probed size. Receives posted
ahead (``Irecv`` on ANY_SOURCE into fixed buffers) were tried for the console: no
faster here once large buffers are reused (see :func:`tune_malloc`), and one run in
ten stalled with MPICH 5.0 ch4, so they are not used.

Sending bulk output without an allocation per record: :meth:`MpiLink.record_buffer`
lends a buffer that holds a record of the payload asked for; the caller seals the record
into it and sends it with :meth:`MpiLink.send_buffer`; the buffer goes back to the link's
:class:`BufferPool` once MPI completed that send (never earlier: MPI may read it until
then). A fresh 1 MiB record cost a zero-fill (``bytearray``) per record, ~5% of a
streaming server's CPU. A lent buffer is at most twice the record's size (in steps of
:data:`BUFFER_STEP`): the caller's flow control bounds the *bytes* in flight (the shell's
4 MiB window), and sends of small records can be many. With every buffer 1 MiB, 40 sends
of ~64 KiB records in flight (a command writing as fast as it is read) pinned 40 MiB, and
the buffers the pool could not keep were freed and zero-filled anew (a server streaming
1 GiB peaked at 90-210 MiB RSS, varying run to run; 45-60 MiB now). The pool keeps at most
:data:`POOL_BYTES` of idle buffers; before allocating, finished sends are collected.

Only one thread calls MPI (``MPI_THREAD_FUNNELED`` is enough).
"""

from __future__ import annotations

import bisect
import os
import select
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mpish.wire.errors import TransportBroken, TransportError
from mpish.wire.noise import TAGLEN
from mpish.wire.record import HEADER_SIZE, MAX_RECORD

if TYPE_CHECKING:  # imported at run time by mpi() alone: importing mpi4py.MPI initialises MPI
    from mpi4py import MPI

from .link import Ready
from .memory import tune_malloc

__all__ = [
    "MAX_RECORD", "SHELL_TAG", "Backoff", "BufferPool", "MpiLink", "buffer_size", "discard", "mpi",
    "proc_failed_classes", "tune_malloc",
]

SHELL_TAG = 0x5348  # "SH": the tag of every shell record on the session communicator
HOT_SECONDS = 0.02  # keep polling with the shortest sleep this long after the last activity
HOT_SLEEP = 20e-6  # a real sleep even when hot: spinning would steal the CPU from the work
FIRST_SLEEP = 50e-6
MAX_SLEEP = 0.010
IDLE_SECONDS = 10.0  # after this long without a record, an empty poll ...
IDLE_SLEEP = 0.050  # ... may be followed by this long a sleep (each wake-up costs ~0.15 ms of CPU)
POOL_BYTES = 16 << 20  # idle record buffers kept for reuse, in bytes
BUFFER_STEP = 64 << 10  # record buffers are allocated in multiples of this


def mpi() -> Any:
    """The ``mpi4py.MPI`` module, initialised for one MPI thread (imported late on purpose).

    Typed ``Any``: a module has no static type. Annotate what it returns (``MPI.Intracomm``,
    ``MPI.Request``, ...) with the stubs mpi4py ships, imported under ``TYPE_CHECKING``.
    """
    try:
        import mpi4py
    except ImportError as exc:
        raise TransportError(_NO_MPI.format(exc)) from None
    mpi4py.rc.thread_level = "funneled"
    if "mpi4py.MPI" in sys.modules:
        from mpi4py import MPI

        return MPI
    # UCX (the mpich wheel's netmod) makes its SysV shared memory readable and writable by the
    # user's group (mode 0660, compiled in: mm_sysv.c): a group member attached it, read the
    # ciphertext, then wrote to it and the console died of SIGSEGV. Its POSIX segments are
    # 0600. Off for mpish's own processes, unless the user chose UCX_TLS; read at MPI_Init only,
    # so no command of theirs inherits it.
    unset = "UCX_TLS" not in os.environ
    if unset:
        os.environ["UCX_TLS"] = "^sysv"
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as exc:  # mpi4py's "cannot load MPI library" (+ a line per path)
        raise TransportError(_NO_MPI.format((str(exc).splitlines() or [""])[0])) from None
    finally:
        if unset:
            os.environ.pop("UCX_TLS", None)
    return MPI


_NO_MPI = (
    "MPI mode (-n, mpiexec, srun) needs mpi4py and an MPI library: {}; install them with "
    "pip install 'mpish[mpi]' (mpi4py and the mpich wheel), or build mpi4py against your site's MPI "
    "(pip install --no-binary mpi4py mpi4py, with its mpicc on PATH); `mpish ssh` needs neither"
)


@dataclass
class Backoff:
    """Sleep length between empty polls: 0 while hot, then doubling up to MAX_SLEEP."""

    last_activity: float = field(default_factory=time.monotonic)
    sleep: float = 0.0

    def activity(self) -> None:
        self.last_activity = time.monotonic()
        self.sleep = 0.0

    def next_sleep(self) -> float:
        """How long to wait now; call after a poll that found nothing."""
        quiet = time.monotonic() - self.last_activity
        if quiet < HOT_SECONDS:
            return HOT_SLEEP
        most = MAX_SLEEP if quiet < IDLE_SECONDS else IDLE_SLEEP
        self.sleep = FIRST_SLEEP if self.sleep == 0.0 else min(self.sleep * 2, most)
        return self.sleep

    def wait(self) -> None:
        delay = self.next_sleep()
        time.sleep(delay)


DISCARD_WHOLE = 1 << 20  # an unwanted message up to this size is received whole into a scratch buffer
_SINK_CHUNK = 64 << 10  # larger: received chunk over chunk into one reused chunk (discard)
_SINK: list[bytearray] = []


def probed_size(status: MPI.Status) -> int:
    """A probed message's size in bytes, or -1 if MPI cannot say. MPI_Get_elements_x's, which
    is 64-bit: Open MPI 5 has no MPI_Get_count_c, so mpi4py's Get_count says UNDEFINED
    (-32766) past 2**31 bytes, and that passed every ``size <= limit`` check (helper-127: a
    rogue rank's 2 GiB message, sent from 64 KiB with a datatype of extent 0)."""
    size: int = status.Get_elements(mpi().BYTE)
    return size if size >= 0 else -1


def discard(message: MPI.Message, size: int) -> None:
    """Receive a matched message nobody wants (oversize, forged, left over) and drop it.

    Never truncated: Open MPI 5 copies a long message whole into a smaller receive buffer
    (a rogue rank's 8 MiB message into an empty one: ``free(): invalid pointer``; into
    ``bytearray(0)``, whose buffer is a static of libpython's: the interpreter's globals
    overwritten with the attacker's bytes). Up to :data:`DISCARD_WHOLE` bytes it is received
    into a scratch buffer of its size (``size``: :func:`probed_size`); a larger one with a
    datatype whose 64 KiB chunks all have extent 0, so every chunk lands on one scratch chunk
    of this module's: nothing is allocated for it and nothing is written past that chunk (64
    MiB in ~6 ms on MPICH and Open MPI; a 1-byte type of extent 0 took MPICH 3-4 s). A size
    MPI could not say (-1) is received into 2**31 chunks of room (128 TiB: never truncated).
    """
    MPI = mpi()
    made: list[Any] = []  # every datatype made here, freed whatever happens
    try:
        if 0 <= size <= DISCARD_WHOLE:  # (never bytearray(0), libpython's static: see above)
            message.Recv([bytearray(max(size, 1)), MPI.BYTE])
            return
        if not _SINK:
            _SINK.append(bytearray(_SINK_CHUNK))
        chunks, rest = divmod(size, _SINK_CHUNK) if size >= 0 else ((1 << 31) - 1, 0)
        made.append(MPI.BYTE.Create_contiguous(_SINK_CHUNK))
        parts = [made[0].Create_resized(0, 0), MPI.BYTE.Create_resized(0, 0)]
        made += parts
        made.append(MPI.Datatype.Create_struct([chunks, rest], [0, 0], parts).Commit())
        message.Recv([_SINK[0], 1, made[-1]])
    except MPI.Exception:
        pass  # (an MPI failure here: the message is MPI's to drop)
    finally:
        for datatype in made:
            datatype.Free()


def proc_failed_classes(MPI: Any) -> tuple[int, ...]:
    """MPI's error classes for a failed process (ULFM), those this MPI defines."""
    names = ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING")
    return tuple(getattr(MPI, name) for name in names if hasattr(MPI, name))


class BufferPool:
    """Idle record buffers, best fit first: :meth:`take` finds one that holds ``size``
    bytes and is at most twice :func:`buffer_size` of it (a small record does not pin a
    large buffer while MPI sends it); :meth:`give` keeps at most ``keep`` bytes."""

    def __init__(self, keep: int = POOL_BYTES) -> None:
        self.keep = keep
        self._idle: list[bytearray] = []  # sorted by length
        self.idle_bytes = 0

    def take(self, size: int) -> bytearray | None:
        idle = self._idle
        at = bisect.bisect_left(idle, size, key=len)
        if at == len(idle) or len(idle[at]) > 2 * buffer_size(size):
            return None
        buffer = idle.pop(at)
        self.idle_bytes -= len(buffer)
        return buffer

    def give(self, buffer: bytearray) -> None:
        if self.idle_bytes + len(buffer) <= self.keep:
            bisect.insort(self._idle, buffer, key=len)
            self.idle_bytes += len(buffer)


def buffer_size(size: int) -> int:
    """The length to allocate for a record of ``size`` bytes (a multiple of BUFFER_STEP,
    or MAX_RECORD)."""
    return min(MAX_RECORD, -(-size // BUFFER_STEP) * BUFFER_STEP)


class MpiLink:
    """Send and receive whole records over one communicator on :data:`SHELL_TAG`."""

    def __init__(self, comm: MPI.Comm, tag: int = SHELL_TAG) -> None:
        self.MPI = mpi()
        self.comm = comm
        self.tag = tag
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        # buffers kept until sent, and the pooled buffer (or None) to give back when sent
        self._pending: list[tuple[MPI.Request, bytes | bytearray | memoryview, bytearray | None]] = []
        self._pool = BufferPool()  # idle record buffers (record_buffer, send_buffer)
        self._receive_buffer: bytearray | None = None  # poll(): records land here, one at a time
        self.dropped = 0  # oversize messages refused
        self.process_failures = 0  # failures MPI reported and this link acknowledged (ULFM)
        self._backoff = Backoff()  # wait()'s sleep: hot after every record sent or received
        self.sent_bytes = 0
        self.received_bytes = 0

    def send(self, dest: int, record: bytes | bytearray) -> None:
        """Start sending one record; the buffer is kept until MPI is done with it."""
        try:
            request = self.comm.Isend([record, self.MPI.BYTE], dest, self.tag)
        except self.MPI.Exception as exc:
            raise TransportBroken(f"MPI send to rank {dest} failed: {exc}") from exc
        self._pending.append((request, record, None))
        self.sent_bytes += len(record)
        self._backoff.activity()
        if len(self._pending) > 64:
            self.progress()

    def record_buffer(self, payload: int) -> bytearray:
        """A buffer to seal one record of ``payload`` bytes into, then :meth:`send_buffer`
        (or simply drop it); reused once MPI is done with an earlier send of it."""
        size = HEADER_SIZE + payload + TAGLEN
        buffer = self._pool.take(size)
        if buffer is None and self._pending and self.progress():
            buffer = self._pool.take(size)
        return buffer if buffer is not None else bytearray(buffer_size(size))

    def send_buffer(self, dest: int, buffer: bytearray, size: int) -> None:
        """Start sending the record in ``buffer[:size]`` (a :meth:`record_buffer`); the
        buffer returns to the pool when the send completed."""
        try:
            request = self.comm.Isend([buffer, size, self.MPI.BYTE], dest, self.tag)
        except self.MPI.Exception as exc:
            self._pool.give(buffer)
            raise TransportBroken(f"MPI send to rank {dest} failed: {exc}") from exc
        self._pending.append((request, buffer, buffer))
        self.sent_bytes += size
        self._backoff.activity()
        if len(self._pending) > 64:
            self.progress()

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        for record in records:
            self.send(dest, record)

    def progress(self) -> bool:
        """Test pending sends; True if any completed."""
        if not self._pending:
            return False
        try:
            done = self.MPI.Request.Testsome([r for r, _, _ in self._pending])
        except self.MPI.Exception as exc:
            raise TransportBroken(f"MPI send failed: {exc}") from exc
        if not done:
            return False
        finished = set(done)
        for i in finished:
            pooled = self._pending[i][2]
            if pooled is not None:
                self._pool.give(pooled)
        self._pending = [p for i, p in enumerate(self._pending) if i not in finished]
        return True

    @property
    def sends_pending(self) -> int:
        return len(self._pending)

    def poll(self) -> tuple[int, memoryview] | None:
        """One record that has arrived, as (source rank, a view valid until the next poll)."""
        MPI = self.MPI
        status = MPI.Status()
        try:
            message = self._improbe(status)
            if message is None:
                self.progress()
                return None
            size = probed_size(status)
            source: int = status.Get_source()
            if not 0 <= size <= MAX_RECORD:
                self.dropped += 1
                discard(message, size)
                return None
            if self._receive_buffer is None:
                self._receive_buffer = bytearray(MAX_RECORD)
            view = memoryview(self._receive_buffer)[:size]
            message.Recv([view, MPI.BYTE])
        except MPI.Exception as exc:
            raise TransportBroken(f"MPI receive failed: {exc}") from exc
        self.received_bytes += size
        self._backoff.activity()
        return source, view

    def _improbe(self, status: MPI.Status) -> MPI.Message | None:
        """``Improbe`` on any source; a process failure MPI reports (ULFM) is acknowledged.

        Under Open MPI with fault tolerance on (``mpi_ft_enable``, ``mpirun --with-ft ulfm``)
        a wildcard probe fails with MPI_ERR_PROC_FAILED(_PENDING) once any rank of the
        communicator died, and keeps failing until the failure is acknowledged
        (``MPIX_Comm_failure_ack``). The dead rank itself is found and reported by the
        session (its pid, :attr:`process_failures`); the others go on being heard.
        """
        MPI = self.MPI
        try:
            return self.comm.Improbe(MPI.ANY_SOURCE, self.tag, status)
        except MPI.Exception as exc:
            if exc.Get_error_class() not in proc_failed_classes(MPI):
                raise
            self.comm.Ack_failed()
            self.process_failures += 1
            return self.comm.Improbe(MPI.ANY_SOURCE, self.tag, status)

    def drain(self) -> Iterator[tuple[int, memoryview]]:
        """Every record that has arrived now (at most 64, so other work is not starved)."""
        for _ in range(64):
            item = self.poll()
            if item is None:
                return
            yield item

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (with backoff) until every pending send completed; False on timeout."""
        deadline = time.monotonic() + timeout
        backoff = Backoff()
        while self._pending:
            if self.progress():
                backoff.activity()
            elif time.monotonic() > deadline:
                return False
            else:
                backoff.wait()
        return True

    def wait(self, timeout: float, read_fds: Sequence[int] = (), write_fds: Sequence[int] = ()) -> Ready:
        """Sleep for the backoff (at most ``timeout``), or until a given descriptor is ready:
        MPI has no descriptor to sleep on, so an arrival is seen at the next poll."""
        delay = min(timeout, self._backoff.next_sleep()) if timeout > 0 else 0.0
        if not read_fds and not write_fds:
            if delay:
                time.sleep(delay)
            return [], []
        readable, writable, _ = select.select(read_fds, write_fds, [], delay)
        return readable, writable

    def close(self) -> None:
        """Let pending sends complete (for at most a second), then give up on the rest; the
        communicator belongs to the session, which frees it."""
        self.flush(1.0)
        self.cancel_pending()

    def cancel_pending(self) -> None:
        """Give up on sends that cannot complete (the peer is gone)."""
        for request, _, _ in self._pending:
            try:
                request.Cancel()
                request.Free()
            except self.MPI.Exception:
                pass
        self._pending = []
