"""Private scratch directories that do not outlive their owner, even one killed with SIGKILL.

Theory of operation
-------------------
A shell server keeps its bash's state in a directory of its own (``mpish-shell-RANK-...``:
the exported environment, functions, the command being run), and an embedded console keeps
the wrapper its MPI launcher runs in another (``mpish-launch-...``). Both are removed at a
normal end. A process killed with SIGKILL (the OOM killer, a batch system at the end of a
job's time, the orphan watcher) removes nothing: such directories piled up by the thousand
in ``/tmp`` on a machine that ran many sessions, each with a copy of the user's exported
environment in it (readable by the user alone, but kept for good).

So the owner holds a lock for as long as it uses its directory: an exclusive ``flock`` on a
descriptor of the directory itself, opened ``O_CLOEXEC`` (the programs it starts do not
hold it; a process it hands the directory to, the console's watcher, is given the
descriptor). The kernel drops the lock with the last descriptor, however the process ends.
Every start of the same kind then sweeps (:func:`sweep`): each entry of that prefix in the
same temporary directory that belongs to this user, is a directory (not a link), is older
than :data:`MIN_AGE` (by its mtime, which only its owner can set back: its maker takes the
lock right after ``mkdir``), and whose lock can be
taken without waiting has no living owner, and is removed. A live owner's lock is never
taken; a lock taken by another sweeper makes this one skip the entry. Other users' entries
are never touched, and nobody else can rename ours in a sticky ``/tmp`` or write in them
(mode 0700), so what was checked is what is removed.

Each name carries this host's boot id (:func:`host_tag`), and a sweep looks at this host's
names only: on a ``TMPDIR`` shared by several hosts (NFS, Lustre) a lock on a directory may be
this host's alone (Linux NFS has no directory locks: flock then locks locally), so another
host's live directory would look free here. Its mtime is the file server's clock, which
only the (microseconds long) time between ``mkdir`` and ``flock`` depends on.

Removal goes through a descriptor of the directory itself (``unlink`` relative to it), so a
link planted where the directory was (a base directory writable by others and not sticky: a
group's project directory) is never followed; the empty directory is removed by name only if
that name still is the directory (device and inode).

This module is shipped to ssh hosts with the shell server (``transport/ship.py``): standard
modules that load fast only (no ``tempfile``, whose imports cost ~3 ms of CPU per start).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time

MIN_AGE = 60.0  # seconds: an entry younger than this may still be on its way to being locked
SHELL_PREFIX = "mpish-shell-"  # a shell server's state directory: mpish-shell-HOST-RANK-RANDOM
LAUNCH_PREFIX = "mpish-launch-"  # an embedded console's launcher wrapper: mpish-launch-HOST-RANDOM
MPI_PREFIX = "mpish-mpi-"  # an embedded console's TMPDIR while MPI starts (shell/segments.py)
PRTE_PREFIX = "mpish-prte-"  # the session directory of the prte Open MPI's spawn starts (open_mpi.py)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def host_tag() -> str:
    """8 hex digits naming this host since its boot (the kernel's boot id; else the host name's)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as handle:
            return handle.read().strip().replace(b"-", b"")[:8].decode("ascii", "replace")
    except OSError:
        import hashlib

        return hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]


def temporary_bases() -> list[str]:
    """Where temporary files may go, in tempfile.gettempdir's order."""
    named = [os.environ[name] for name in ("TMPDIR", "TEMP", "TMP") if os.environ.get(name)]
    shared = ("/tmp", "/var/tmp", "/usr/tmp")  # noqa: S108 (mkdir 0700, a new random name: no race)
    return [os.path.abspath(base) for base in (*named, *shared)] + [os.getcwd()]


