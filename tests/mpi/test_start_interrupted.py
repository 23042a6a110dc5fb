"""Servers that hang while they start (before MPI_Init completes, so MPI's spawn never returns):
Ctrl-C at the terminal and the start-up time limit each end the console with one line, and
leave no launcher or server behind. Under MPICH and Open MPI."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from shell_util import MPISH, kill_session, make_home, session_processes, shell_env
from terminal import ANSI

pytestmark = pytest.mark.mpi

# a sitecustomize that only the servers run into (the console's argv names no mpi_server)
HANGS = ("import sys, time\n"
         "if 'mpish.shell.mpi_server' in sys.orig_argv:\n"
         "    time.sleep(600)\n")


def _planted(tmp_path: Path) -> Path:
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(HANGS)
    return plant


def _servers(home: Path) -> int:
    return sum(b"mpish.shell.mpi_server" in command for command in session_processes(home).values())


def _left_after(home: Path, seconds: float) -> dict[int, bytes]:
    deadline = time.monotonic() + seconds
    left = session_processes(home)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes(home)
    return left


def _describe(processes: dict[int, bytes]) -> str:
    return "\n".join(f"{pid}: {b' '.join(command.split(bytes(1))).decode(errors='replace')}"
                     for pid, command in sorted(processes.items()))


def test_ctrl_c_while_the_servers_hang_at_start_ends_the_console_with_one_line_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """The console sat in MPI_Comm_spawn, where Python's SIGINT handler never runs: Ctrl-C did
    nothing, for good (the person had to kill the terminal)."""
    home = make_home(tmp_path / "home")
    env = shell_env(home, PYTHONPATH=str(_planted(tmp_path)), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(MPISH, ["-n", "2"], env=env, cwd=str(tmp_path), timeout=30,
                          encoding="utf-8", codec_errors="replace", dimensions=(50, 250))
    try:
        deadline = time.monotonic() + 60
        while _servers(home) < 2:  # both servers started, and stuck
            assert child.isalive() and time.monotonic() < deadline, child.read_nonblocking(10000, 0)
            time.sleep(0.05)
        time.sleep(0.5)
        child.sendcontrol("c")
        try:
            child.expect(pexpect.EOF, timeout=20)
        except pexpect.TIMEOUT:
            raise AssertionError("Ctrl-C did not end the console while its servers started") from None
        child.close()
        screen = ANSI.sub("", child.before or "")
        ours = [line.strip().removeprefix("^C") for line in screen.splitlines() if line.strip()]  # the echo
        assert ours == ["mpish: interrupted while the shell servers started, so there is no session"], screen
        assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, screen)
        left = _left_after(home, 30)
        assert not left, f"left behind after Ctrl-C:\n{_describe(left)}"
    finally:
        if child.isalive():
            child.terminate(force=True)
        kill_session(child.pid, home)


def test_servers_that_hang_at_start_end_the_console_at_the_start_up_time_limit(tmp_path: Path) -> None:
    """MPI's spawn has no time limit: -t (each start-up step) never applied to it, and the
    console waited for good. The spawn now gets 4 steps' worth (-t 1: 4 s)."""
    home = make_home(tmp_path / "home")
    err = tmp_path / "console.err"
    with err.open("wb") as stream:  # a file, not a pipe: what is left of the job would hold a pipe open
        proc = subprocess.Popen([MPISH, "-n", "2", "-t", "1", "-c", "echo ran"],
                                env=shell_env(home, PYTHONPATH=str(_planted(tmp_path))), cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stream,
                                start_new_session=True)
    try:
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the console waited for good for servers stuck at start-up") from None
        text = err.read_text(errors="replace")
        assert status == 1, text
        ours = [line for line in text.splitlines() if line.strip()]
        assert len(ours) == 1, text
        assert re.fullmatch(r"mpish: the shell servers did not start within 4 s, so there is no session; "
                            r"check that this runs here: \S+python\S* -[PI] -m mpish\.shell\.mpi_server "
                            r"\(-t SECONDS gives each start-up step longer\)", ours[0]), text
        left = _left_after(home, 30)
        assert not left, f"left behind after the time limit:\n{_describe(left)}"
    finally:
        kill_session(proc.pid, home)
