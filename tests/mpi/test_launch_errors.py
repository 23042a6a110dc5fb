"""Starting the embedded servers fails with one line that says what to do, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shell_util import MPI, MPISH, make_home, run

pytestmark = pytest.mark.mpi


@pytest.mark.skipif(MPI.name != "openmpi" or os.geteuid() != 0, reason="Open MPI's refusal of root")
def test_open_mpi_as_root_without_consent_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawn raised MPI_ERR_UNKNOWN with a traceback: prte refused root, and said so only in a banner."""
    for name in [*MPI.env, "PRTE_ALLOW_RUN_AS_ROOT", "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM"]:
        monkeypatch.delitem(MPI.env, name, raising=False)
        monkeypatch.delenv(name, raising=False)
    home = make_home(tmp_path / "home")
    result = run([MPISH, "-n", "1", "-c", "true"], home, tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err == (
        "mpish: Open MPI refuses to run as root: set OMPI_ALLOW_RUN_AS_ROOT=1 and "
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to allow it, or run mpish as another user\n"
    )


def test_a_corrupt_key_is_said_once_before_any_server_starts(tmp_path: Path) -> None:
    """The console, then every server, said it (three times at -n 2), and hydra sometimes added
    'Broken pipe' errors: the servers were spawned although the console's key was unusable."""
    home = make_home(tmp_path / "home")
    key = home / "id_x25519"
    key.write_text("garbage\n")
    key.chmod(0o600)
    result = run([MPISH, "-n", "2", "-c", "true"], home, tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and "is corrupt" in lines[0] and lines[0].startswith("mpish: "), err
