"""``-c`` broadcasts the console's stdin to every rank's command, as clush does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shell_util import MPISH, make_home, run

pytestmark = pytest.mark.mpi


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


def test_stdin_reaches_every_rank_and_identical_copies_group(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "2", "-c", "cat"], home, tmp_path, input=b"hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "---------------\n@1-2 (2)\n---------------\nhi\n"


def test_mebibytes_of_stdin_arrive_whole_on_every_rank(home: Path, tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * 4096 + 7)  # 5 MiB and a bit: more than the credit window
    result = run([MPISH, "-n", "2", "--json", "-c", "sha256sum"], home, tmp_path, input=data)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(data).hexdigest()
    assert result.stdout.decode().count(f"{digest}  -") == 2, result.stdout


def test_nostdin_gives_the_command_empty_input(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "2", "--nostdin", "-c", "wc -c"], home, tmp_path, input=b"hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "---------------\n@1-2 (2)\n---------------\n0\n"
