"""mpish's help formatter finds the width as argparse's does, without importing shutil."""

from __future__ import annotations

import argparse

import pytest

from mpish.cli import HelpFormatter


@pytest.mark.parametrize("columns", [None, "", "abc", "0", "-3", "40", "100", "250"])
def test_the_help_is_as_wide_as_argparse_would_make_it(
    columns: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    ours, theirs = HelpFormatter("mpish"), argparse.HelpFormatter("mpish")
    assert (ours._width, ours._max_help_position) == (theirs._width, theirs._max_help_position)
