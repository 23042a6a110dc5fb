"""This host's processes as Linux's /proc shows them: state, parent, children, command line.

Used by the shell server (killing a command's processes), the console (are the servers on
this host alive) and the orphan watcher (:mod:`mpish.shell.orphan`).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Callable


def _stat(pid: int) -> bytes:
    """What follows the command name in /proc/PID/stat (state first), b"" if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return b""
    return stat[stat.rfind(b")") + 2 :]


def proc_state(pid: int) -> str:
    """The state letter of ``pid`` (R, S, Z, ...), "" if it is gone (Linux /proc)."""
    return _stat(pid)[:1].decode()


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """The user and system CPU time of ``pid`` so far, in clock ticks; None if it is gone."""
    fields = _stat(pid).split()
    try:
        return int(fields[11]), int(fields[12])  # utime and stime: stat's 14th and 15th fields
    except (ValueError, IndexError):
        return None


def pending_signals(pid: int) -> int:
    """The signals pending for ``pid`` (its thread's and the process's), as a mask with bit
    ``n - 1`` for signal n; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    mask = 0
    for line in lines:
        if line.startswith((b"SigPnd:", b"ShdPnd:")):
            mask |= int(line.split()[1], 16)
    return mask


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (only meaningful on this host)."""
    return proc_state(pid) not in ("", "Z", "X")


def parent(pid: int) -> int:
    """The parent of ``pid``, 0 if unknown."""
    try:
        return int(_stat(pid).split()[1])
    except (ValueError, IndexError):
        return 0


def session(pid: int) -> int:
    """The session id of ``pid``, 0 if unknown."""
    try:
        return int(_stat(pid).split()[3])
    except (ValueError, IndexError):
        return 0


def in_sessions(sessions: set[int]) -> list[int]:
    """Every process of this host whose session is one of ``sessions``."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and session(int(name)) in sessions]


def group_alive(pgid: int) -> bool:
    """A process of process group ``pgid`` is still there, not a zombie (a zombie no one reaps
    keeps ``killpg(pgid, 0)`` succeeding)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name)).split()
            if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
                return True
    return False


def children(pid: int) -> list[int]:
    """The children of ``pid``, whichever of its threads started them (Open MPI's prte forks
    the ranks from a thread of its own, not from its main thread)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(word) for word in handle.read().split()]
        except (OSError, ValueError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its children, theirs, ...), parents before their children."""
    found: list[int] = []
    below = children(pid)
    while below:
        found += below
        below = [grandchild for child in below for grandchild in children(child)]
    return found


def pipes(pid: int) -> set[int] | None:
    """The inodes of the pipes ``pid`` has open (None if its descriptors cannot be read)."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    found = set()
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("pipe:[") and link.endswith("]"):
            found.add(int(link[6:-1]))
    return found


def holds_pipe(pid: int, inodes: set[int]) -> bool:
    """True if ``pid`` has one of the pipes ``inodes`` open, or if that cannot be read."""
    held = pipes(pid)
    return held is None or not held.isdisjoint(inodes)


def cmdline(pid: int) -> list[bytes]:
    return _nul_separated(pid, "cmdline")


def environ(pid: int) -> list[bytes]:
    return _nul_separated(pid, "environ")


def _nul_separated(pid: int, name: str) -> list[bytes]:
    """The NUL-separated words of /proc/PID/NAME (none if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB, since its last exec.

    /proc/self/status's VmHWM belongs to the process's own memory map; getrusage's
    ru_maxrss (the fallback off Linux) also keeps the peak of the process image exec
    replaced, so a process started by a large parent (a fork of pytest) reports the
    parent's size.
    """
    try:
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (``os.pidfd_open``), None if there is no such process.

    Signals sent through it (:func:`signal_pidfd`) reach that process or nobody: once it
    has exited, a new process given the same pid is not reached.
    """
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def exited(fd: int, timeout: float = 0.0) -> bool:
    """True once the process of pidfd ``fd`` has exited (a zombie counts), waiting up to ``timeout``."""
    return bool(select.select([fd], [], [], timeout)[0])


def signal_pidfd(fd: int, signum: int) -> None:
    """Send ``signum`` through pidfd ``fd``; nothing if that process has already exited."""
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(fd, signum)


def signal_if(pid: int, wanted: Callable[[int], bool], signum: int) -> None:
    """Send ``signum`` to ``pid`` if ``wanted(pid)`` (read from /proc) is true of that very process.

    The pidfd is opened first and the process checked as still running afterwards, so what
    was read belongs to the process signalled, never to one that reused its pid.
    """
    fd = pidfd(pid) if pid > 0 else None
    if fd is None:
        return
    try:
        if wanted(pid) and not exited(fd):
            signal_pidfd(fd, signum)
    finally:
        os.close(fd)
