"""Starting the embedded servers fails with one line that says what to do, never a traceback."""

from __future__ import annotations

import os
import shutil
import socket
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
    monkeypatch.setenv("MPISH_ALLOW_PRTE", "1")  # the other refusal (the next test)
    home = make_home(tmp_path / "home")
    result = run([MPISH, "-n", "1", "-c", "true"], home, tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err == (
        "mpish: Open MPI refuses to run as root: set OMPI_ALLOW_RUN_AS_ROOT=1 and "
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to allow it, or run mpish as another user\n"
    )


@pytest.mark.skipif(MPI.name != "openmpi" or os.geteuid() != 0, reason="Open MPI's refusal of root")
def test_open_mpi_as_root_without_either_consent_names_both_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prte refusal came first, and once MPISH_ALLOW_PRTE was set, the root one (helper-138:
    two round trips); both now in one line."""
    for name in [*MPI.env, "PRTE_ALLOW_RUN_AS_ROOT", "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM", "MPISH_ALLOW_PRTE"]:
        monkeypatch.delitem(MPI.env, name, raising=False)
        monkeypatch.delenv(name, raising=False)
    result = run([MPISH, "-n", "1", "-c", "true"], make_home(tmp_path / "home"), tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("mpish: not starting Open MPI's launcher (prte)"), err
    assert "MPISH_ALLOW_PRTE=1" in err, err
    assert "; also, Open MPI refuses to run as root: set OMPI_ALLOW_RUN_AS_ROOT=1" in err, err


def _own_processes_named(word: bytes) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if command and os.path.basename(command[0]) == word and entry.stat().st_uid == os.geteuid():
                found.add(int(entry.name))
    return found


@pytest.mark.skipif(MPI.name != "openmpi", reason="Open MPI's launcher, prte")
def test_open_mpi_embedded_start_refuses_to_start_prte_whose_port_believes_any_claimed_uid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review (HIGH): another local user connected to the embedded session's prte (PMIx
    over TCP on 127.0.0.1), claimed the victim's uid in PMIx's native credential, which prte
    believes, and had it spawn `id` as the victim. Without MPISH_ALLOW_PRTE=1 nothing starts,
    and the console's own Open MPI shared memory is not left behind either."""
    monkeypatch.delitem(MPI.env, "MPISH_ALLOW_PRTE")
    monkeypatch.delenv("MPISH_ALLOW_PRTE", raising=False)
    before = _own_processes_named(b"prte")
    segments = {path.name for path in Path("/dev/shm").iterdir()}
    home = make_home(tmp_path / "home")
    result = run([MPISH, "-n", "2", "-c", "echo started"], home, tmp_path)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert result.stdout == b"", "a server started"
    assert err.startswith("mpish: not starting Open MPI's launcher (prte): any local user who claims")
    assert "MPISH_ALLOW_PRTE=1" in err and len(err.splitlines()) == 1, err
    assert _own_processes_named(b"prte") - before == set()
    left = {name for path in Path("/dev/shm").iterdir() if (name := path.name) not in segments
            and name.startswith("sm_segment.") and path.stat().st_uid == os.geteuid()}
    assert left == set(), "the refused console left its shared memory"


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


def _plant_stale_prte_session_dirs(tmp: Path) -> None:
    """What a SIGKILLed Open MPI session leaves in TMPDIR: prte's session directory, named after its
    pid, with PMIx's rendezvous file in it; here for every pid the next prte can get."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    host = socket.gethostname()
    for pid in range(1, pid_max + 1):
        stale = tmp / f"prte.{pid}"
        stale.mkdir()
        (stale / f"pmix.{host}.tool").write_text("stale\n")


@pytest.mark.skipif(MPI.name != "openmpi", reason="prte's session directories are Open MPI's")
@pytest.mark.skipif(int(Path("/proc/sys/kernel/pid_max").read_text()) > 65536,
                    reason="a stale directory for every pid would be too many")
def test_stale_prte_session_directories_of_killed_sessions_do_not_fail_the_spawn(tmp_path: Path) -> None:
    """prte made its session directory in TMPDIR, named after its pid: when a killed session's was
    still there for that pid, PMIx's rendezvous file in it existed (O_EXCL) and the spawn failed
    ("The PMIx server's listener thread failed to start", then MPI_ERR_UNKNOWN): pids come round."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    try:
        _plant_stale_prte_session_dirs(tmp)
        home = make_home(tmp_path / "home")
        result = run([MPISH, "-n", "2", "-c", "echo started"], home, tmp_path, TMPDIR=str(tmp))
        left = list(tmp.glob("mpish-*"))
    finally:  # 2 x pid_max inodes and 4 KiB a directory: not kept with pytest's last runs
        shutil.rmtree(tmp, ignore_errors=True)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    out = result.stdout.decode()
    assert "@1-2 (2)" in out and "started" in out, out + err  # both servers ran it
    assert left == [], "the console left its directory for prte behind"
