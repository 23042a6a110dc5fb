"""Processes of this host through /proc, and the watcher that ends an orphaned shell server.

A server of an embedded session (``mpish -n K``) whose console died unannounced (SIGKILL)
must end itself and the launcher started for that session alone (the singleton's
``mpiexec -pmi_args`` and its ``hydra_pmi_proxy``): MPI cannot finalize with a dead peer
and the launcher never learns that the console is gone. The server's own loop notices and
ends its command and shell first; but a server stuck inside an MPI call once its peer is
gone (MPICH over TCP spins in one, holding the interpreter) cannot run even a thread. So
each such server also starts this module as a separate process,
``python -m mpish.shell.orphan CONSOLE_PID SERVER_PID GRACE``, which makes no MPI call: once
the console is gone and the server is still there ``GRACE`` seconds later, it ends the
launcher, the proxy and the server. It exits as soon as the server is gone. It holds
both as pidfds, so it never signals a process that took the server's pid.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys

from mpish.report import Reporter, setup_logging
from mpish.transport.procfs import children, cmdline, exited, parent, pidfd, signal_if, signal_pidfd

log = logging.getLogger("mpish.shell.orphan")  # not __name__: run as __main__


def end_session_launcher(server: int) -> None:
    """SIGKILL the proxy above ``server`` (or its exit relay) and the singleton mpiexec above it, if ours.

    Only a ``hydra_pmi_proxy`` parent and, above it, an ``mpiexec`` started with
    ``-pmi_args`` (MPICH's singleton launcher, made for one session) are ended; each is
    checked and signalled through a pidfd (:func:`mpish.transport.procfs.signal_if`).
    """
    proxy = parent(server)
    if cmdline(proxy) == cmdline(server):  # its exit relay (shell/exit_relay.py), a fork of it
        proxy = parent(proxy)
    launcher = parent(proxy)

    def is_proxy(pid: int) -> bool:
        command = cmdline(pid)
        return bool(command) and command[0].endswith(b"hydra_pmi_proxy")

    def is_singleton_launcher(pid: int) -> bool:
        command = cmdline(pid)
        return bool(command) and command[0].endswith(b"mpiexec") and b"-pmi_args" in command

    if is_proxy(proxy):
        signal_if(launcher, is_singleton_launcher, signal.SIGKILL)
        signal_if(proxy, is_proxy, signal.SIGKILL)


def watch(console: int, server: int, grace: float) -> None:
    """Wait while the server lives; once the console is gone, end the server after ``grace``.

    Both are held as pidfds, opened at once: the wait is on them (no polling), and the
    server is signalled through its own, so a process that took its pid after it ended
    (during the grace period, say) is never reached.
    """
    server_fd = pidfd(server)
    if server_fd is None:
        return
    console_fd = pidfd(console)
    try:
        if console_fd is not None:
            ready = select.select([console_fd, server_fd], [], [])[0]
            if server_fd in ready:
                return
        log.debug("console %d gone; server %d gets %g s to end by itself", console, server, grace)
        if exited(server_fd, grace):
            return
        log.debug("server %d still there: ending it, its shell and its launcher", server)
        end_session_launcher(server)
        for child in children(server):  # its shell, if the server could not end it
            if child != os.getpid():  # this watcher is a child of the server too
                signal_if(child, lambda pid: parent(pid) == server, signal.SIGKILL)
        signal_pidfd(server_fd, signal.SIGKILL)
    finally:
        for fd in (server_fd, console_fd):
            if fd is not None:
                os.close(fd)


def main(argv: list[str]) -> int:
    setup_logging()  # MPISH_DEBUG, inherited from the server
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
