"""mpish.secure(x) with something that is not an mpi4py communicator says so in one line.

Run in a child Python (an MPI singleton): importing mpi4py initialises MPI, which must not
happen inside the pytest process.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import mpish
from mpi4py import MPI
for value in ("x", None, 3):
    try:
        mpish.secure(value)
    except TypeError as exc:
        print("TypeError:", exc)
"""


def test_secure_of_a_non_communicator_is_a_type_error_naming_what_it_takes() -> None:
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"TypeError: mpish.secure(comm) takes an mpi4py communicator such as MPI.COMM_WORLD, not {name}"
        for name in ("str", "NoneType", "int")
    ], result.stdout
