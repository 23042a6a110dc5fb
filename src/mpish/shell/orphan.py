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
launcher, the proxy and the server. It exits as soon as the server is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time

from mpish.report import Reporter, setup_logging
from mpish.transport.procfs import alive, children, cmdline, parent

log = logging.getLogger("mpish.shell.orphan")  # not __name__: run as __main__


def end_session_launcher(server: int) -> None:
    """SIGKILL the proxy above ``server`` (or its exit relay) and the singleton mpiexec above it, if ours.

    Only a ``hydra_pmi_proxy`` parent and, above it, an ``mpiexec`` started with
    ``-pmi_args`` (MPICH's singleton launcher, made for one session) are ended.
    """
    proxy = parent(server)
    if cmdline(proxy) == cmdline(server):  # its exit relay (shell/exit_relay.py), a fork of it
        proxy = parent(proxy)
    launcher = parent(proxy)
    proxy_cmd, launcher_cmd = cmdline(proxy), cmdline(launcher)
    if proxy_cmd and proxy_cmd[0].endswith(b"hydra_pmi_proxy"):
        if launcher_cmd and launcher_cmd[0].endswith(b"mpiexec") and b"-pmi_args" in launcher_cmd:
            with contextlib.suppress(OSError):
                os.kill(launcher, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(proxy, signal.SIGKILL)


def watch(console: int, server: int, grace: float) -> None:
    """Wait while the server lives; once the console is gone, end the server after ``grace``."""
    while alive(server):
        if not alive(console):
            log.debug("console %d gone; server %d gets %g s to end by itself", console, server, grace)
            time.sleep(grace)
            if alive(server):
                log.debug("server %d still there: ending it, its shell and its launcher", server)
                end_session_launcher(server)
                for child in children(server):  # its shell, if the server could not end it
                    if child == os.getpid():  # this watcher is a child of the server too
                        continue
                    with contextlib.suppress(OSError):
                        os.kill(child, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(server, signal.SIGKILL)
            return
        time.sleep(1.0)


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
