"""MPICH's shared memory in /dev/shm and the embedded session (``mpish -n 2``): a name held by
another user is said in one line, never a hang or MPICH's stack; a stale one of ours is removed;
a killed session leaves none of its segments (shell/segments.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shell_util import (
    MPI,
    MPISH,
    PYTHON,
    kill_session,
    make_home,
    mapped_shm,
    mpiexec,
    session_processes,
    shell_env,
    still_there,
)

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPI.name == "openmpi", reason="MPICH's /dev/shm segment names"),
]

SEGMENT_SIZE = 1061440  # what MPICH 5.0 makes for a singleton world (measured)
NOBODY = 65534
# the console is started through sh, which plants the segment named after its own pid and then
# execs mpish in that very process: "$1" is how, "$2" the file mode, "$3" its owner
PLANT = ('f=/dev/shm/mpich_shm_$(printf %x $$)_0; echo "$f"; '
         f'case "$1" in zeros) head -c {SEGMENT_SIZE} /dev/zero > "$f";; link) ln -s /dev/null "$f";; esac; '
         '[ "$1" = link ] || chmod "$2" "$f"; chown -h "$3" "$f"; '
         'shift 3; exec "$@"')


def _planted_console(tmp_path: Path, how: str, mode: str, uid: int,
                     command: str = "echo ran") -> tuple[subprocess.CompletedProcess[bytes], Path, Path]:
    home = make_home(tmp_path / "home")
    args = ["sh", "-c", PLANT, "plant", how, mode, str(uid), MPISH, "-n", "2", "-c", command]
    proc = subprocess.Popen(args, env=shell_env(home), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    hung = False
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        hung = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    finally:
        for pid, command_line in session_processes(home).items():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes() == command_line:
                    os.kill(pid, signal.SIGKILL)
    planted = Path(out.decode().splitlines()[0])
    if hung:
        with contextlib.suppress(OSError):
            planted.unlink()
        raise AssertionError(f"mpish hung on the planted segment: {err.decode(errors='replace')}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err), planted, home


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file of another user needs root")
@pytest.mark.parametrize(("how", "mode"), [("zeros", "0666"), ("zeros", "0600"), ("link", "-")])
def test_the_consoles_segment_name_held_by_another_user_is_said_in_one_line_before_mpi_starts(
        tmp_path: Path, how: str, mode: str) -> None:
    """MPI_Init opened the other user's file and spun for good (0666, right size), or died with
    MPICH's "Out of memory" stack (0600): another user on the host could stop every mpish -n."""
    result, planted, _ = _planted_console(tmp_path, how, mode, NOBODY)
    try:
        err = result.stderr.decode(errors="replace")
        assert result.returncode == 1, err
        assert err.count("\n") == 1 and err.startswith(f"mpish: {planted}, the name MPICH gives"), err
        assert "uid 65534 (nobody), not yours" in err and "run mpish again" in err, err
        assert b"ran" not in result.stdout
    finally:
        with contextlib.suppress(OSError):
            planted.unlink()


def test_a_stale_segment_of_ours_named_after_the_console_is_removed_and_the_session_runs(
        tmp_path: Path) -> None:
    """A segment left by a killed session whose pid the console now has: MPI_Init opened it and
    waited for good for a ready mark that nobody would set."""
    result, planted, _ = _planted_console(tmp_path, "zeros", "0600", os.geteuid())
    try:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        out = result.stdout.decode()
        assert "@1-2 (2)" in out and out.splitlines()[-1] == "ran", out  # both servers ran it
        assert not planted.exists()
    finally:
        with contextlib.suppress(OSError):
            planted.unlink()


