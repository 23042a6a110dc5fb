"""The console's history file: created 0600 (commands can hold secrets), as bash does."""

from __future__ import annotations

import io
import os
import pty
import stat
from pathlib import Path

import pytest

from mpish.shell.readers import ToolkitReader

HISTORY_NAME = "history"  # the file name in the mpish directory


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mpish-home"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("MPISH_HOME", str(path))
    return path


def test_history_of_a_typed_command_is_created_0600(home: Path) -> None:
    """A command typed at the prompt (a real pseudo-terminal) lands in a 0600 history file."""
    old_umask = os.umask(0o022)  # what a user usually has: prompt_toolkit alone would make 0644
    master, slave = pty.openpty()
    try:
        with io.TextIOWrapper(io.FileIO(slave, "r+", closefd=False)) as tty:
            reader = ToolkitReader(tty)
            os.write(master, b"export TOKEN=s3cret\r")
            assert reader.read("> ") == "export TOKEN=s3cret"
    finally:
        os.close(slave)
        os.close(master)
        os.umask(old_umask)
    path = home / HISTORY_NAME
    assert "export TOKEN=s3cret" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_existing_history_keeps_its_mode(home: Path) -> None:
    """As in bash, a history file the user already has keeps the mode they gave it."""
    path = home / HISTORY_NAME
    path.write_text("")
    path.chmod(0o640)
    master, slave = pty.openpty()
    try:
        with io.TextIOWrapper(io.FileIO(slave, "r+", closefd=False)) as tty:
            reader = ToolkitReader(tty)
            os.write(master, b"true\r")
            assert reader.read("> ") == "true"
    finally:
        os.close(slave)
        os.close(master)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "true" in path.read_text()
