"""Open MPI's shared memory in /dev/shm and the embedded session (``mpish -n 2``): the console's
own 16 MiB segment, which Open MPI never removes for a singleton, is gone once the session is up,
and nothing of the session is left after it ends, normally or by SIGKILL (shell/segments.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shell_util import (
    MPI,
    MPISH,
    kill_session,
    make_home,
    mapped_shm,
    session_processes,
    shell_env,
    still_there,
)

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPI.name != "openmpi", reason="Open MPI's /dev/shm segment names"),
]

SETTLE = 20.0  # seconds prte may take to remove the servers' segments once their job ends


def _left_after(segments: dict[str, int]) -> list[str]:
    deadline = time.monotonic() + SETTLE
    while still_there(segments) and time.monotonic() < deadline:
        time.sleep(0.1)
    return still_there(segments)


@pytest.mark.parametrize("end", ["normal", "console killed", "server killed"])
def test_an_embedded_open_mpi_session_leaves_none_of_its_shared_memory(tmp_path: Path, end: str) -> None:
    """Every ``mpish -n K`` under Open MPI left the console's /dev/shm/sm_segment.* (16 MiB) for
    good: a singleton's job has no PMIx server to remove it (105 of them after one test run)."""
    home = make_home(tmp_path / "home")
    err = tmp_path / "console.err"
    with err.open("wb") as stream:
        proc = subprocess.Popen([MPISH, "-n", "2", "-c", "sleep 3"], env=shell_env(home), cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stream,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while sum(command.startswith(b"sleep\0") for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.05)  # until the command runs on both ranks: the session is up
        console = mapped_shm([proc.pid], "sm_segment.")
        assert console, "the console maps no Open MPI segment: nothing to prove"
        segments = {**console}
        for pid in session_processes(home):
            segments.update(mapped_shm([pid], "sm_segment."))
        assert set(segments) - set(console), "the servers map no Open MPI segment"
        # the console's own is gone already (its mapping stays): a killed console cannot leak it
        assert not still_there(console), console
        if end != "normal":  # kill -9 of one process, as a user or the OOM killer does
            servers = [pid for pid, command in session_processes(home).items()
                       if b"mpish.shell.mpi_server" in command]
            victim = proc.pid if end == "console killed" else max(servers)
            os.kill(victim, signal.SIGKILL)
            proc.wait(timeout=60)
        else:
            assert proc.wait(timeout=60) == 0, err.read_text(errors="replace")
            assert not err.read_text(errors="replace"), err.read_text(errors="replace")
        assert not _left_after(segments), segments
    finally:
        kill_session(proc.pid, home)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
