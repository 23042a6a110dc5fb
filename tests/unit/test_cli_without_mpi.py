"""`mpish -n 2` in an environment without mpi4py (installed without the [mpi] extra), or
with an mpi4py that finds no MPI library: one line saying what to install, never a
traceback (helper-138: ModuleNotFoundError, then RuntimeError "cannot load MPI library")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NO_MPI4PY = "import sys; sys.modules['mpi4py'] = None"  # its import then raises ImportError
NO_LIBRARY = (  # mpi4py's own words when it finds no libmpi
    "import sys, types; m = types.ModuleType('mpi4py'); m.rc = types.SimpleNamespace(); "
    "sys.modules['mpi4py'] = m; "
    "import builtins; real = builtins.__import__\n"
    "def imp(name, globals=None, locals=None, fromlist=(), level=0):\n"
    "    if name == 'mpi4py' and fromlist and 'MPI' in fromlist:\n"
    "        raise RuntimeError('cannot load MPI library\\n/x/libmpi.so: cannot open shared object file')\n"
    "    return real(name, globals, locals, fromlist, level)\n"
    "builtins.__import__ = imp"
)


@pytest.mark.parametrize(("setup", "cause"), [(NO_MPI4PY, "mpi4py"), (NO_LIBRARY, "cannot load MPI library")])
def test_mpi_mode_without_mpi4py_or_an_mpi_library_says_what_to_install_in_one_line(
    tmp_path: Path, setup: str, cause: str
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    code = f"{setup}\nfrom mpish.cli import main\nsys.exit(main(['-n', '2', '-c', 'true']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MPISH_HOME": str(home)}, check=False)
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "MPI mode" in line]
    assert len(lines) == 1 and cause in lines[0] and "pip install 'mpish[mpi]'" in lines[0], done.stderr
