"""MpiLink passes the Link conformance suite (tests/linkcheck.py) under the real mpiexec."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")

from linkcheck import CHECKS
from shell_util import BIN, MPI, PYTHON, mpiexec

pytestmark = pytest.mark.mpi

LINKCHECK = Path(__file__).resolve().parents[1] / "linkcheck.py"


def test_mpi_link_conforms() -> None:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **MPI.env)
    done = subprocess.run(mpiexec("-n", "1", PYTHON, str(LINKCHECK)), env=env, capture_output=True,
                          text=True, timeout=110, check=False)
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.split() == [word for check in CHECKS for word in ("ok", check.__name__)], report
