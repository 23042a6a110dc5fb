"""shell/exit_relay.py: a server killed by a signal reaches its launcher as an exit (no MPI here)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpish.shell.exit_relay import under_hydra

RELAYED = "from mpish.shell.exit_relay import relay_exit; relay_exit(); import os, signal, sys; "


def test_a_child_killed_by_a_signal_is_an_exit_of_128_plus_n() -> None:
    result = subprocess.run([sys.executable, "-c", RELAYED + "os.kill(os.getpid(), signal.SIGKILL)"],
                            timeout=30)
    assert result.returncode == 128 + signal.SIGKILL  # subprocess says -9 for a process killed by SIGKILL


def test_an_exit_status_passes_through_and_only_the_child_runs_the_rest() -> None:
    result = subprocess.run([sys.executable, "-c", RELAYED + "print('ran'); sys.exit(7)"],
                            capture_output=True, timeout=30)
    assert result.returncode == 7
    assert result.stdout == b"ran\n"  # once: the relay itself never returns from relay_exit


def test_sigterm_to_the_relay_reaches_the_server() -> None:
    code = RELAYED + "print(os.getpid(), flush=True); signal.pause()"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as relay:
        assert relay.stdout is not None
        server = int(relay.stdout.readline())
        assert server != relay.pid
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=30) == 128 + signal.SIGTERM  # the server died of it, the relay exited
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)


def test_a_sigterm_before_the_relay_waits_still_reaches_the_server() -> None:
    # The relay is slow to wait here (0.3 s before each waitpid), so the SIGTERM lands between
    # the fork and its wait: unblocked, it killed the relay by default and orphaned the server;
    # taken by a Python handler, one that landed just before waitpid began was never passed on.
    slow = ("import os, time; _waitpid = os.waitpid; "
            "os.waitpid = lambda pid, options: (time.sleep(0.3), _waitpid(pid, options))[1]; ")
    code = slow + RELAYED + "print(os.getpid(), flush=True); signal.pause()"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as relay:
        assert relay.stdout is not None
        server = int(relay.stdout.readline())
        relay.send_signal(signal.SIGTERM)
        try:
            status = relay.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)  # do not leave the orphan behind
        assert status == 128 + signal.SIGTERM


def test_signals_reach_the_server_whenever_they_land() -> None:
    """SIGTERM sent at once, and after 0-20 ms (the relay starting to wait, or waiting): each
    run ends with the server's death by it (CI: one hang, the SIGTERM taken but not passed on)."""
    code = RELAYED + "print(os.getpid(), flush=True); signal.pause()"
    for delay in [0.0, 0.0, 0.001, 0.002, 0.005, 0.01, 0.02] * 3:
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as relay:
            assert relay.stdout is not None
            server = int(relay.stdout.readline())
            time.sleep(delay)
            relay.send_signal(signal.SIGTERM)
            try:
                status = relay.wait(timeout=30)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(server, signal.SIGKILL)
            assert status == 128 + signal.SIGTERM, delay


@pytest.mark.parametrize(("env", "expected"), [
    ({"PMI_FD": "5", "PMI_RANK": "1"}, True),  # hydra's mpiexec, or a spawn through it
    ({"PMI_PORT": "h:1", "PMI_RANK": "1"}, True),
    ({"PMI_FD": "5", "SLURM_STEP_ID": "0"}, False),  # srun --mpi=pmi2
    ({"PMIX_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}, False),  # Open MPI
    ({}, False),
])
def test_only_hydra_gets_a_relay(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: bool
) -> None:
    for name in ("PMI_FD", "PMI_PORT", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert under_hydra() is expected


@pytest.mark.parametrize("launcher", ["mpiexec.gforker", "mpiexec.hydra"])
def test_gforkers_end_of_the_job_sigint_then_sigquit_leaves_a_relay_and_its_server_running(
    tmp_path: Path, launcher: str
) -> None:
    """gforker, when one of its processes ends abnormally, sends every other SIGINT, then
    SIGQUIT: under it the relay ignores both (the other servers live on, as under hydra). Under
    another parent SIGQUIT still reaches the server, as SIGTERM does. The launcher is played by
    this interpreter under the launcher's name (its argv[0], which is what the relay reads)."""
    fake = tmp_path / launcher
    fake.symlink_to(sys.executable)
    relayed = RELAYED + "print(os.getpid(), flush=True); signal.pause()"
    play = ("import contextlib, os, signal, subprocess, sys, time\n"
            "relay = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdout=subprocess.PIPE)\n"
            "server = int(relay.stdout.readline())\n"
            "relay.send_signal(signal.SIGINT); time.sleep(0.3)\n"
            "relay.send_signal(signal.SIGQUIT); time.sleep(0.5)\n"
            "forker = sys.executable.endswith('gforker')  # else the server dies of SIGQUIT: wait for it\n"
            "print(relay.poll() if forker else relay.wait(timeout=20), server, flush=True)\n"
            "with contextlib.suppress(ProcessLookupError):\n"
            "    os.kill(server, signal.SIGKILL)\n"
            "print(relay.wait(timeout=30), flush=True)\n")
    result = subprocess.run([str(fake), "-c", play, relayed], capture_output=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    lines = result.stdout.decode().split()
    assert len(lines) == 3, result.stderr.decode(errors="replace")
    if launcher == "mpiexec.gforker":
        assert lines[0] == "None"  # both signals ignored: the relay (and its server) still run
        assert int(lines[2]) == 128 + signal.SIGKILL  # the server's own death still passes through
    else:
        assert int(lines[0]) == 128 + signal.SIGQUIT  # forwarded: the server died of it
