"""Processes of this host through /proc, and the watcher that ends an orphaned shell server.

A server of an embedded session (``mpish -n K``) whose console died unannounced (SIGKILL)
must end itself and the launcher started for that session alone (the singleton's
``mpiexec.gforker -pmi_args``, or hydra's and its ``hydra_pmi_proxy``): MPI cannot finalize with a dead peer
and the launcher never learns that the console is gone. The server's own loop notices and
ends its command and shell first; but a server stuck inside an MPI call once its peer is
gone (MPICH over TCP spins in one, holding the interpreter) cannot run even a thread. So
each such server also starts this module as a separate process,
``python -m mpish.shell.orphan CONSOLE_PID SERVER_PID GRACE``, which makes no MPI call: once
the console is gone and the server is still there ``GRACE`` seconds later, it ends the
launcher, the proxy and the server. It exits as soon as the server is gone. It holds
both as pidfds, so it never signals a process that took the server's pid.

The console itself starts the same module in its other mode, :func:`watch_launcher`, before
it spawns anything: the launcher must not outlive a console killed while no server runs
yet (servers that die at start-up, or still starting), as hydra's proxy then spins for good
(measured: 60-96% of a core, polling its closed stdin). It also removes the session's MPICH
shared memory, which only MPI's finalize would have (``shell/segments.py``). That watcher runs with ``-I -S``
(no site, no sitecustomize, no PYTHON* variables: :func:`watch_command`), so what keeps the
servers from starting cannot keep it from starting too.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mpish.report import Diagnostics, Reporter, setup_logging
from mpish.transport.procfs import (
    alive,
    children,
    cmdline,
    descendants,
    environ,
    exited,
    holds_pipe,
    in_sessions,
    parent,
    pidfd,
    pipes,
    proc_state,
    session,
    signal_if,
    signal_pidfd,
)

from .exit_relay import is_forker
from .segments import PREFIXES, Segment, mapped_segments, remove_ours

log = Diagnostics("mpish.shell.orphan")  # not __name__: run as __main__


def end_session_launcher(server: int) -> None:
    """SIGKILL the singleton launcher above ``server`` (or its exit relay), if ours: ``mpiexec.gforker``
    (the relay's parent), or hydra's ``mpiexec`` and its ``hydra_pmi_proxy`` between them.

    Only a launcher started with ``-pmi_args`` (MPICH's singleton launcher, made for one
    session) is ended; each is checked and signalled through a pidfd
    (:func:`mpish.transport.procfs.signal_if`).
    """
    above = parent(server)
    if cmdline(above) == cmdline(server):  # its exit relay (shell/exit_relay.py), a fork of it
        above = parent(above)
    if is_proxy(above):
        signal_if(parent(above), is_singleton_launcher, signal.SIGKILL)
        signal_if(above, is_proxy, signal.SIGKILL)
    else:
        signal_if(above, is_singleton_launcher, signal.SIGKILL)


def is_proxy(pid: int) -> bool:
    command = cmdline(pid)
    return bool(command) and command[0].endswith(b"hydra_pmi_proxy")


def is_singleton_launcher(pid: int) -> bool:
    """MPICH's singleton ``mpiexec [-v] -pmi_args PORT INTERFACE KEY PID``, PID being its own (hydra), or
    ``mpiexec.gforker`` with PID 0 (``shell/launch_env.py``'s wrapper: gforker signals that pid)."""
    command = [word for word in cmdline(pid) if word]
    at = command.index(b"-pmi_args") if b"-pmi_args" in command else 0  # after -v with PMI_DEBUG
    if not at or len(command) <= at + 4:
        return False
    return ((command[0].endswith(b"mpiexec") and command[at + 4] == str(pid).encode())
            or (is_forker(pid) and command[at + 4] == b"0"))


def rank_starters(launcher: int) -> list[int]:
    """The processes that start and reap the ranks of a singleton ``launcher``: gforker itself,
    or hydra's proxies under it."""
    if is_forker(launcher):
        return [launcher]
    return [pid for pid in children(launcher) if is_proxy(pid)]


def started_process_ended(proxy: int) -> bool:
    """True once ``proxy`` has reaped a process it started (a rank ended).

    Read from /proc/PID/stat: the minor faults of the children it waited for (cminflt)
    are 0 until then; any program that ran (a Python that died at import) made
    thousands. It catches a rank that lived a few ms between two looks at the proxy's
    children; nothing else of the proxy's is ever reaped.
    """
    try:
        with open(f"/proc/{proxy}/stat", "rb") as handle:
            stat = handle.read()
        fields = stat[stat.rfind(b")") + 2 :].split()
        return int(fields[8]) + int(fields[10]) > 0  # cminflt, cmajflt (after state, ppid, ...)
    except (OSError, ValueError, IndexError):
        return False


def end_launcher_tree(launcher: int) -> None:
    """SIGKILL an embedded session's singleton ``launcher``, its proxies and the servers under them.

    The tree is read, then stopped from the top (SIGSTOP: nobody notices a peer gone while
    the others are still running), then killed: killed from the bottom, hydra saw its proxy's
    socket close and printed four lines of its internal errors on the user's terminal after
    mpish's own one line (``control_cb ... assert (!closed) failed``)."""
    if not is_singleton_launcher(launcher):
        return
    tree: list[tuple[int, Callable[[int], bool]]] = [(launcher, is_singleton_launcher)]
    for starter in rank_starters(launcher):
        if starter != launcher:
            tree.append((starter, is_proxy))
        for rank in children(starter):
            if b"mpish.shell.mpi_server" in cmdline(rank):
                tree.append((rank, lambda pid: b"mpish.shell.mpi_server" in cmdline(pid)))
                tree.extend((pid, _not_me) for pid in descendants(rank))
    _stop_then_kill(tree)


def _not_me(pid: int) -> bool:
    return pid != os.getpid()


def _stop_then_kill(tree: list[tuple[int, Callable[[int], bool]]]) -> None:
    """SIGSTOP every process of ``tree`` (pid, what it must still be), parents first, then SIGKILL
    them, children first (stopped, none of them runs again to notice another's death)."""
    for pid, wanted in tree:
        signal_if(pid, wanted, signal.SIGSTOP)
    for pid, wanted in reversed(tree):  # the launcher last: its death would wake a console's spawn
        signal_if(pid, wanted, signal.SIGKILL)


def is_prte(pid: int) -> bool:
    command = cmdline(pid)
    return bool(command) and os.path.basename(command[0]) == b"prte"


def end_spawn_launcher(console: int) -> None:
    """SIGKILL the ``prte`` Open MPI started for ``console``'s spawn, and everything under it
    (the servers, their shells and commands: the tree is read, stopped, then killed)."""
    for launcher in children(console):
        if is_prte(launcher):
            _stop_then_kill([(launcher, is_prte), *((pid, _not_me) for pid in descendants(launcher))])


def end_below(server: int) -> None:
    """SIGKILL every process under ``server`` but this one: its shell and what the shell runs.

    The whole tree is read before anything is killed: a command whose shell died first would
    be re-parented out of it and outlive the session (``sleep 600`` left behind when the
    console's watcher killed a server that had not ended its shell in time).
    """
    me = os.getpid()
    for pid in descendants(server):
        if pid != me:
            signal_if(pid, lambda candidate: candidate != me, signal.SIGKILL)


def await_launcher_settled(servers: list[int], launcher: int, timeout: float) -> None:
    """Outlive the servers' exit and the launcher's handling of it (bounded by ``timeout``).

    With ``-disable-auto-cleanup`` hydra reports every process exit, a clean one too, to
    mpiexec, which answers by signalling the job's other process groups through the proxy
    that serves the console, which leaves once the console's connection closes: had the
    console ended first, mpiexec would print "HYDU_sock_write ... Broken pipe ...". So the
    console ends last: once its (local) servers are gone, it waits until the launcher and
    its children sleep, i.e. have handled every exit, twice in a row (gforker: the same).
    """
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.005)
    if not launcher:
        return
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        launchers = [launcher, *children(launcher)]
        quiet = quiet + 1 if all(proc_state(pid) in ("S", "Z", "") for pid in launchers) else 0
        time.sleep(0.005)


def read_launcher_pid(wrapper: Path) -> int:
    """The pid the mpiexec wrapper wrote (``shell/launch_env.py``), 0 if none yet."""
    with contextlib.suppress(OSError, ValueError):
        return int((wrapper / "launcher.pid").read_text())
    return 0


def watch_command(console: int, wrapper: Path, grace: float) -> list[str]:
    """The command line of :func:`watch_launcher`: the interpreter with ``-I -S``, and the
    directory that holds ``mpish`` put on sys.path by hand (no site-packages without site)."""
    root = str(Path(__file__).resolve().parents[2])
    boot = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from mpish.shell.orphan import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-I", "-S", "-c", boot, root, "--launcher", str(console), str(wrapper),
            str(grace)]


