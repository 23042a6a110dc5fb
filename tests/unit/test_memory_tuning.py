"""transport.memory.tune_malloc: run at every start of a console and of each shell server."""

from __future__ import annotations

import subprocess

import pytest

from mpish.transport import memory


def test_tune_malloc_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """ctypes.util.find_library ran ``ldconfig -p`` (a fork and exec, ~13 ms of CPU) on every
    start of every shell server over ssh; libc is in the process already."""
    started: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        started.append(args)
        raise OSError("no process may be started here")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    memory.tune_malloc()
    assert started == []
