"""MPICH's shared-memory segments in /dev/shm for an embedded session (``mpish -n K``).

Theory of operation
-------------------
MPICH (ch4, 4.x and 5.x; ``src/mpid/ch4/shm/posix/posix_init.c`` and ``MPL_initshm_open``)
names the shared memory of each MPI world ``/dev/shm/mpich_shm_<world id in hex>_<node id>``
(``mpich_vci_...`` beside it with several VCIs). The first process of the node creates it with
``shm_open(O_CREAT | O_EXCL, 0600)``; every other one opens what is there ``O_RDWR`` and
spins, holding the interpreter, until the creator marks it ready. The world id of a singleton
(the embedded console) is its pid; that of the spawned servers' world a 32-bit FNV hash of
hydra's kvs name ``kvs_<mpiexec pid>_<pgid>_<rand() seeded with the time>_<host>``. Both can
be guessed by another user of the host, who can create the file first: mode 0600 makes
MPI_Init fail with MPICH's "Out of memory" stack; a file of the right size that we may open
makes it spin for good (and, were it marked ready, MPI would use memory that user can read
and write). No MPICH variable changes the name or the directory (checked in 5.0: the name
is compiled in, glibc's shm_open always uses /dev/shm).

So, without a way to avoid the names:

* the console checks its own names before MPI starts (:func:`clear_own_names`): one named
  after its pid that it owns was left by a dead process that had this pid (removed); one
  owned by another user, or anything but a regular file, is refused in one line;
* while the servers start, a server that has mapped a segment another user owns is named,
  with its owner (:func:`foreign_segments`, read from ``/proc/PID/maps``; a planted file
  removed once mapped, which hides its owner, counts too: ``transport/shm.py``), and each
  server checks its own memory once MPI runs;
* a session ended without MPI's finalize (a console or server killed) leaves its segments
  behind (measured: 1.6 GB of them on one host): whoever ends it removes those its processes
  had mapped, and only if the name is still the very file they mapped (same inode) and it
  belongs to us (:func:`remove_ours`).

Open MPI (5.x, btl/sm; ``vader`` in 4.x) names a job's shared memory
``/dev/shm/sm_segment.<host>.<uid>.<job id>.<local rank>`` and leaves its removal to the PMIx
server that hosts the job (prte). A singleton (the embedded console) has no such server: its
16 MiB segment was left behind by every ``mpish -n K`` (measured: 105 of them after one test
run; a plain ``python -c "from mpi4py import MPI"`` leaks one too). No other process can ever
join a singleton's job (spawned servers are a job of their own, whose segments prte removes),
so once every server has spoken to the console the name is of no more use: the console
removes its own (:func:`drop_singleton_segments`), keeping the mapping, as a killed console
then leaves nothing.

Files too: Open MPI's singleton makes its session directory at MPI_Init in ``TMPDIR`` (or
/tmp), ``ompi.<host>.<uid>/jf.0/<job id>/0``, and its finalize removes the last level only:
every ``mpish -n K`` on Open MPI left a directory behind (2,374 in /tmp on the test machine).
The console's MPI starts with ``TMPDIR`` naming a directory of its own (:func:`mpi_start_directory`,
``TMPDIR`` as it was once MPI runs), which it removes at exit, or a later start sweeps if the
console was killed (``shell/scratch.py``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mpish.report import owner
from mpish.transport.shm import (
    MPICH_PREFIXES,
    OPEN_MPI_PREFIXES,
    Mapping,
    foreign_memory,
    mappings,
    removed_here,
)
from mpish.transport.shm import SHM_DIR as SHM_NAMES

from .scratch import MPI_PREFIX, HeldDirectory

SHM_DIR = Path(SHM_NAMES)  # where MPICH puts them; nothing is made here
PREFIXES = MPICH_PREFIXES


@dataclass(frozen=True)
class Segment:
    """A /dev/shm file a process had mapped: its name and inode (which proves it is that file)."""

    path: str
    inode: int


def own_names(pid: int) -> list[Path]:
    """The names MPICH gives the segments of the singleton world of process ``pid`` (node 0)."""
    return [SHM_DIR / f"{prefix}{pid:x}_0" for prefix in PREFIXES]


def clear_own_names(pid: int | None = None) -> str:
    """Before MPI starts in this process: remove a stale segment of ours named after our pid;
    return a one-line problem if such a name is held by another user (or is not a plain file)."""
    pid = os.getpid() if pid is None else pid
    for path in own_names(pid):
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_uid == os.geteuid() and (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            # named after this very process, which has not made it: a dead one with our pid did
            with contextlib.suppress(OSError):
                os.unlink(path)
                continue
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a file"
        whose = "of yours" if info.st_uid == os.geteuid() else f"of {owner(info.st_uid)}, not yours"
        return (f"{path}, the name MPICH gives this process's shared memory, is {kind} {whose}, "
                f"so MPI would fail or hang on it; run mpish again (another process gets another "
                f"name) and ask root to remove it (if it happens again, another user holds these "
                f"names for many processes: root can remove the {SHM_DIR}/mpich_* that are not yours)")
    return ""


def mapped_segments(pids: list[int], prefixes: tuple[str, ...] = PREFIXES + OPEN_MPI_PREFIXES
                    ) -> list[Segment]:
    """The MPI segments (by name and inode) that the processes ``pids`` have mapped: MPICH's
    and Open MPI's, or those whose file names start with one of ``prefixes``."""
    found = {Segment(m.path, m.inode) for pid in pids for m in mappings(pid, prefixes) if not m.deleted}
    return sorted(found, key=lambda segment: segment.path)


