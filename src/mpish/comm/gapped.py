"""The buffers of the block collectives (Gather, Scatter, Allgather, Alltoall), datatypes with gaps included.

Theory of operation
-------------------
A block collective's buffer holds ``blocks`` equal blocks: ``[buf, count, datatype]`` (the
count per block, as mpi4py's), ``[buf, datatype]`` (as many items as fit) or a plain buffer.
With a datatype whose bytes are one gap-free run in memory order the blocks are slices of
the buffer's bytes (``buffers.block_view``). With a datatype with gaps (a matrix column, a
resized type, a padded struct: ``packing.derived``) MPI lays block ``k`` at ``k * count``
items of the datatype, so the whole buffer is ``blocks * count`` items of it: those are
packed by MPI inside this process (``packing.pack``, as a point-to-point message's), the
collective moves the packed bytes in blocks of ``count`` items' size, and a receive buffer's
bytes are scattered back (``packing.unpack``) once the collective is done. A receive buffer is
packed first as well: its own block (``MPI.IN_PLACE``) and whatever a shorter block leaves
untouched keep their values, as in MPI. The scattering uses mpish's own copy of the datatype
(MPI lets the program free it once the nonblocking or persistent call started). The span of
the items is checked against the buffer first (``packing._reaches_past``): MPI would read or
write outside it.

Before 2026-12-07 such a buffer raised ``Unsupported`` in these calls (the classic "scatter
the columns of a matrix" of the mpi4py tutorials, helper-128): only point-to-point, ``Bcast``
and ``Alltoallw`` took it.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from .buffers import block_view, byte_view
from .packing import _contiguous, _reaches_past, inferred_count, pack, unpack

Scatter = Callable[[], None]  # a receive buffer's last step: the packed bytes to their places


def landing(buf: Any, blocks: int, *, writable: bool) -> tuple[memoryview, int, Scatter | None]:
    """(bytes, bytes per block, what scatters the bytes into ``buf`` once received or None) of a
    block collective's buffer of ``blocks`` blocks (module doc)."""
    items = _gapped_items(buf, blocks)
    if items is None:
        view, block = block_view(buf, blocks, writable=writable)
        return view, block, None
    datatype = buf[-1]
    _reaches_past(buf[0], items, datatype)
    data = pack([buf[0], items, datatype], items * datatype.Get_size())
    block = len(data) // blocks if blocks else 0
    if not writable:
        return data, block, None
    return data, block, _Unpacking(data, [buf[0], items, datatype.Dup()])


class _Unpacking:
    """A receive buffer's last step, holding mpish's copy of its datatype: freed once the
    bytes are scattered, or when the step is dropped unused (the collective failed)."""

    def __init__(self, data: memoryview, into: list[Any]) -> None:
        self._data = data
        self._into: list[Any] | None = into

    def __call__(self) -> None:
        into, self._into = self._into, None
        if into is not None:
            unpack(self._data, into, free=True)

    def __del__(self) -> None:
        if self._into is not None and not MPI.Is_finalized():
            with contextlib.suppress(MPI.Exception):  # (a finalizer raises nothing)
                self._into[-1].Free()


def one_block(buf: Any, *, writable: bool) -> tuple[memoryview, Scatter | None]:
    """A buffer of one block (a scatter's receive buffer): its bytes, and what scatters them."""
    if _gapped_items(buf, 1) is None:
        return byte_view(buf, writable=writable), None
    data, _, scatter = landing(buf, 1, writable=writable)
    return data, scatter


def _gapped_items(buf: Any, blocks: int) -> int | None:
    """How many items of its datatype ``buf`` holds, if it is ``[buf, count, datatype]`` or
    ``[buf, datatype]`` with a datatype with gaps; else None."""
    if not isinstance(buf, (list, tuple)) or len(buf) not in (2, 3) or not isinstance(buf[-1], MPI.Datatype):
        return None
    datatype = buf[-1]
    if buf[0] is MPI.BOTTOM or buf[0] is None or _contiguous(datatype):
        return None  # (absolute addresses: buffers.parse says what is wrong)
    if len(buf) == 3:
        try:
            count = operator.index(buf[1])  # numpy's integers too, as mpi4py takes them
        except TypeError:
            return None  # (buffers.parse says what is wrong)
        return count * blocks if count >= 0 else None
    items = inferred_count(buf[0], datatype)
    if items is None:
        return None
    if blocks and items % blocks:
        raise ValueError(f"message: cannot infer count, number of entries {items} is not a multiple "
                         f"of required number of blocks {blocks}")
    return items
