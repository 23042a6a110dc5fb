"""What the record engine's modules share: record sizes, the MPI library's quirk, counters,
and messages already taken out of MPI (by a probe).

Forged traffic (THREAT-MODEL "a forged record may be dropped and counted"): a record
that fails any check is one of :data:`RECORD_ERRORS`; the engine passes it to
:meth:`Stats.reject`, which counts it (``comm.rejected``), logs it, hands it to the
optional ``on_reject`` callback, and raises it only in strict mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mpi4py import MPI

from mpish.report import Diagnostics

from ..wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from ..wire.noise import TAGLEN
from ..wire.record import HEADER_SIZE, MAX_RECORD
from .buffers import mpi_truncate

log = Diagnostics("mpish.comm")

RECORD_MAX = MAX_RECORD  # the largest record (wire.record's bound, under the lane's name)
SINGLE_MAX = 64 * 1024  # a message of at most this many bytes is one record
FIRST_MAX = HEADER_SIZE + SINGLE_MAX + TAGLEN  # the largest first record
RECORD_ERRORS = (AuthenticationError, ReplayError, RemoteProtocolError)
# Open MPI 5 corrupts its heap or crashes when it truncates a large message (btl/sm), and
# does not report a truncated receive from the process itself: there every blocking
# receive matches the message first (Mprobe) and drops one larger than any record whole.
# A receive posted by the user (Irecv) is a real MPI receive still (lane.py's doc).
MATCH_FIRST = MPI.Get_library_version().startswith("Open MPI")

Envelope = tuple[int, int]  # (source, tag) of a received message
Result = tuple[int, int, int, bytes | bytearray | None]  # source, tag, nbytes, data (if no sink)
# The tag a lane reports for an abort notice of a collective (collectives.py): a record flagged
# ABORT on the collective tag. Negative, as no message's tag can be: it was 2, and a user's
# message of tag 2 taken by a probe was taken for a notice and never written into the buffer.
ABORT_TAG = -32000


@dataclass
class Stats:
    """What a communicator (and those derived from it) saw of forged traffic."""

    rejected: int = 0  # records that failed a check and were dropped
    strict: bool = False  # raise on a rejected record instead of dropping it
    on_reject: Callable[[BaseException], None] | None = field(default=None, repr=False)

    def reject(self, exc: BaseException) -> None:
        """Count a rejected record; raise it in strict mode. Once per error: in strict mode a
        continuation record's error, raised where it was found (bulk.py), passes through the
        receive that called it, which must not count it again."""
        if getattr(exc, "_mpish_rejected", False):
            if self.strict:
                raise exc
            return
        exc._mpish_rejected = True  # type: ignore[attr-defined]
        self.rejected += 1
        log.warning("mpish.secure: dropped a record: %s", exc)
        if self.on_reject is not None:
            self.on_reject(exc)
        if self.strict:
            raise exc


class Deferring:
    """The collective lane's view of a communicator's :class:`Stats` (counted and reported as
    one): in strict mode the error of a rejected record is kept, and the collective raises it
    once it is complete (nonblocking.py). Raised where the record was found, it left the
    genuine record queued, and the next collective took it: every later one a collective
    behind, with no error (helper-108)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.kept: BaseException | None = None

    def reject(self, exc: BaseException) -> None:
        try:
            self.stats.reject(exc)
        except BaseException as error:  # strict: for the end of the collective
            if self.kept is None:
                self.kept = error

    def take(self) -> BaseException | None:
        kept, self.kept = self.kept, None
        return kept


@dataclass
class Early:
    """A message already taken out of MPI and authenticated (by a probe)."""

    source: int
    tag: int
    data: bytes | bytearray
    ack: Callable[[], None] | None = None  # a synchronous message: its receive acknowledges it
    aborted: bool = False  # an abort notice: received, it reports ABORT_TAG (not its MPI tag)


def deliver_early(early: Early, sink: memoryview | None) -> Result:
    """Receive a probed message (into ``sink``, or as bytes when None)."""
    if early.ack is not None:  # received now, even if it does not fit (MPI's receive matched it)
        ack, early.ack = early.ack, None
        ack()
    n, tag = len(early.data), ABORT_TAG if early.aborted else early.tag
    if sink is None or early.aborted:  # (a notice's body is never written into the sink)
        return early.source, tag, n, early.data
    if n > len(sink):
        raise mpi_truncate(f"message of {n} bytes, receive buffer of {len(sink)}")
    sink[:n] = early.data
    return early.source, tag, n, None
