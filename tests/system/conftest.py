"""System tests: mpish under a real one-node Slurm started per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # this directory's helper (slurm_cluster)
from slurm_cluster import SlurmCluster, slurm_problem

from marks import mark_directory

pytest_collection_modifyitems = mark_directory(__file__, "mpi", "slurm")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    problem = slurm_problem()
    if problem:  # CI installs both (scripts/setup --test) and runs as root: no skip there
        pytest.skip(f"no Slurm: {problem}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
