"""Tests that look at the network: captures with tcpdump, two hosts in network namespaces."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "mpi"))  # shell_util: key homes and the shell's environment


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "net: captures traffic or builds network namespaces (root)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.mpi)
            item.add_marker(pytest.mark.net)