def watch_launcher(console: int, wrapper: Path, grace: float) -> None:
    """The console's own watcher: once the console is gone, its launcher gets ``grace``
    seconds to end by itself (it does at once after a normal end), then it is ended with
    its proxy and any server still under it; the wrapper's directory is removed.

    The launcher's pid is read only then, from the file its wrapper wrote, and the process
    checked: a singleton mpiexec whose environment names this very wrapper's config file.
    """
    from .segments import mapped_segments, remove_ours  # here: the ssh server's watcher needs none

    console_fd = pidfd(console)
    segments = []
    try:
        if console_fd is not None and os.getppid() == console:  # else it is gone already
            segments = mapped_segments([console])  # MPI has started in the console: its own
            select.select([console_fd], [], [])
        launcher = read_launcher_pid(wrapper)
        config = f"MPISH_LAUNCHER_DIR={wrapper}".encode()  # shell/launch_env.py's LAUNCHER_MARK
        launcher_fd = pidfd(launcher) if launcher else None
        if launcher_fd is not None:
            try:
                if config in environ(launcher):  # the servers' world, while they still have it mapped
                    segments += mapped_segments(descendants(launcher))
                if not exited(launcher_fd, grace) and config in environ(launcher):
                    log.debug("console %d gone; ending its launcher %d", console, launcher)
                    end_launcher_tree(launcher)
            finally:
                os.close(launcher_fd)
        # a session MPI did not finalize leaves its shared memory behind: the segments its
        # console and servers had mapped, each if still that very file of ours (shell/segments.py)
        for name in remove_ours(segments):
            log.debug("removed %s, left by console %d's session", name, console)
    finally:
        if console_fd is not None:
            os.close(console_fd)
        shutil.rmtree(wrapper, ignore_errors=True)


