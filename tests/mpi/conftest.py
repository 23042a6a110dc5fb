"""tests/mpi run under one MPI per pytest pass: MPISH_TEST_MPI=mpich (default), mpich-tcp or openmpi."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shell_util import FLAVOURS, MPI, MPISH, make_home, shell_env
from terminal import Person, at_terminal


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


@pytest.fixture
def person(tmp_path: Path) -> Iterator[Person]:
    """A person at the console of ``mpish -n 2`` on a pseudo-terminal (its own key home)."""
    env = shell_env(make_home(tmp_path / "home"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    with at_terminal(MPISH, ["-n", "2"], env, str(tmp_path)) as at:
        yield at
