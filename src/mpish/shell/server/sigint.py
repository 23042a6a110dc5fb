"""How the first Ctrl-C reaches a command's line: bash, its children, the marked processes.

At a terminal the kernel sends SIGINT to the whole foreground process group at once. Here
the server finds the command's processes itself, in /proc (the ``__MPISH_JOB`` marker in
their environment, :func:`.jobs.job_processes`), and a process found that way can be in
the middle of being made. Two races were measured (an Interrupt sent as soon as the
command's first line of output arrived, 40 tries): about 1 in 12 Ctrl-Cs was lost.

- **A fork caught before its exec.** Bash's child still runs bash's SIGINT handler until it
  execs: the SIGINT sets a flag that the exec forgets, the program runs, and bash, seeing
  its child not killed by SIGINT, runs the rest of the line. Such a fork (a child of bash
  with no marker yet) is signalled at once and again once it carries the command's marker.
- **Bash signalled between two commands of the line,** before it forks the next one: bash
  notes the SIGINT, forks the next command anyway (its child gets no signal) and abandons
  the line only when that child ends. At a terminal the same Ctrl-C is lost too (the next
  command gets the terminal after the signal). When the line had no child at the Ctrl-C,
  every child of bash that appears before the command's status is known gets a SIGINT.
  (A ``trap ... INT`` of the user's shell that forks at that moment has its children
  interrupted: the price of not losing the Ctrl-C.)

The server keeps chasing for at most :data:`CHASE` seconds, looking every ``KILLING_POLL``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from mpish.transport.procfs import alive, children

from .bash import JOB_VARIABLE

CHASE = 2.0  # seconds after a Ctrl-C during which late children of the line are signalled
_ANY_JOB = f"{JOB_VARIABLE}=".encode()


def job_tag(marker: str) -> bytes:
    """How the command's marker appears in a process's /proc/PID/environ."""
    return f"{JOB_VARIABLE}={marker}\0".encode()


def environ(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _sigint(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGINT)


class LineInterrupt:
    """The first Ctrl-C of one command: sent to bash and the line's processes, then the
    late ones are chased (module doc) until :meth:`chase` says it is over."""

    def __init__(self, bash_pid: int, marker: str, earlier: frozenset[int] = frozenset()) -> None:
        """``earlier``: bash's children before the command started (background jobs of earlier
        commands, a subshell loop among them, which never execs): never taken for its forks."""
        self.bash_pid = bash_pid
        self.ours = job_tag(marker)
        self.until = time.monotonic() + CHASE
        _sigint(bash_pid)  # first: a bash that has it forks nothing more for the line once it sees it
        self.known: set[int] = set(earlier)  # bash's children already signalled or let go
        self.forks: set[int] = set()  # signalled before their exec: again once they carry the marker
        for pid in children(bash_pid):
            if pid in self.known:
                continue
            self.known.add(pid)
            found = environ(pid)
            if found is None:
                continue
            if _ANY_JOB not in found:
                self.forks.add(pid)
                _sigint(pid)
            elif self.ours in found:
                _sigint(pid)
        for pid in job_processes(marker):  # the rest of the tree, background jobs, daemons
            _sigint(pid)
        line = self.known - earlier  # the command's own children at the Ctrl-C
        self.watch_new = not self.forks and not any(self.ours in (environ(pid) or b"") for pid in line)

    def chase(self, status_known: bool) -> bool:
        """One look at bash's children; False once there is nothing more to chase."""
        if status_known or time.monotonic() > self.until:
            return False
        if self.watch_new:
            for pid in children(self.bash_pid):
                if pid not in self.known:
                    self.known.add(pid)
                    self.forks.add(pid)
                    _sigint(pid)
        for pid in list(self.forks):
            found = environ(pid)
            if found is None or _ANY_JOB in found:
                self.forks.discard(pid)
            if found is not None and self.ours in found:
                _sigint(pid)
        return self.watch_new or bool(self.forks)


def job_processes(marker: str) -> set[int]:
    """Pids of our user's live processes started by the command with this marker."""
    tag = job_tag(marker)
    found: set[int] = set()
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        text = environ(int(name))
        if text is not None and tag in text and alive(int(name)):
            found.add(int(name))
    return found
