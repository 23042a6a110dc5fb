"""Bounded runs of launchers for the network tests, and MPICH forced onto TCP."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

# MPICH's TCP path (libfabric's tcp provider), also between ranks on one host
TCP = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}


def marker(kind: str) -> str:
    """A string that appears nowhere unless this run put it there."""
    return f"MPISH-{kind}-{secrets.token_hex(8)}"


def write_markers(path: Path, markers: dict[str, str]) -> Path:
    path.write_text(json.dumps(markers))
    return path


def run(
    args: list[str], env: dict[str, str], cwd: Path, input: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``args`` with ``input`` on stdin; a hang kills the whole process group."""
    proc = subprocess.Popen(
        args,
        env={**env, "PWD": str(cwd)},  # hydra starts the ranks in $PWD
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # no controlling terminal: the console reads stdin
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"timed out: {args}\nstdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}") from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def explain(proc: subprocess.CompletedProcess[bytes]) -> str:
    return (
        f"{proc.args}: exit {proc.returncode}\nstdout:\n{proc.stdout.decode(errors='replace')}\n"
        f"stderr:\n{proc.stderr.decode(errors='replace')}"
    )
