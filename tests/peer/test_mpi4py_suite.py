"""mpi4py's own tests against mpish.secure(comm) (tests/peer/mpi4py_suite.py does the work).

CI runs the modules that pass above 90% (the collectives and test_msgzero, at -n 2; about ten
seconds of MPI runs, raw and secure); run the
script itself for the whole matrix: ``python tests/peer/mpi4py_suite.py -n 1 2 3 4``.
The first run downloads the mpi4py sdist (pip, a few seconds) into .venv/mpi4py-sdist.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")

pytestmark = pytest.mark.mpi

SCRIPT = Path(__file__).resolve().parent / "mpi4py_suite.py"
LIMITS = ["--timeout", "60", "--test-timeout", "20"]  # seconds per module run, per test
CI_MODULES = ["test_msgzero", "test_cco_obj", "test_cco_buf", "test_cco_nb_buf", "test_cco_vec"]


@pytest.mark.timeout(600)
def test_ci_modules_pass_nine_tenths_of_what_raw_passes_and_never_hang() -> None:
    """The CI subset only; the whole suite is not there yet (README: mpi4py's own tests).

    A hung test is ended by the script's per-test watchdog and counted in ``hangs``.
    """
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "-n", "2", *LIMITS, "-m", *CI_MODULES],
        capture_output=True,
        text=True,
        timeout=580,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("SUMMARY"))
    fields = dict(item.split("=") for item in summary.split()[1:])
    assert int(fields["hangs"]) == 0, proc.stdout
    assert float(fields["ratio"]) >= 0.9, proc.stdout
