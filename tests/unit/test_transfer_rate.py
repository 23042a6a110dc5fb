"""The rate a transfer reports is in a unit that shows it: a 6-byte copy said '0.0 KiB/s'."""

from __future__ import annotations

import io
import types

import pytest

from mpish.shell.console_put_get import report


@pytest.mark.parametrize(("size", "seconds", "shown"), [
    (6, 0.4, ", 15 B/s)"), (300 * 2**10, 1.0, ", 300.0 KiB/s)"), (5 * 2**20, 2.0, ", 2.5 MiB/s)")])
def test_a_transfers_rate_is_shown_in_the_unit_that_shows_it(
    capsys: pytest.CaptureFixture[str], size: int, seconds: float, shown: str
) -> None:
    console = types.SimpleNamespace(describe=lambda ranks: "@1")
    assert report(console, "put f to", {1: ""}, size, seconds, io.StringIO()) == 0  # type: ignore[arg-type]
    line = capsys.readouterr().out.strip()
    assert line.startswith("mpish: put f to @1: ok, SHA-256 verified (") and line.endswith(shown), line
