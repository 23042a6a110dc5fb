"""Markers by directory: every test of a directory carries its markers (``pytest -m ssh``, ``-m net``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def mark_directory(conftest: str, *marks: str) -> Callable[[list[pytest.Item]], None]:
    """A ``pytest_collection_modifyitems`` hook that marks the tests next to ``conftest`` (its __file__).

    The markers themselves are registered in pyproject.toml, so ``--strict-markers`` knows
    them whichever directories are collected.
    """
    here = Path(conftest).parent

    def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
        for item in items:
            if item.path.parent == here:
                for mark in marks:
                    item.add_marker(getattr(pytest.mark, mark))

    return pytest_collection_modifyitems
