"""tests/mpi run under one MPI per pytest pass: MPISH_TEST_MPI=mpich (default), mpich-tcp or openmpi."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpish.shell import scratch
from shell_util import FLAVOURS, MPI, MPISH, make_home, shell_env
from terminal import Person, at_terminal


def pytest_configure(config: pytest.Config) -> None:
    del config
    name = os.environ.get("MPISH_TEST_MPI", "mpich")
    if name not in FLAVOURS:
        raise pytest.UsageError(f"MPISH_TEST_MPI={name}: not one of {', '.join(FLAVOURS)}")
    if not (MPI.bin / "mpiexec").exists():
        raise pytest.UsageError(f"MPISH_TEST_MPI={name}: no {MPI.bin / 'mpiexec'}; run scripts/setup --test")


def pytest_report_header(config: pytest.Config) -> str:
    del config
    return f"tests/mpi under MPISH_TEST_MPI={MPI.name}: {MPI.bin}"


# MPICH's and Open MPI's shared-memory segments: a job ended by MPI_Abort or SIGKILL skips MPI's
# own removal of them (as it would for a user), and the tests end such jobs on purpose
SEGMENT_PREFIXES = ("mpich_shm_", "sm_segment.", "vader_segment.")
SHM = Path("/dev/shm")
SCRATCH_PREFIXES = tuple(kind + scratch.host_tag() + "-" for kind in (
    scratch.SHELL_PREFIX, scratch.LAUNCH_PREFIX, scratch.MPI_PREFIX, scratch.PRTE_PREFIX))


def _our_segments() -> set[Path]:
    with contextlib.suppress(OSError):
        return {path for path in SHM.iterdir()
                if path.name.startswith(SEGMENT_PREFIXES) and path.lstat().st_uid == os.getuid()}
    return set()


def _mapped_by_anyone() -> set[Path]:
    """The /dev/shm files some process maps now (another test run's live jobs among them)."""
    mapped = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            for line in maps.read_text().splitlines():
                fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
                if len(fields) == 6 and fields[5].startswith("/dev/shm/"):
                    mapped.add(Path(fields[5]))
    return mapped


def _hydra_files() -> set[Path]:
    """MPICH's mpiexec (hydra) writes a hwloc topology file per job into TMPDIR and leaves it
    behind when the job is aborted (test_comm_secure.py alone left five per run)."""
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        return {path for path in tmp.glob("hydra_hwloc_xmlfile_*") if path.lstat().st_uid == os.getuid()}
    return set()


def _hydra_running(seconds: float = 5.0) -> bool:
    """True if an MPICH launcher or proxy still runs after ``seconds`` (an aborted job's take a
    moment to end: the last test's were still there at the end of the pass)."""
    deadline = time.monotonic() + seconds
    while True:
        running = False
        for comm in Path("/proc").glob("[0-9]*/comm"):
            with contextlib.suppress(OSError):
                running = running or comm.read_text().startswith(("mpiexec", "mpirun", "hydra"))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)


def _scratch_directories() -> set[Path]:
    """mpish's own temporary directories (shell/scratch.py): a console or server the tests kill
    leaves its own, which the next mpish start sweeps once a minute old (a CI run left ~30)."""
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        return {path for path in tmp.iterdir() if path.name.startswith(SCRATCH_PREFIXES)}
    return set()


def _prte_sessions() -> set[Path]:
    """Open MPI's prterun session directories (TMPDIR/ompi.PID): a job the tests abort leaves its own."""
    tmp = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        return {path for path in tmp.glob("ompi.[0-9]*") if path.name[5:].isdigit()
                and path.lstat().st_uid == os.getuid()}
    return set()


def _remove_unheld(directories: set[Path]) -> None:
    """Remove those of ``directories`` whose owner is gone (no live process holds its lock)."""
    for path in directories:
        fd = scratch.lock(str(path)) if path.is_dir() and not path.is_symlink() else None
        if fd is not None:
            try:
                scratch.remove_tree(str(path), fd)
            finally:
                os.close(fd)


@pytest.fixture(scope="session", autouse=True)
def mpi_leftovers_of_killed_jobs_are_removed() -> Iterator[None]:
    """After the pass, the segments that appeared during it and that no process maps are
    removed (a run of the suite left ~40 in /dev/shm), hydra's files of the pass unless
    some MPICH job still runs (another pass's), mpish's scratch directories of the pass that no
    live process holds, and Open MPI's session directories of the pass whose prterun is gone."""
    before, files, directories = _our_segments(), _hydra_files(), _scratch_directories()
    sessions = _prte_sessions()
    yield
    left = _our_segments() - before - _mapped_by_anyone()
    if not _hydra_running():
        left |= _hydra_files() - files
    for path in left:
        with contextlib.suppress(OSError):
            path.unlink()
    _remove_unheld(_scratch_directories() - directories)
    for path in _prte_sessions() - sessions:
        if not Path(f"/proc/{path.name[5:]}").exists():  # its prterun is gone
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def person(tmp_path: Path) -> Iterator[Person]:
    """A person at the console of ``mpish -n 2`` on a pseudo-terminal (its own key home)."""
    env = shell_env(make_home(tmp_path / "home"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    with at_terminal(MPISH, ["-n", "2"], env, str(tmp_path)) as at:
        yield at
