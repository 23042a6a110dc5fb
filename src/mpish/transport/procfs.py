"""This host's processes as Linux's /proc shows them: state, parent, children, command line.

Used by the shell server (killing a command's processes), the console (are the servers on
this host alive) and the orphan watcher (:mod:`mpish.shell.orphan`).
"""

from __future__ import annotations


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


def alive(pid: int) -> bool:
    """True unless ``pid`` is gone or a zombie (only meaningful on this host)."""
    return proc_state(pid) not in ("", "Z", "X")


def parent(pid: int) -> int:
    """The parent of ``pid``, 0 if unknown."""
    try:
        return int(_stat(pid).split()[1])
    except (ValueError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(word) for word in handle.read().split()]
    except (OSError, ValueError):
        return []


def cmdline(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
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
