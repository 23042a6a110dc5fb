"""MpiLink lends reused record buffers (the streaming server seals output into them):
never one whose send is pending, only a bounded number of bytes kept idle, and a small
record never pins a large buffer. Real mpiexec."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")

from shell_util import BIN, MPI, PYTHON, mpiexec

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().with_name("record_pool.py")
CHECKS = ["check_a_buffer_is_not_lent_again_while_its_send_is_pending",
          "check_a_sent_buffer_is_reused_and_the_idle_ones_are_bounded",
          "check_a_small_record_does_not_pin_a_large_buffer"]


def test_record_buffers_are_reused_only_after_their_send_completed_sized_to_the_record_and_bounded() -> None:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **MPI.env)
    done = subprocess.run(mpiexec("-n", "1", PYTHON, str(SCRIPT)), env=env, capture_output=True,
                          text=True, timeout=110, check=False)
    report = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.split() == [word for check in CHECKS for word in ("ok", check)], report
