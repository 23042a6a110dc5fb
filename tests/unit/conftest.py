"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mpish.shell.console import Console
from wirepair import served_console


@pytest.fixture
def console() -> Iterator[Console]:
    """A real Console and a real ShellServer over pipes (no MPI, no ssh)."""
    with served_console() as made:
        yield made
