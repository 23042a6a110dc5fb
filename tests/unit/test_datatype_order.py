"""Which derived datatypes secure(comm) may send as the bytes lie (comm/packing.py's
_contiguous): gap-free and listed in memory order. Anything not proved so is packed by MPI
(always right); a wrong True sends another order than raw MPI (helper-121: silent wrong data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mpi4py import MPI

from mpish.comm.packing import _contiguous

INT, D = MPI.INT, MPI.DOUBLE

CASES: dict[str, tuple[Callable[[], Any], bool]] = {
    "predefined": (lambda: D, True),
    "duplicate": (lambda: D.Dup(), True),
    "contiguous": (lambda: INT.Create_contiguous(3), True),
    "indexed in order": (lambda: INT.Create_indexed([1, 2], [0, 1]), True),
    "indexed from its second item": (lambda: INT.Create_indexed([2], [1]), True),
    "vector without gaps": (lambda: INT.Create_vector(3, 2, 2), True),
    "hvector without gaps": (lambda: INT.Create_hvector(2, 2, 8), True),
    "struct in order": (lambda: MPI.Datatype.Create_struct([1, 2], [0, 8], [D, INT]), True),
    "whole subarray, C order": (lambda: INT.Create_subarray([2, 3], [2, 3], [0, 0]), True),
    "whole subarray, Fortran order": (
        lambda: INT.Create_subarray([2, 3], [2, 3], [0, 0], order=MPI.ORDER_F), True),
    "resized to its size": (lambda: INT.Create_resized(0, 4), True),
    "hindexed_block in order": (lambda: INT.Create_hindexed_block(1, [0, 4]), True),
    "indexed, two swapped": (lambda: INT.Create_indexed([1, 1], [1, 0]), False),
    "indexed_block, two swapped": (lambda: INT.Create_indexed_block(1, [1, 0]), False),
    "struct declared backwards": (lambda: MPI.Datatype.Create_struct([1, 1], [4, 0], [INT, INT]), False),
    "vector of negative stride": (lambda: INT.Create_vector(2, 1, -1), False),
    "contiguous of a swapped pair": (
        lambda: INT.Create_indexed([1, 1], [1, 0]).Commit().Create_contiguous(2), False),
    "transpose: hvector of columns": (
        lambda: D.Create_vector(3, 1, 3).Commit().Create_hvector(3, 1, 8), False),
    "vector with gaps": (lambda: INT.Create_vector(2, 1, 2), False),
    "part subarray": (lambda: INT.Create_subarray([2, 3], [2, 2], [0, 1]), False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_only_gap_free_types_listed_in_memory_order_are_sent_as_their_bytes_lie(name: str) -> None:
    make, in_order = CASES[name]
    datatype = make()
    if not datatype.is_named:
        datatype.Commit()
    try:
        assert _contiguous(datatype) is in_order
        lower, extent = datatype.Get_true_extent()
        if in_order and lower == 0:  # proved against MPI itself: packing two items changes nothing
            data = bytearray(range(2 * extent))
            packed = bytearray(2 * datatype.Get_size())
            datatype.Pack(data, packed, 0, MPI.COMM_SELF)
            assert packed == data
    finally:
        if not datatype.is_named:
            datatype.Free()
