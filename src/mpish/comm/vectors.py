"""The buffers of the v-collectives (Gatherv, Scatterv, Allgatherv, Alltoallv, Alltoallw):
a buffer, counts and displacements per rank, in mpi4py's forms.

A datatype with gaps (a padded struct, a resized type: a particle exchange's) is taken as
gapped.py takes it in the block collectives: the items the counts and displacements reach
are packed by MPI inside this process, so item ``k`` is bytes ``k * size`` of the packed data,
the collective moves those bytes, and a receive buffer's are scattered back once it is done
(what no block reached keeps its value: the receive buffer was packed first). Before
2026-12-08 such a buffer raised ``Unsupported`` here (a porter's particle migration).
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

from .buffers import Unsupported, _is_datatype, datatype_of, parse
from .gapped import Scatter, _Unpacking
from .packing import _contiguous, _reaches_past, inferred_count, pack


def vector_spec(buf: Any) -> tuple[Any, Any, Any, Any]:
    """(buffer, counts, displacements, datatype) of a v-collective buffer argument, as given
    (None where left out): mpi4py's forms ``buf``, ``[buf, dtype]``, ``[buf, counts]``,
    ``[buf, (counts, displs)]``, ``[buf, counts, dtype]``, ``[buf, (counts, displs), dtype]``,
    ``[buf, counts, displs, dtype]``."""
    counts: Any = None
    displs: Any = None
    datatype: Any = None
    if isinstance(buf, (list, tuple)):
        if len(buf) == 2:
            buf, counts = buf
            if _is_datatype(counts):
                counts, datatype = None, counts
            elif isinstance(counts, tuple):
                counts, displs = counts
        elif len(buf) == 3:
            buf, counts, datatype = buf
            if isinstance(counts, tuple):
                counts, displs = counts
        elif len(buf) == 4:
            buf, counts, displs, datatype = buf
        else:
            raise ValueError("message: expecting 2 to 4 items")
    if buf is MPI.IN_PLACE or buf is MPI.BOTTOM:
        raise Unsupported("mpish.secure does not support MPI.IN_PLACE / MPI.BOTTOM here")
    return buf, counts, displs, datatype


def _layout(counts: Any, displs: Any, size: int, entries: int) -> tuple[list[int], list[int]]:
    """Counts and displacements in items, with mpi4py's defaults: counts may be one int for
    all, none: the ``entries`` split evenly; displacements default to the packed layout, and
    one int is a stride."""
    if counts is None:
        counts = [entries // size + (entries % size > k) for k in range(size)]
    elif isinstance(counts, int):
        counts = [counts] * size
    counts = [int(c) for c in counts]
    if displs is None:
        displs, offset = [], 0
        for c in counts:
            displs.append(offset)
            offset += c
    elif isinstance(displs, int):
        displs = [displs * k for k in range(size)]
    displs = [int(d) for d in displs]
    if len(counts) != size or len(displs) != size:
        raise ValueError(f"v-collective: expected {size} counts and displacements")
    if any(c < 0 or d < 0 for c, d in zip(counts, displs, strict=True)):
        raise ValueError("v-collective: negative counts or displacements")
    return counts, displs


def vector_view(buf: Any, size: int, *, writable: bool) -> tuple[memoryview, list[int], list[int]]:
    """(flat bytes, counts in bytes, displacements in bytes) of a v-collective buffer argument
    of a gap-free datatype (:func:`vector_spec`'s forms)."""
    base, counts, displs, datatype = vector_spec(buf)
    flat, _, itemsize = parse(base if datatype is None else [base, datatype], writable=writable, entries=True)
    counts, displs = _layout(counts, displs, size, len(flat) // itemsize)
    byte_counts = [c * itemsize for c in counts]
    byte_displs = [d * itemsize for d in displs]
    for c, d in zip(byte_counts, byte_displs, strict=True):
        if c + d > len(flat):
            raise ValueError("v-collective: counts and displacements exceed the buffer")
    return flat, byte_counts, byte_displs


def vector_landing(buf: Any, size: int, *, writable: bool
                   ) -> tuple[memoryview, list[int], list[int], Scatter | None]:
    """:func:`vector_view`, datatypes with gaps included (module doc), and what scatters a
    receive buffer's packed bytes to their places once received (None: nothing to do)."""
    base, counts, displs, datatype = vector_spec(buf)
    datatype = datatype_of(datatype) if datatype is not None else None
    if datatype is None or base is None or _contiguous(datatype):
        return (*vector_view(buf, size, writable=writable), None)
    entries = inferred_count(base, datatype) if counts is None else 0
    counts, displs = _layout(counts, displs, size, entries or 0)
    items = max((c + d for c, d in zip(counts, displs, strict=True) if c), default=0)
    _reaches_past(base, items, datatype)
    if writable:
        parse([base, 0, MPI.BYTE], writable=True)  # a read-only receive buffer: mpi4py's error
    item = datatype.Get_size()
    data = pack([base, items, datatype], items * item)
    scatter = _Unpacking(data, [base, items, datatype.Dup()]) if writable else None
    return data, [c * item for c in counts], [d * item for d in displs], scatter


def typed_vector_view(msg: Any, size: int, *, writable: bool) -> tuple[memoryview, list[int], list[int]]:
    """(flat bytes, counts in bytes, displacements in bytes) of an ``Alltoallw`` message:
    ``[buf, (counts, displs), datatypes]`` or ``[buf, counts, displs, datatypes]``, with
    displacements in bytes and one contiguous datatype per peer."""
    if not isinstance(msg, (list, tuple)) or len(msg) not in (3, 4):
        raise ValueError("Alltoallw: expecting [buf, (counts, displs), datatypes]")
    if len(msg) == 3:
        buf, (counts, displs), datatypes = msg
    else:
        buf, counts, displs, datatypes = msg
    if buf is MPI.BOTTOM or buf is MPI.IN_PLACE:
        raise Unsupported("mpish.secure does not support MPI.BOTTOM (absolute addresses) here")
    flat = parse(buf, writable=writable)[0]
    byte_counts, byte_displs = [], []
    for count, displ, datatype in zip(counts, displs, datatypes, strict=True):
        datatype = datatype_of(datatype)
        if not _contiguous(datatype):
            raise Unsupported("mpish.secure supports contiguous datatypes only (pack the data first)")
        byte_counts.append(int(count) * datatype.Get_size())
        byte_displs.append(int(displ))
    if len(byte_counts) != size:
        raise ValueError(f"Alltoallw: expected {size} counts, displacements and datatypes")
    for c, d in zip(byte_counts, byte_displs, strict=True):
        if c < 0 or d < 0 or c + d > len(flat):
            raise ValueError("Alltoallw: counts and displacements exceed the buffer")
    return flat, byte_counts, byte_displs
