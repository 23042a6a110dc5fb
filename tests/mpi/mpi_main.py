"""The shared start and end of the MPI scripts in this directory (run by mpiexec, not collected by pytest).

``run(main)`` runs a script's main on every rank. A failure on one rank prints its traceback and
aborts the whole job at once, so the test that started mpiexec sees the failure now instead of
waiting for its timeout while the other ranks block in a collective.

``run_checks(checks)`` is the main of the scripts made of checks ``check(secure, raw)``: each gets
the secure communicator and a raw duplicate of the world, and a genuine run rejects no record.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from mpi4py import MPI


def run(main: Callable[[], object]) -> None:
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)


def run_checks(checks: Sequence[Callable[[Any, Any], object]]) -> None:
    import mpish

    def main() -> None:
        raw = MPI.COMM_WORLD.Dup()
        secure = mpish.secure(MPI.COMM_WORLD)
        for check in checks:
            check(secure, raw)
        assert secure.rejected == 0, f"{secure.rejected} genuine records were rejected"
        secure.Free()
        raw.Free()
        if MPI.COMM_WORLD.Get_rank() == 0:
            print("ALL OK", flush=True)

    run(main)
