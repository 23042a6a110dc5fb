"""Helpers for the MPI shell tests: per-test key homes and bounded subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mpish import keys

BIN = Path(sys.executable).parent
MPISH = str(BIN / "mpish")
MPIEXEC = str(BIN / "mpiexec")


def make_home(path: Path, trust: list[Path] | None = None) -> Path:
    """A fresh MPISH_HOME with its own identity; ``trust`` homes go to authorized_keys."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys.generate_identity(path)
    if trust:
        lines = [keys.load_identity(other).public_line for other in trust]
        (path / keys.AUTHORIZED_KEYS_NAME).write_text("\n".join(lines) + "\n")
        (path / keys.AUTHORIZED_KEYS_NAME).chmod(0o600)
    return path


def shell_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_"))}
    env.update(MPISH_HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1")
    env.update(extra)
    return env


def run(
    args: list[str], home: Path, cwd: Path, timeout: float = 90, **extra: str
) -> subprocess.CompletedProcess[bytes]:
    """Run a command with MPISH_HOME=home; never hangs (timeout kills the process group)."""
    proc = subprocess.Popen(
        args,
        env=shell_env(home, **extra),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"timed out: {args}\nstdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}") from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)
