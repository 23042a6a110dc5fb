"""The start of the benches that run their own MPI job (comm_halo.py, comm_pending.py,
comm_collectives.py).

``job(doc, script, rank_main, rounds, ranks)`` is their main: ``--rounds`` (and ``--ranks``
unless ranks is fixed) from the command line; inside the job (``--rank-main``) it runs
``rank_main(rounds)`` and returns None, in the launcher it runs the job (``run_job``) and
returns (rounds, ranks, samples). ``run_job(script, ranks, args)`` runs ``script --rank-main
args`` under this venv's mpiexec with ``ranks`` ranks and returns the JSON its rank 0 printed
last; MPISH_HOME must hold a key, else a temporary one is made (and removed).
``medians(pairs)``: (raw us, secure us, ratio) of (raw s, secure s) samples.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def job(doc: str, script: str, rank_main: Callable[[int], None], rounds: int,
        ranks: int | None = 2) -> tuple[int, int, Any] | None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    if ranks is not None:
        parser.add_argument("--ranks", type=int, default=ranks)
    parser.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_main:
        rank_main(args.rounds)
        return None
    size = getattr(args, "ranks", 2)
    return args.rounds, size, run_job(script, size, ["--rounds", str(args.rounds)])


def medians(pairs: list[Any]) -> tuple[float, float, float]:
    """(raw us, secure us, median ratio secure/raw) of (raw seconds, secure seconds) samples."""
    raw = statistics.median(r for r, _ in pairs) * 1e6
    secure = statistics.median(s for _, s in pairs) * 1e6
    return raw, secure, statistics.median(s / r for r, s in pairs)


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
