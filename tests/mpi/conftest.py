"""tests/mpi run under one MPI per pytest pass: MPISH_TEST_MPI=mpich (default), mpich-tcp or openmpi."""

from __future__ import annotations

import os

import pytest
from shell_util import FLAVOURS, MPI


def pytest_configure(config: pytest.Config) -> None:
    del config
    name = os.environ.get("MPISH_TEST_MPI", "mpich")
    if name not in FLAVOURS:
        raise pytest.UsageError(f"MPISH_TEST_MPI={name}: not one of {', '.join(FLAVOURS)}")
    if not (MPI.bin / "mpiexec").exists():
        raise pytest.UsageError(f"MPISH_TEST_MPI={name}: no {MPI.bin / 'mpiexec'}; run scripts/setup --test")


def pytest_report_header(config: pytest.Config) -> str:
    del config
    return f"tests/mpi under MPISH_TEST_MPI={MPI.name}: {MPI.bin}"
