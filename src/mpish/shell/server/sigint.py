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

**Bash caught in its own SIGINT handler** (bash 5.2, a shell without job control, as
ours is): when bash starts waiting for a child it installs its waiting handler and only
then records the handler it replaced. A SIGINT that lands in between finds no handler to
go back to, and the waiting handler raises SIGINT again, for ever: bash spins in the
kernel and never ends the line (measured: 1 in 1,300 to 3,000 Ctrl-Cs sent as a command's
first output arrived, on a loaded machine; the command's status never came). Two
defences: bash gets its SIGINT once it sleeps (in ``wait4``, past that window) or after
:data:`SETTLE` seconds of running; and :class:`SignalLoop` tells when bash spins that way
anyway, and the server then restarts it as after a third Ctrl-C (``jobs.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from mpish.transport.procfs import alive, children, cpu_ticks, pending_signals, proc_state

from .bash import JOB_VARIABLE

CHASE = 2.0  # seconds after a Ctrl-C during which late children of the line are signalled
SETTLE = 0.02  # seconds a running bash is given to go to sleep before it gets its SIGINT
SPIN_WINDOW = 0.5  # seconds of bash's CPU time looked at, at a time, by SignalLoop
SPIN_WINDOWS = 2  # that many windows in a row spent in the kernel: bash is in the loop
SPIN_LOOK = 0.005  # seconds between looks at bash's pending signals
_TICKS = os.sysconf("SC_CLK_TCK")
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


def _sigint_bash(pid: int) -> None:
    """SIGINT to bash once it sleeps (module doc: the window where it would loop for ever)."""
    deadline = time.monotonic() + SETTLE
    while proc_state(pid) == "R" and time.monotonic() < deadline:
        time.sleep(0.0002)
    _sigint(pid)


class SignalLoop:
    """Whether bash spins in its own SIGINT handler (module doc), for :data:`SPIN_WINDOWS`
    windows in a row: most of its time in the kernel, and a SIGINT seen pending (it is,
    between each raise and its delivery: ~40% of looks at such a loop). A bash that sleeps
    uses no CPU; one running the user's loop or builtins spends its time in user space or,
    when its loop lives on system calls (``while read`` on a file), has no SIGINT pending."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.since = self.looked = time.monotonic()
        self.ticks = cpu_ticks(pid)
        self.raised = False  # a SIGINT was seen pending in this window
        self.hot = 0  # windows in a row that looked like the loop

    def spinning(self) -> bool:
        now = time.monotonic()
        if now - self.looked >= SPIN_LOOK:
            self.looked = now
            self.raised = self.raised or bool(pending_signals(self.pid) & (1 << (signal.SIGINT - 1)))
        if now - self.since < SPIN_WINDOW:
            return False
        ticks = cpu_ticks(self.pid)
        hot = False
        if ticks is not None and self.ticks is not None and self.raised:
            user, system = ticks[0] - self.ticks[0], ticks[1] - self.ticks[1]
            wall = (now - self.since) * _TICKS
            hot = user + system >= 0.1 * wall and system >= 0.8 * (user + system)
        self.hot = self.hot + 1 if hot else 0
        self.since, self.ticks, self.raised = now, ticks, False
        return self.hot >= SPIN_WINDOWS


class LineInterrupt:
    """The first Ctrl-C of one command: sent to bash and the line's processes, then the
    late ones are chased (module doc) until :meth:`chase` says it is over."""

    def __init__(self, bash_pid: int, marker: str, earlier: frozenset[int] = frozenset()) -> None:
        """``earlier``: bash's children before the command started (background jobs of earlier
        commands, a subshell loop among them, which never execs): never taken for its forks."""
        self.bash_pid = bash_pid
        self.ours = job_tag(marker)
        self.until = time.monotonic() + CHASE
        _sigint_bash(bash_pid)  # first: a bash that has it forks nothing more for the line once it sees it
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