@pytest.mark.parametrize("victim", ["console", "server"])
def test_a_session_killed_with_sigkill_leaves_none_of_its_shared_memory(tmp_path: Path, victim: str) -> None:
    """kill -9 of the console (or of a server) left the session's /dev/shm/mpich_shm_* files for
    good (1-2 MB each; 1.6 GB of them were found on one host)."""
    home = make_home(tmp_path / "home")
    err = tmp_path / "console.err"
    with err.open("wb") as stream:
        proc = subprocess.Popen([MPISH, "-n", "2", "-c", "sleep 4"], env=shell_env(home),
                                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stream, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(command.startswith(b"sleep\0") for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.05)  # until the command runs on both ranks
        processes = session_processes(home)
        servers = [pid for pid, command in processes.items() if b"mpish.shell.mpi_server" in command]
        segments = mapped_shm(list(processes), "mpich_")
        console_name = f"/dev/shm/mpich_shm_{proc.pid:x}_0"
        assert console_name in segments and len(segments) >= 2, segments  # the console's and the servers'
        os.kill(proc.pid if victim == "console" else max(servers), signal.SIGKILL)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while (session_processes(home) or still_there(segments)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not session_processes(home)
        assert not still_there(segments), err.read_text(errors="replace")
    finally:
        kill_session(proc.pid, home)


def _sysv_segments_made_by(pids: set[int]) -> dict[int, int]:
    """shmid -> permission bits of the SysV shared memory segments that ``pids`` created."""
    found = {}
    for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[4]) in pids:  # cpid
            found[int(fields[1])] = int(fields[2], 8) & 0o777
    return found


@pytest.mark.skipif(MPI.name == "mpich-tcp", reason="UCX is not used: libfabric's tcp provider")
def test_a_session_makes_no_shared_memory_the_users_group_can_open(tmp_path: Path) -> None:
    """Security review (MEDIUM): UCX made SysV segments with mode 0660 (compiled in), which a
    member of the user's group attached, read, then scribbled on: the console died of SIGSEGV.
    mpish turns UCX's sysv transport off (UCX_TLS=^sysv) unless the user set UCX_TLS; the
    user's commands do not inherit it."""
    home = make_home(tmp_path / "home")
    proc = subprocess.Popen([MPISH, "-n", "2", "-c", "echo UCX_TLS=${UCX_TLS-unset}; sleep 4"],
                            env=shell_env(home), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(command.startswith(b"sleep\0") for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the session did not start"
            time.sleep(0.05)
        made = _sysv_segments_made_by(set(session_processes(home)))
        out, err = proc.communicate(timeout=60)
    finally:
        kill_session(proc.pid, home)
    assert proc.returncode == 0, err
    assert {shmid: oct(mode) for shmid, mode in made.items() if mode & 0o077} == {}
    assert b"UCX_TLS=unset" in out, out


# Plants, as another user would, the segment hydra's mpiexec will name for its job: FNV-1a of
# "kvs_<mpiexec pid>_0_<first rand() after srand(time)>_<host>", for the seconds around now,
# marked ready (MPICH then uses it), owned by nobody; then execs mpiexec in this very process.
PLANT_FOR_MPIEXEC = """
import ctypes, os, struct, sys, time
libc = ctypes.CDLL(None)
def fnv1a(text):
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h
for seed in range(int(time.time()) - 1, int(time.time()) + 4):
    libc.srand(seed)
    name = f"/dev/shm/mpich_shm_{fnv1a(f'kvs_{os.getpid()}_0_{libc.rand()}_{os.uname().nodename}'):x}_0"
    fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
    os.ftruncate(fd, 16 << 20)
    os.pwrite(fd, struct.pack("<I", 0x12345678), 8)
    os.fchown(fd, 65534, 65534)
    os.close(fd)
    print(name, file=sys.stderr, flush=True)
os.execv(sys.argv[1], sys.argv[1:])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file of another user needs root")
def test_mpish_under_mpiexec_on_a_segment_another_user_planted_ends_the_job_and_says_why(
        tmp_path: Path) -> None:
    """Security review (MEDIUM): another user computed the name of the job's shared memory from
    mpiexec's pid and the time, created it first and marked it ready; the session ran on memory
    she could read and write (and crashed when she wrote to it) without a word."""
    home = make_home(tmp_path / "home")
    args = [PYTHON, "-c", PLANT_FOR_MPIEXEC, *mpiexec("-n", "2", MPISH, "-c", "echo ran")]
    proc = subprocess.Popen(args, env=shell_env(home), cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"hung: {err.decode(errors='replace')}") from None
    finally:
        kill_session(proc.pid, home)
        text = err.decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("/dev/shm/mpich_shm_"):
                with contextlib.suppress(OSError):
                    os.unlink(line)
    assert proc.returncode != 0, text
    assert "runs MPI on shared memory another user controls: /dev/shm/mpich_shm_" in text, text
    assert "belongs to uid 65534 (nobody), not you" in text, text
    assert b"ran" not in out
