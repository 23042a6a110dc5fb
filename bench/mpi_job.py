"""The start of the benches that run their own MPI job (comm_halo.py, comm_pending.py).

``run_job(script, ranks, args)`` runs ``script --rank-main args`` under this venv's mpiexec
with ``ranks`` ranks and returns the JSON its rank 0 printed last; MPISH_HOME must hold a key,
else a temporary one is made (and removed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_job(script: str, ranks: int, args: list[str]) -> Any:
    env = dict(os.environ)
    made = None
    if not env.get("MPISH_HOME"):
        from mpish.keys import ensure_identity

        made = tempfile.mkdtemp(prefix="mpish-bench-home-")
        ensure_identity(Path(made))
        env["MPISH_HOME"] = made
    try:
        mpiexec = str(Path(sys.executable).parent / "mpiexec")
        done = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, script, "--rank-main", *args],
                              env=env, capture_output=True, text=True, check=False, timeout=600)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: the MPI job failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