def watch(console: int, server: int, grace: float) -> None:
    """Wait while the server lives; once the console is gone, end the server after ``grace``.
    Console 0: a server under the user's launcher (no console of this host to watch): only
    hang up its shells once it is gone (hydra's second Ctrl-C SIGKILLs the ranks, and their
    shells, sessions of their own, ran on with their commands).

    Both are held as pidfds, opened at once: the wait is on them (no polling), and the
    server is signalled through its own, so a process that took its pid after it ended
    (during the grace period, say) is never reached.
    """
    server_fd = pidfd(server)
    if server_fd is None:
        return
    console_fd = pidfd(console) if console else None
    shells: set[int] = set()  # the sessions the server's shells lead, seen while it lived
    shell_pipes: set[int] = set()  # the pipes between those shells and the server (inodes)
    segments: list[Segment] = []  # MPICH's shared memory the server mapped, seen while it lived
    every = 0.05
    try:
        while console_fd is not None or not console:
            for pid in set(children(server)) - shells:
                if session(pid) == pid:
                    shells.add(pid)
                    shell_pipes |= pipes(pid) or set()
            # the console's too: it makes its node's segment (local rank 0), and may die first
            seen = mapped_segments([server, console] if console_fd is not None else [server], PREFIXES)
            if seen and not any(exited(fd) for fd in (server_fd, console_fd) if fd is not None):
                segments = seen  # read while both lived, not from processes given their pids
            ready = select.select([fd for fd in (console_fd, server_fd) if fd is not None], [], [], every)[0]
            every = min(SHELLS_SEEN_EVERY, every * 1.5)
            if server_fd in ready:
                hang_up(shells, shell_pipes)
                remove_ours(segments)  # gone unfinalized, it left them (gone after MPI's finalize: none left)
                return
            if console_fd in ready:
                break
        log.debug("console %d gone; server %d gets %g s to end by itself", console, server, grace)
        # its shell and the shell's commands, read now: if the server is killed before it has
        # ended them (hydra's proxy SIGKILLs its process group once mpiexec is gone), they are
        # re-parented out of its tree, and only these pidfds still reach them
        me = os.getpid()
        below = [fd for pid in descendants(server) if pid != me and (fd := pidfd(pid)) is not None]
        try:
            if not exited(server_fd, grace):
                log.debug("server %d still there: ending it, its shell and its launcher", server)
                end_session_launcher(server)
                signal_pidfd(server_fd, signal.SIGKILL)
                remove_ours(segments)
            for fd in below:  # what the server did not end, whether it ended by itself or not
                if not exited(fd):
                    signal_pidfd(fd, signal.SIGKILL)
        finally:
            for fd in below:
                os.close(fd)
    finally:
        for fd in (server_fd, console_fd):
            if fd is not None:
                os.close(fd)