def foreign_segments(pids: list[int]) -> list[tuple[Mapping, int | None]]:
    """The segments mapped by ``pids`` that are not the user's, with the owner's uid (None: an
    MPICH segment removed while in use, whose owner the kernel hides; see transport/shm.py)."""
    return [found for pid in pids for found in foreign_memory(pid)]


def foreign_names_since(when: float) -> list[tuple[str, int]]:
    """MPICH segment names in /dev/shm that another user made (or changed) at ``when`` or later,
    with that user's uid: while a session starts, one of them may be the name MPICH chose for it."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(SHM_DIR):
            if not entry.name.startswith(PREFIXES):
                continue
            with contextlib.suppress(OSError):
                info = entry.stat(follow_symlinks=False)
                if info.st_uid != os.geteuid() and info.st_ctime >= when:
                    found.append((entry.path, info.st_uid))
    return sorted(found)


def remove_ours(segments: list[Segment]) -> list[str]:
    """Unlink each segment still named by the very file that was mapped (same inode), if it is a
    plain file of ours; returns the names removed."""
    removed = []
    for segment in segments:
        try:
            info = os.lstat(segment.path)
            if (stat.S_ISREG(info.st_mode) and info.st_ino == segment.inode
                    and info.st_uid == os.geteuid()):
                os.unlink(segment.path)
                removed_here(segment.path, segment.inode)
                removed.append(segment.path)
        except OSError:
            continue
    return removed


_singleton: list[Segment] = []  # the console's own Open MPI segments, read before its spawn


def remember_singleton_segments() -> None:
    """In an Open MPI singleton after MPI_Init, before it spawns anything: note the shared
    memory of its own one-process job (mapped at MPI_Init), and only that, for
    :func:`drop_singleton_segments` (none under MPICH, which removes its own)."""
    _singleton[:] = mapped_segments([os.getpid()], OPEN_MPI_PREFIXES)


def drop_singleton_segments() -> list[str]:
    """Once the spawned servers have all spoken to the console, or the start was given up:
    remove the segments :func:`remember_singleton_segments` noted, which Open MPI never
    removes (see above); the mapping stays valid. Returns the names removed."""
    removed = remove_ours(_singleton)
    _singleton.clear()
    return removed


@contextlib.contextmanager
def mpi_start_directory() -> Iterator[None]:
    """Around MPI's start in the embedded console: ``TMPDIR`` names a new directory of the
    console's (for Open MPI's singleton session directory), removed at exit (before MPI's own
    finalize, which does not miss it) or swept by a later start (see the module's doc)."""
    held = HeldDirectory(MPI_PREFIX)
    atexit.register(held.remove)
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = held.path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
