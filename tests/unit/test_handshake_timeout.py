"""MPISH_HANDSHAKE_TIMEOUT: how long the console waits for each server at each step of the start."""

from __future__ import annotations

import io

import pytest

from mpish.shell.admission import HANDSHAKE_TIMEOUT, handshake_timeout


def test_default_is_a_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPISH_HANDSHAKE_TIMEOUT", raising=False)
    assert handshake_timeout() == HANDSHAKE_TIMEOUT == 5.0


def test_environment_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPISH_HANDSHAKE_TIMEOUT", "1.5")
    assert handshake_timeout() == 1.5


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan", "inf", "\x1b[2K"])
def test_bad_value_is_reported_in_one_line_and_the_default_used(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("MPISH_HANDSHAKE_TIMEOUT", value)
    err = io.StringIO()
    assert handshake_timeout(err) == HANDSHAKE_TIMEOUT
    message = err.getvalue()
    assert message.count("\n") == 1 and "\x1b" not in message
    assert message.startswith("mpish: MPISH_HANDSHAKE_TIMEOUT=") and "using 5" in message