def held_by_us(path: str) -> bool:
    """No other user can rename or replace ``path`` or any directory above it: each belongs to
    this user or root and no one else may write to it, or it is root's and sticky (``/tmp``)."""
    here = "/"
    for part in ["", *os.path.realpath(path).split("/")[1:]]:
        here = os.path.join(here, part)
        try:
            st = os.stat(here)
        except OSError:
            return False
        others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, os.geteuid()) or (others_write and not sticky_root):
            return False
    return True


def private_directory(prefix: str) -> str:
    """A new directory that only this user can enter, with an unpredictable name (mkdtemp's),
    in the first temporary base no other user can change (a TMPDIR that a group may write to,
    its project directory, is passed over: renaming our directory there and putting one of its
    own in its place, another user had our shell source a command file of theirs)."""
    failure: OSError | None = None
    # the resolved path: a link to a safe directory may itself lie where others can swap it
    for base in filter(held_by_us, map(os.path.realpath, temporary_bases())):
        for _ in range(100):
            path = os.path.join(base, prefix + os.urandom(6).hex())
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue
            except OSError as exc:  # not there, not writable: the next base
                failure = exc
                break
            return path
    why = failure or "each may be changed by another user"
    raise FileNotFoundError(f"no usable temporary directory in {temporary_bases()} ({why})")


class HeldDirectory:
    """A :func:`private_directory` locked for as long as :attr:`fd` is open (see the module's doc).

    ``kind`` is the sweep's prefix (:data:`SHELL_PREFIX`, :data:`LAUNCH_PREFIX`); ``name`` what
    follows it before the random part. Left behind ones of the same kind are swept first."""

    def __init__(self, kind: str, name: str = "") -> None:
        ours = f"{kind}{host_tag()}-"
        self.path = private_directory(ours + name)
        self.fd: int | None = lock(self.path)
        sweep(os.path.dirname(self.path), ours)

    def remove(self) -> None:
        """Remove the directory and what it holds (through its descriptor: module doc), then
        let the lock go."""
        remove_tree(self.path, self.fd)
        self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock(path: str) -> int | None:
    """An ``O_CLOEXEC`` descriptor of directory ``path`` holding an exclusive flock on it (None
    where the file system has no locks: the directory is then simply never swept)."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def sweep(base: str, kind: str, now: float | None = None) -> list[str]:
    """Remove the directories named ``kind``... in ``base`` (a kind and this host's tag:
    :class:`HeldDirectory`) whose owner is gone; the paths removed."""
    removed: list[str] = []
    uid = os.geteuid()
    now = time.time() if now is None else now
    try:
        entries = [entry for entry in os.scandir(base) if entry.name.startswith(kind)]
    except OSError:
        return removed
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if info.st_uid != uid or not stat.S_ISDIR(info.st_mode) or now - info.st_mtime < MIN_AGE:
            continue
        try:
            fd = os.open(entry.path, _DIR_FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live owner: OSError
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):  # not the entry looked at
                continue
            remove_tree(entry.path, fd)
            removed.append(entry.path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def remove_tree(path: str, fd: int | None = None) -> None:
    """Remove directory ``path`` and what it holds, through a descriptor of it (``fd``, else
    one opened here without following a link): nothing outside it is reached, whatever was
    put in its place meanwhile; its name is removed only while it still is that directory."""
    own = fd is None
    try:
        if fd is None:
            fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return
    try:
        _empty(fd)
        here, there = os.fstat(fd), os.lstat(path)
        if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
            os.rmdir(path)
    except OSError:
        pass
    finally:
        if own:
            os.close(fd)


def _empty(fd: int, depth: int = 0) -> None:
    """Remove what directory ``fd`` holds (files, FIFOs, links as themselves; directories in
    them the same way, through their own descriptors)."""
    for name in os.listdir(fd):
        try:
            os.unlink(name, dir_fd=fd)
        except IsADirectoryError:
            if depth > 32:
                continue
            try:
                inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            try:
                _empty(inner, depth + 1)
            finally:
                os.close(inner)
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=fd)
        except OSError:
            continue
