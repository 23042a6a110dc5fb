"""System tests: mpish under a real one-node Slurm started per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "mpi"))  # shell_util: key homes, the shell's env
from slurm_cluster import SlurmCluster, slurm_problem

HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: runs a real one-node Slurm (munged, slurmctld, slurmd; root)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.mpi)
            item.add_marker(pytest.mark.slurm)


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
