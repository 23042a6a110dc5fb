"""The console under mpiexec: commands from stdin with no terminal, prompt on stderr; Ctrl-C under hydra."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from shell_util import MPI, MPIEXEC, MPISH, make_home, mpiexec, session_processes, shell_env

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


@pytest.mark.skipif(MPI.name == "openmpi", reason="hydra is MPICH's; prterun ends the job at once")
def test_ctrl_c_under_hydra_says_the_second_one_is_mpiexecs(tmp_path: Path) -> None:
    """A new user: under MPICH's mpiexec the terminal's Ctrl-C reaches mpiexec, which sends
    SIGINT to every rank and says "Press Ctrl-C again to force abort", while mpish said "Ctrl-C
    again: SIGTERM, then SIGKILL", which that second Ctrl-C never does: it ends the job."""
    home = make_home(tmp_path / "home")
    command = [*MPI.mpiexec_options, "-n", "3", MPISH, "-c", "echo started; sleep 600.5"]
    child = pexpect.spawn(MPIEXEC, command, env=shell_env(home), cwd=str(tmp_path), timeout=60,
                          encoding="utf-8")
    try:
        deadline = time.monotonic() + 60
        while sum(command.startswith(b"sleep\x00600.5") for command in session_processes(home).values()) < 2:
            assert child.isalive() and time.monotonic() < deadline, child.read_nonblocking(10_000, 0)
            time.sleep(0.05)
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
        said = child.before
        assert "interrupting @1-2 (SIGINT; a second Ctrl-C goes to mpiexec, which ends the job)" in said, said
        assert "started" in said, said
        assert "Ctrl-C again: SIGTERM" not in said, said
    finally:
        if child.isalive():
            child.terminate(force=True)
