"""Whose memory MPI runs on: the shared-memory segments a process has mapped, and their owners.

Theory of operation
-------------------
MPICH gives each MPI world's shared memory on a node a name in /dev/shm that another user
of the node can compute (``mpich_shm_<hash of hydra's kvs name, made of mpiexec's pid and a
rand() seeded with the time>_<node>``), and it opens what is already there read-write, with no
look at its owner. A user who creates the file first, and marks it ready, has the job run its
intra-node transport on memory she can read and write (measured by a reviewer as a second
uid: a ``secure(comm)`` program and an ``mpiexec -n 3 mpish`` session ran on her segment with
no word; writing random bytes into it crashed root's processes inside libmpi). mpish's records
stay encrypted and authenticated there, but MPI's own state in that memory is the attacker's
to write, so a process that finds itself on such memory must not go on.

:func:`foreign_memory` reads ``/proc/PID/maps``: every file of /dev/shm's file system mapped by
the process (by device, whatever its name: a planted file can be renamed once mapped) whose
owner is another user. It can also be removed once the victims have mapped it, which hides its
owner (``maps`` then shows ``(deleted)`` and the name leads nowhere): the owner is then read
through ``/proc/PID/map_files`` where the kernel lets us (root, or CAP_CHECKPOINT_RESTORE), or
through a descriptor the process still holds on it (MPICH keeps its segments' open); failing
both, a removed file is reported with an unknown owner, unless its name is one removed by
design (UCX removes its ``ucx_shm_posix_*`` right after attaching them; Open MPI 4's
``vader_segment.*``, not measured here) or this process removed it (the embedded Open MPI
console drops its own singleton segment: ``shell/segments.py``). Open MPI 5 keeps its
``sm_segment.*`` names until the job ends (measured as a non-root user, whose processes may
not follow map_files: a planted ``sm_segment.*`` that its owner removed once mapped passed the
check by its name alone; helper-117).

The check runs after MPI_Init, where the segments are mapped: in ``secure()``, whose setup then
fails on every rank (``comm/setup.py``), and in the shell's processes (``shell/app.py``,
``shell/mpi_server.py``). It cannot help when the planted file is never marked ready: MPI_Init
then waits for good, before any code of ours runs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass

from mpish.report import owner

SHM_DIR = "/dev/shm"  # noqa: S108 -- where MPICH and Open MPI put them (glibc's shm_open)
MPICH_PREFIXES = ("mpich_shm_", "mpich_vci_")
OPEN_MPI_PREFIXES = ("sm_segment.", "vader_segment.")
DELETED = " (deleted)"
# removed once mapped by design: UCX's (right after attaching), Open MPI 4's (see the module doc)
REMOVED_BY_DESIGN = ("ucx_shm_posix_", "vader_segment.")
_REMOVED_HERE: set[tuple[str, int]] = set()  # (name, inode) of the segments this process removed


def removed_here(path: str, inode: int) -> None:
    """This process removed the segment ``path`` (``inode``) that it and others still map: a
    removed mapping of it is not a planted file hiding its owner."""
    _REMOVED_HERE.add((path, inode))


@dataclass(frozen=True)
class Mapping:
    """One MPI segment a process has mapped: its name, inode, address range, and whether the
    name was removed since."""

    path: str
    inode: int
    span: str  # "start-end" as in maps: the name of its /proc/PID/map_files entry
    deleted: bool


def _shm_device() -> bytes:
    """The device of the shared-memory directory as maps writes it (``00:1a``), or b""."""
    try:
        device = os.stat(SHM_DIR).st_dev
    except OSError:
        return b""
    return f"{os.major(device):02x}:{os.minor(device):02x}".encode()


def mappings(pid: int | str, prefixes: tuple[str, ...] | None = MPICH_PREFIXES + OPEN_MPI_PREFIXES,
             ) -> list[Mapping]:
    """The files of /dev/shm that ``pid`` has mapped whose names start with one of ``prefixes``
    (None: every file of /dev/shm's file system, whatever its name now: a planted segment may
    have been renamed once mapped); one entry per file."""
    wanted = tuple(f"{SHM_DIR}/{prefix}".encode() for prefix in prefixes or ("",))
    device = _shm_device() if prefixes is None else b""
    try:
        with open(f"/proc/{pid}/maps", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found: dict[tuple[str, int], Mapping] = {}
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not (fields[3] == device if device else fields[5].startswith(wanted)):
            continue
        if device and not (fields[1][1:2] == b"w" and fields[1][3:4] == b"s"):
            continue  # read-only or private: not memory MPI shares (a colleague's data set, say)
        name = fields[5].decode(errors="replace")
        deleted = name.endswith(DELETED)
        if deleted:
            name = name[: -len(DELETED)]
        with contextlib.suppress(ValueError):
            mapping = Mapping(name, int(fields[4]), fields[0].decode(), deleted)
            found.setdefault((mapping.path, mapping.inode), mapping)
    return list(found.values())


def owner_uid(pid: int | str, mapping: Mapping) -> int | None:
    """The uid owning the file behind ``mapping``, or None where it cannot be read."""
    if not mapping.deleted:
        with contextlib.suppress(OSError):
            info = os.stat(mapping.path)
            if info.st_ino == mapping.inode:
                return info.st_uid
    with contextlib.suppress(OSError):  # follows the mapping itself: privileged on most kernels
        info = os.stat(f"/proc/{pid}/map_files/{mapping.span}")
        if info.st_ino == mapping.inode:
            return info.st_uid
    with contextlib.suppress(OSError):  # a descriptor still open on it (MPICH keeps its segments')
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                info = os.stat(f"/proc/{pid}/fd/{fd}")
                if info.st_ino == mapping.inode and stat.S_ISREG(info.st_mode):
                    return info.st_uid
    return None


def foreign_memory(pid: int | str = "self") -> list[tuple[Mapping, int | None]]:
    """The MPI segments ``pid`` has mapped that are not the user's: (segment, owner's uid), the
    uid None for an MPICH segment removed while in use whose owner the kernel hides from us."""
    mine = os.geteuid()
    foreign: list[tuple[Mapping, int | None]] = []
    for mapping in mappings(pid, None):  # every file of /dev/shm: a planted one may be renamed
        uid = owner_uid(pid, mapping)
        if uid is None:
            by_design = os.path.basename(mapping.path).startswith(REMOVED_BY_DESIGN)
            if mapping.deleted and not by_design and (mapping.path, mapping.inode) not in _REMOVED_HERE:
                foreign.append((mapping, None))
        elif uid != mine:
            foreign.append((mapping, uid))
    return sorted(foreign, key=lambda found: found[0].path)


def describe(found: tuple[Mapping, int | None], who: str = "this process") -> str:
    """What is wrong, and what to do, for one entry of :func:`foreign_memory`."""
    mapping, uid = found
    whose = (f"belongs to {owner(uid)}, not you" if uid is not None
             else "was removed while in use, which hides its owner (MPI removes its own only at the end)")
    return (f"{who} runs MPI on shared memory another user controls: {mapping.path} {whose}; it was "
            f"planted under the name MPI computes for this job, so that user can read and write MPI's "
            f"state. Not going on. Ask root to remove the {SHM_DIR}/mpich_* files that are not yours, "
            f"then start again (another start gets another name)")


def memory_problem(who: str) -> str:
    """After MPI_Init: what is wrong if this process's MPI runs on another user's shared memory,
    else "" (``who`` names the process in the message)."""
    found = foreign_memory()
    return describe(found[0], who=who) if found else ""