SHELLS_SEEN_EVERY = 1.0  # s: how often, at most, the server's shells are looked for (soon after its start)


def hang_up(shells: set[int], shell_pipes: set[int]) -> None:
    """SIGHUP (then SIGCONT, for a stopped one) to what is left in the sessions of a server's
    shells once the server is gone and still holds one of the pipes between them, as ssh's
    hang-up: a server killed with SIGKILL (the OOM killer) left its bash and command running,
    a background job for good (a clush user's review); what the user detached (nohup, setsid,
    or output sent elsewhere: ``server > log 2>&1 &``, as server/jobs.py) is left alone.
    (A SIGHUP to bash alone when the server dies, PR_SET_PDEATHSIG, ended bash but not its
    command: bash passes a SIGHUP on to its jobs only when it reads commands at a terminal.)"""
    me = os.getpid()
    for pid in in_sessions(shells) if shells else []:
        if pid != me and holds_pipe(pid, shell_pipes):
            for signum in (signal.SIGHUP, signal.SIGCONT):
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)


def main(argv: list[str]) -> int:
    setup_logging()  # MPISH_DEBUG, inherited from the server
    # A SIGINT to the whole step or group (srun's "sending Ctrl-C", scancel -s INT) is for the
    # commands: the watcher died of it with a traceback in the job's log, and watched no more.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if argv[:1] == ["--launcher"]:
        try:
            watch_launcher(int(argv[1]), Path(argv[2]), float(argv[3]))
        except (IndexError, ValueError):
            Reporter(prog="mpish.shell.orphan").say("usage: python -m mpish.shell.orphan --launcher "
                                                    "CONSOLE_PID WRAPPER_DIR GRACE_SECONDS")
            return 2
        return 0
    try:
        console, server, grace = int(argv[0]), int(argv[1]), float(argv[2])
    except (IndexError, ValueError):
        Reporter(prog="mpish.shell.orphan").say("usage: python -m mpish.shell.orphan CONSOLE_PID SERVER_PID "
                                                "GRACE_SECONDS")
        return 2
    watch(console, server, grace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
