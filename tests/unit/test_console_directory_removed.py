"""The console's own directory removed by another program (``:lcd DIR``, then ``rm -r DIR``
elsewhere): every :lcd, :put and :get said only "[Errno 2] No such file or directory" and the
session could not go on (helper-141). :lcd now leaves it, and :put and :get say what to do."""

from __future__ import annotations

import io
import os
import types
from pathlib import Path

import pytest

from mpish.shell.console_put_get import get_builtin, put_builtin
from mpish.shell.interactive import Repl


@pytest.fixture
def removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    return tmp_path


def test_put_and_get_say_the_directory_was_removed_and_how_to_go_on(removed: Path) -> None:
    del removed
    for builtin, rest in ((put_builtin, "data.bin"), (get_builtin, "/etc/hostname copy")):
        with pytest.raises(ValueError, match=r"local directory was removed .*: :lcd DIR goes to another"):
            builtin(None, frozenset(), rest, None, io.StringIO())  # type: ignore[arg-type]


def test_lcd_leaves_a_removed_directory(removed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repl = types.SimpleNamespace(old_lcd=None, last_status=1)
    Repl.cmd_lcd(repl, str(removed))  # type: ignore[arg-type]
    assert os.getcwd() == str(removed) and repl.last_status == 0
    assert capsys.readouterr().out == f"local directory: {removed}\n"


def test_a_local_path_starting_with_a_tilde_is_in_the_users_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`:put ~/.bashrc` said there is no such file, and `:get F ~` wrote a file named "~"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"no file '{tmp_path}/nothing-here'"):
        put_builtin(None, frozenset(), "~/nothing-here", None, io.StringIO())  # type: ignore[arg-type]
