"""A rogue rank in an MPMD job against the MPI shell (THREAT-MODEL: another user's process
in the job). Each attack must be refused, show nothing forged, crash and hang nothing,
and leave the good server working. The rogue is ``shell_rogue.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mpish import keys
from shell_util import MPISH, PYTHON, make_home, mpiexec, run

pytestmark = pytest.mark.mpi

ROGUE = str(Path(__file__).resolve().parent / "shell_rogue.py")
COMMAND = "echo ran-$MPISH_RANK"
STALL = "2"  # MPISH_HANDSHAKE_TIMEOUT for these tests: seconds per stalled step


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


def mpmd(rogues: list[str], marker: Path, command: str = COMMAND) -> list[str]:
    """Console (rank 0), one good server (rank 1), then one rogue rank per mode."""
    args = ["-n", "1", MPISH, "-c", command, ":", "-n", "1", MPISH, "-c", command]
    for mode in rogues:
        args += [":", "-n", "1", PYTHON, ROGUE, mode, str(marker)]
    return mpiexec(*args)


def check_good_rank_ran(out: bytes, err: bytes, status: int) -> None:
    assert status == 0, err.decode(errors="replace")
    assert out == b"ran-1\n", (out, err)
    assert b"Traceback" not in err, err.decode(errors="replace")


def test_forged_host_name_is_shown_escaped(home: Path, tmp_path: Path) -> None:
    """The unauthenticated host name cannot erase lines or print a fake 'all ranks verified'."""
    result = run(mpmd(["evil-host"], tmp_path / "marker"), home, tmp_path, MPISH_HANDSHAKE_TIMEOUT=STALL)
    check_good_rank_ran(result.stdout, result.stderr, result.returncode)
    err = result.stderr
    shown = rb"\x0d\x1b[2K\x1b[1A\x1b[2Kok\x0ampish: all ranks verified\x0a"
    assert b"rank 2 (" + shown + b") refused: its key SHA256:" in err, err
    assert b"\x1b" not in err and b"\r" not in err, err  # no control character reached the terminal
    assert not any(line.startswith(b"mpish: all ranks verified") for line in err.splitlines()), err


def test_silent_rank_with_the_users_key_is_named_and_left_out(home: Path, tmp_path: Path) -> None:
    """A rank that claims the user's public key and never handshakes costs seconds, not 30 s."""
    result = run(mpmd(["silent"], tmp_path / "marker"), home, tmp_path, MPISH_HANDSHAKE_TIMEOUT=STALL)
    check_good_rank_ran(result.stdout, result.stderr, result.returncode)
    lines = [line for line in result.stderr.decode().splitlines() if line.startswith("mpish: rank 2")]
    fingerprint = keys.load_identity(home).fingerprint
    assert lines == [
        f"mpish: rank 2 (rogue-silent) did not complete its handshake within {STALL} s "
        f"(it claimed the key {fingerprint}); it is left out"
    ], result.stderr.decode()


def test_forged_and_oversize_records_are_refused_and_good_ranks_work(home: Path, tmp_path: Path) -> None:
    """Forged records (to the console and to server 1), a plaintext Run, a pickle, oversize
    messages and forged start messages, all through the session: none has any effect."""
    marker = tmp_path / "marker"
    result = run(
        mpmd(["forge"], marker, "sleep 1; " + COMMAND), home, tmp_path, MPISH_HANDSHAKE_TIMEOUT=STALL
    )
    check_good_rank_ran(result.stdout, result.stderr, result.returncode)
    assert not marker.exists()  # no forged command ran, no pickle was unpickled
    err = result.stderr.decode()
    assert "mpish: rank 2 (rogue-forge)" in err and "it is left out" in err, err
    assert "all ranks verified" not in err  # the forged stderr record was never shown
    assert "rogue rank 2 (forge): admitted=1" in err  # it got as far as an attacker with the key can


def test_key_messages_of_the_wrong_size_are_refused(home: Path, tmp_path: Path) -> None:
    """A lying key exchange (too long, too short) names its rank; the others start normally."""
    result = run(mpmd(["long", "short"], tmp_path / "marker"), home, tmp_path, MPISH_HANDSHAKE_TIMEOUT=STALL)
    check_good_rank_ran(result.stdout, result.stderr, result.returncode)
    err = result.stderr.decode()
    assert "mpish: rank 2 sent a malformed key exchange (200 bytes, not 96); it is left out" in err, err
    assert "mpish: rank 3 sent a malformed key exchange (10 bytes, not 96); it is left out" in err, err
    assert "admitted=0" in err and "admitted=1" not in err


def test_a_module_planted_in_the_working_directory_runs_on_no_rank(home: Path, tmp_path: Path) -> None:
    """``python -m`` puts the working directory first on sys.path: a msgpack.py that another
    user planted in a shared directory the console is started from must not be imported by
    the spawned servers or their orphan watchers (it would run as the user on every rank)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    marker = tmp_path / "planted-ran"
    planted = f"import os\nwith open({str(marker)!r}, 'a') as f:\n    f.write(str(os.getpid()) + '\\n')\n"
    for name in ("msgpack", "cryptography", "subprocess_planted"):
        (shared / f"{name}.py").write_text(planted + "raise ImportError('planted')\n")
    result = run([MPISH, "-n", "2", "-c", "echo ran-$MPISH_RANK"], home, shared)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"ran-1" in result.stdout and b"ran-2" in result.stdout, result.stdout
    assert not marker.exists(), f"a planted module ran in pid(s) {marker.read_text().split()}"
