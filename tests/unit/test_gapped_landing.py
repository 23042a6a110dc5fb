"""A block collective's receive buffer with a gapped datatype (comm/gapped.py's landing):
mpish's copy of the datatype is freed once the packed bytes are scattered, and also when the
collective failed before scattering them (the step dropped unused: it leaked before)."""

from __future__ import annotations

import gc

import numpy as np
from mpi4py import MPI

from mpish.comm.gapped import landing


def _column_of(matrix: np.ndarray) -> list[object]:
    column = MPI.DOUBLE.Create_vector(matrix.shape[0], 1, matrix.shape[1]).Create_resized(0, 8).Commit()
    return [matrix, 1, column]


def test_landing_scatters_the_received_bytes_then_frees_its_datatype_copy() -> None:
    matrix = np.zeros((2, 3))
    spec = _column_of(matrix)
    data, block, scatter = landing(spec, 3, writable=True)
    assert scatter is not None and block == 16
    copy = scatter._into[-1]  # type: ignore[attr-defined]
    data[:] = np.arange(6, dtype=float).tobytes()
    scatter()
    assert matrix.tolist() == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]  # block k = column k
    assert copy == MPI.DATATYPE_NULL
    spec[-1].Free()  # type: ignore[attr-defined]


def test_landing_frees_its_datatype_copy_when_the_collective_fails_before_scattering() -> None:
    spec = _column_of(np.zeros((2, 3)))
    _, _, scatter = landing(spec, 3, writable=True)
    copy = scatter._into[-1]  # type: ignore[union-attr]
    assert copy != MPI.DATATYPE_NULL
    del scatter
    gc.collect()
    assert copy == MPI.DATATYPE_NULL
    spec[-1].Free()  # type: ignore[attr-defined]
