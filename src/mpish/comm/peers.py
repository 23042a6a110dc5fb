"""Ranks, tags and MPI.PROC_NULL as mpi4py reads them, where MPI itself is not asked.

mpi4py takes a numpy integer for a rank, tag or root (``for dest in np.arange(1, size)``)
and truncates a float (``myid + nprocs / 2``); it reads no buffer and pickles no object
for MPI.PROC_NULL, yet MPI still refuses a bad tag there. A secure communicator does the
same: these helpers are called where its records are sealed, opened or skipped.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

from mpi4py import MPI

from .buffers import byte_view, mpi_error

_PROC_NULL = MPI.PROC_NULL


def as_int(value: Any) -> int:
    """A rank, tag or root as mpi4py reads it: a numpy integer as its value (``tag=np.int64(3)``,
    ``dest`` from ``np.arange``), a float truncated (``myid + nprocs/2``); anything else a
    TypeError, as mpi4py's."""
    if value.__class__ is int:
        return value
    if isinstance(value, float):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"an integer is required for a rank or tag, not {type(value).__name__}") from None


def valid_tag(tag: int, *, receive: bool) -> None:
    """MPI's ERR_TAG unless ``tag`` is 0 to MPI.TAG_UB (or ANY_TAG for a ``receive``): checked
    where MPI is not asked, a call with MPI.PROC_NULL (MPI checks the tag there too)."""
    if (tag < 0 and not (receive and tag == MPI.ANY_TAG)) or tag > _tag_upper_bound():
        raise mpi_error(MPI.ERR_TAG, f"tag {tag} (MPI's are 0 to {_tag_upper_bound()})")


@functools.cache
def _tag_upper_bound() -> int:
    upper = MPI.COMM_WORLD.Get_attr(MPI.TAG_UB)
    return int(upper) if upper is not None else 32767  # the least MPI allows


def peer_buffer(buf: Any, peer: int) -> Any:
    """``buf``, or None when ``peer`` is MPI.PROC_NULL: mpi4py reads no buffer for it (a strided
    view, a read-only or any other object is accepted, and nothing is sent or written). For
    another peer a bare None is mpi4py's TypeError (``[None, 0, MPI.BYTE]`` is an empty buffer)."""
    if peer == _PROC_NULL:
        return None
    if buf is None:
        raise TypeError("message: expecting buffer or list/tuple")
    return buf


def send_bytes(buf: Any, dest: int) -> memoryview:
    """The flat bytes a send to ``dest`` seals (:func:`byte_view`; none for MPI.PROC_NULL)."""
    return byte_view(peer_buffer(buf, dest), writable=False)
