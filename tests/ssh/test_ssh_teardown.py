"""What a killed ssh shell server leaves on its host: nothing of its shells' commands."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sshd_server import SshServer

SRC = Path(__file__).resolve().parents[2] / "src"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_server_killed_with_sigkill_leaves_no_command_of_its_shell_running(
    sshd: SshServer, tmp_path: Path
) -> None:
    """kill -9 of the server (the OOM killer) over ssh left its bash and the command running
    for good, re-parented to init: only the MPI servers had a watcher. A detached job
    (output elsewhere, as `server > log 2>&1 &`) is left alone, as ssh's hang-up does."""
    d = tmp_path
    command = (f"echo $PPID > {d}/server; sleep 300 & echo $! > {d}/sleep; "
               f"sleep 301 > /dev/null 2>&1 < /dev/null & echo $! > {d}/detached; wait")
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options),
            "--python", sys.executable, "host1", "-c", command]
    proc = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1"), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 3 and time.monotonic() < deadline and proc.poll() is None:
            for name in ("server", "sleep", "detached"):
                text = (d / name).read_text() if (d / name).exists() else ""
                if text.endswith("\n"):
                    pids[name] = int(text)
            time.sleep(0.05)
        assert len(pids) == 3, proc.communicate(timeout=30)
        assert _alive(pids["sleep"]) and _alive(pids["detached"])
        os.kill(pids["server"], signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while _alive(pids["sleep"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pids["sleep"]), "the shell's command outlived its killed server"
        assert _alive(pids["detached"]), "a detached job was ended"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in pids.values():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
