"""``mpish.secure(comm)``: an authenticated, encrypted, replay-proof mpi4py communicator.

One job per module:

- ``setup.py``: :func:`secure` (collective): identities, a job secret down a tree of KK handshakes;
- ``secret.py``: the per-pair, per-direction, per-lane keys derived from that secret;
- ``lane.py``: the record engine (sealing, matching, dropping forged records), with
  ``posted.py`` (posted receives and progress), ``bulk.py`` (messages of several
  records) and ``limits.py`` (what they share);
- ``communicator.py``: :class:`SecureComm`, point-to-point, probes, derived communicators;
- ``messages.py``: :class:`SecureMessage` (Mprobe), objects out of authenticated bytes;
- ``collectives.py``: the collectives, built from authenticated point-to-point records;
- ``reductions.py``: Reduce, Allreduce, Reduce_scatter, Scan (folded at rank 0);
- ``nonblocking.py``: the nonblocking collectives (run at the call, complete requests);
- ``requests.py``: :class:`SecureRequest`, persistent requests, :func:`Waitall` & co. for lists;
- ``handles.py``: secure requests as MPI generalized requests (``MPI.Request.Waitall`` works);
- ``extended.py``: MPICH's extended generalized requests (its waits call mpish back);
- ``buffers.py``: mpi4py buffer arguments as byte views; :class:`Unsupported`.
- ``packing.py``: datatypes with gaps: what travels packed, packed and scattered by MPI.

Records (wire/record.py): one MPI message carries exactly one record, sent with the
buffer API; the lowercase pickle-based mpi4py calls are never used on the internal
communicators, and user objects are unpickled only after their records authenticated.
"""

from __future__ import annotations

from .buffers import MPIError, Unsupported
from .collectives import COLL_TAG, CollectiveAborted
from .communicator import SecureComm
from .lane import RECORD_MAX, SINGLE_MAX
from .limits import ABORT_TAG
from .messages import SecureMessage
from .requests import (
    PersistentRequest,
    SecureRequest,
    Startall,
    Testall,
    Testany,
    Testsome,
    Waitall,
    Waitany,
    Waitsome,
    testall,
    waitall,
    waitany,
)
from .setup import HANDSHAKE_SLOT, PROTOCOL, secure

__all__ = [
    "ABORT_TAG",
    "COLL_TAG",
    "HANDSHAKE_SLOT",
    "PROTOCOL",
    "RECORD_MAX",
    "SINGLE_MAX",
    "CollectiveAborted",
    "MPIError",
    "SecureComm",
    "SecureMessage",
    "PersistentRequest",
    "SecureRequest",
    "Startall",
    "Testall",
    "Testany",
    "Testsome",
    "Unsupported",
    "Waitall",
    "Waitany",
    "Waitsome",
    "secure",
    "testall",
    "waitall",
    "waitany",
]
