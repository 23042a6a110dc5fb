"""The embedded console owns its launcher from the start: servers that die or hang while they
start, and a console killed meanwhile, leave no launcher behind (mpiexec.gforker; hydra's mpiexec
and hydra_pmi_proxy spun)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shell_util import MPI, MPISH, kill_session, make_home, session_processes, shell_env

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPI.name == "openmpi", reason="MPICH's singleton launcher"),
]

# a sitecustomize that only the servers run into (the console's argv names no mpi_server):
# a missing dependency, or a server stuck before its first MPI call
DIES = ("import os, sys\n"
        "if 'mpish.shell.mpi_server' in sys.orig_argv:\n"
        "    sys.stderr.write(\"ModuleNotFoundError: No module named 'planted'\\n\")\n"
        "    sys.stderr.flush()\n"
        "    os._exit(1)\n")
HANGS = ("import sys, time\n"
         "if 'mpish.shell.mpi_server' in sys.orig_argv:\n"
         "    time.sleep(600)\n")


def _left_after(home: Path, seconds: float) -> dict[int, bytes]:
    deadline = time.monotonic() + seconds
    left = session_processes(home)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = session_processes(home)
    return left


def _kill(processes: dict[int, bytes]) -> None:
    for pid, command in processes.items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == command:
                os.kill(pid, signal.SIGKILL)


def _describe(processes: dict[int, bytes]) -> str:
    return "\n".join(f"{pid}: {b' '.join(command.split(bytes(1))).decode(errors='replace')}"
                     for pid, command in sorted(processes.items()))


def _start(tmp_path: Path, sitecustomize: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    home = make_home(tmp_path / "home")
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(sitecustomize)
    err = tmp_path / "console.err"
    with err.open("wb") as stream:  # a file, not a pipe: what is left of the job would hold a pipe open
        proc = subprocess.Popen([MPISH, "-n", "2", "-c", "echo ran"],
                                env=shell_env(home, PYTHONPATH=str(plant)), cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stream,
                                start_new_session=True)
    return proc, home, err


def test_servers_that_die_at_start_up_end_the_console_and_its_launcher_with_one_line(tmp_path: Path) -> None:
    """The console waited in MPI's spawn for good, and hydra's proxy spun at 60-96% of a core."""
    proc, home, err = _start(tmp_path, DIES)
    try:
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("the console waited for servers that had died") from None
        text = err.read_text(errors="replace")
        assert status == 1, text
        ours = [line for line in text.splitlines() if line.startswith("mpish:")]
        assert len(ours) == 1 and "a shell server ended while it started" in ours[0], text
        assert "-m mpish.shell.mpi_server" in ours[0], text
        assert "Traceback" not in text, text
        left = _left_after(home, 30)
        assert not left, f"left behind:\n{_describe(left)}"
    finally:
        _kill(session_processes(home))


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_console_killed_while_its_servers_start_leaves_no_launcher(tmp_path: Path, signum: int) -> None:
    """No server ran far enough to start its orphan watcher: the singleton's mpiexec and
    hydra_pmi_proxy (each in a session of its own) stayed, the proxy spinning, for good."""
    proc, home, err = _start(tmp_path, HANGS)
    try:
        deadline = time.monotonic() + 60
        while sum(b"mpish.shell.mpi_server" in command for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.05)
        launcher = {pid: command for pid, command in session_processes(home).items()
                    if b"mpiexec" in command.split(b"\0")[0] or b"hydra_pmi_proxy" in command}
        assert launcher, _describe(session_processes(home))
        os.killpg(proc.pid, signum)  # as a test timeout does
        proc.wait(timeout=30)
        left = _left_after(home, 30)
        assert not left, f"left behind after {signal.Signals(signum).name}:\n{_describe(left)}"
    finally:
        _kill(session_processes(home))


def test_a_users_mpiexec_timeout_does_not_end_an_interactive_session(tmp_path: Path) -> None:
    """MPIEXEC_TIMEOUT (for the user's MPI jobs) reached the session's launcher: hydra ended the
    servers after that many seconds; gforker left them running and the console crashed in MPI's
    end (exit 139, "Segmentation fault"). The servers' commands still see the variable."""
    home = make_home(tmp_path / "home")
    result = subprocess.run([MPISH, "-n", "1", "-c", "sleep 3; echo survived $MPIEXEC_TIMEOUT"],
                            env=shell_env(home, MPIEXEC_TIMEOUT="1"), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().splitlines()[-1] == "survived 1", result.stdout


def test_a_launcher_killed_during_the_session_ends_it_with_one_line_not_a_crash(tmp_path: Path) -> None:
    """MPICH's finalize without its launcher crashed the console (exit 139) after the output."""
    home = make_home(tmp_path / "home")
    err = tmp_path / "console.err"
    with err.open("wb") as stream:
        proc = subprocess.Popen([MPISH, "-n", "2", "-c", "sleep 3; echo after"], env=shell_env(home),
                                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stream,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(command.startswith(b"sleep\0") for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.05)
        launchers = [pid for pid, command in session_processes(home).items()
                     if b"mpiexec" in command.split(b"\0")[0]]
        assert len(launchers) == 1, _describe(session_processes(home))
        os.kill(launchers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
        text = err.read_text(errors="replace")
        assert proc.returncode == 1, text
        assert out.decode().splitlines()[-1] == "after"  # the command's output came first, whole
        ours = [line for line in text.splitlines() if line.startswith("mpish:")]
        assert ours == [f"mpish: the session's MPI launcher ({launchers[0]}) is gone: ending the job"], text
        left = _left_after(home, 30)
        assert not left, f"left behind:\n{_describe(left)}"
    finally:
        kill_session(proc.pid, home)


def test_with_pmi_debug_a_lost_rank_still_ends_the_launcher(tmp_path: Path) -> None:
    """PMI_DEBUG=1 makes MPICH start its launcher as ``mpiexec -v -pmi_args ...``: the wrapper did
    not give gforker pid 0 for the console, and the launcher was not recognised as the session's,
    so after a lost rank gforker stayed, orphaned, at 100% of a core."""
    home = make_home(tmp_path / "home")
    script = 'if [ "$MPISH_RANK" = 1 ]; then kill -9 $PPID; fi; sleep 2; echo done'
    err = tmp_path / "console.err"
    with err.open("wb") as stream:  # a file, not a pipe: a launcher left behind would hold a pipe open
        result = subprocess.run([MPISH, "-n", "2", "-c", script], env=shell_env(home, PMI_DEBUG="1"),
                                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stream, timeout=90)
    text = err.read_text(errors="replace")
    assert result.returncode == 255, text  # -c's status: the lost rank's 255 (mpi_session.finish)
    assert "rank 1 was lost" in text, text
    assert "Starting mpiexec with" in text, text  # MPICH's PMI_DEBUG line: its launcher did get -v
    left = _left_after(home, 30)
    try:
        assert not left, f"left behind:\n{_describe(left)}"
    finally:
        _kill(left)
