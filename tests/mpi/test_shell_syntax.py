"""Syntax errors over MPI: bash's own words, the same on every rank, so they group; hostile
text that does not parse runs nowhere and leaves every rank's session as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from shell_util import MPISH, make_home, run

pytestmark = [pytest.mark.mpi, pytest.mark.console]


def test_the_same_syntax_error_on_two_ranks_is_one_group_in_bashs_words(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    result = run([MPISH, "-n", "2", "-c", "echo ran; echo )"], home, tmp_path)
    assert result.returncode == 2, result.stderr  # bash's status for a syntax error
    assert result.stdout == b""  # nothing ran
    err = result.stderr.decode()
    assert err.startswith("@1-2: bash: line 1: syntax error near unexpected token `)'\n"), err  # one group
    assert "@1:" not in err and "@2:" not in err and "/tmp" not in err and "command" not in err, err


def test_hostile_text_runs_on_no_rank_and_the_next_command_is_whole(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    script = tmp_path / "commands"
    script.write_text("true; }; echo PW''NED; { true\n"
                      "true; }; read -r x; printf 'x 0 /\\0' >&200; echo PW''NED >&2; { true\n"
                      "echo next $?\n")
    result = run([MPISH, "-n", "2", "-C", str(script)], home, tmp_path)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert "PWNED" not in out + err, (out, err)
    assert out.count("next 2\n") == 1 and "@1-2" in out, (out, err)  # both ranks ran it, $? of the error
    assert err.count("syntax error near unexpected token `}'") == 2, err  # each line, one group each
