"""The console under mpiexec with no terminal: commands from stdin, prompt on stderr."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shell_util import MPISH, make_home, mpiexec, shell_env

pytestmark = pytest.mark.mpi


def test_console_reads_stdin_under_mpiexec(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    proc = subprocess.run(
        mpiexec("-n", "3", MPISH),
        input=b"cd /tmp && export X=persisted\necho $X $(pwd)\nexit\n",
        env=shell_env(home),
        cwd=tmp_path,
        capture_output=True,
        timeout=90,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"persisted /tmp" in proc.stdout
    assert b"@1-2 (2)" in proc.stdout  # both servers' identical output grouped once
    assert proc.stderr.count(b"#> ") >= 3  # a prompt before each of the three lines
