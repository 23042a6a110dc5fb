"""The parent a shell server rank runs under with MPICH's launcher, so that a signal kills one rank only.

Hydra's proxy (MPICH 4.0 and later, ``src/pm/hydra/proxy/pmip.c``, added as "abort if a
process dies before PMI initialization") SIGKILLs the process group of every process it
started as soon as one of them is *killed by a signal*, with or without
``-disable-auto-cleanup`` and whether PMI was initialised or not. Its process list holds
every server of the session and, in embedded mode, the singleton's ``mpiexec`` itself
(MPICH's singleton init gives it the forked child's pid), so ``kill -9`` of one server,
the OOM killer or a crash took every other server and the launcher with it (measured
with ``strace -f -e trace=signal``: SIGKILL to every group 0.5 ms after the SIGCHLD).
A process that *exits* is treated otherwise: its PMI connection closes unfinalized, which
with ``-disable-auto-cleanup`` is announced to the others with SIGUSR1, and nothing more.

So the process hydra starts for a server rank forks before any MPI call
(:func:`relay_exit`): the child is the server; the parent makes no MPI call, holds no
MPI connection and only waits, then exits with the child's status as an exit code
(128+N for signal N, as a shell reports it). Hydra sees only exits. SIGTERM, SIGHUP and
SIGQUIT sent to the parent are passed on to the server; SIGINT and SIGUSR1 (hydra's
notices, sent to the whole process group, which the server receives too) are not.

Under ``mpiexec.gforker`` (the embedded session's launcher where MPICH has it,
``shell/launch_env.py``) the relay is the process gforker forked. When one of its processes
ends abnormally (a signal, or an exit without PMI's finalize) gforker ends every other:
SIGINT, a second later SIGQUIT, to each process it forked. The relay ignores both there, so
the other servers go on and the console reports the dead one, as under hydra.
Only under hydra (PMI_FD or PMI_PORT without PMIx or Slurm): Open MPI ends the whole job
when any rank ends unfinalized, so a relay would change nothing there.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import NoReturn

from mpish.transport.procfs import cmdline


def is_forker(pid: int) -> bool:
    """MPICH's ``mpiexec.gforker``: it forks the job's processes itself (no proxy)."""
    command = cmdline(pid)
    return bool(command) and command[0].endswith(b"mpiexec.gforker")

FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
SWALLOWED = (signal.SIGINT, signal.SIGUSR1)


def under_hydra() -> bool:
    """True if this process was started by MPICH's hydra (mpiexec, or a spawn through it)."""
    env = os.environ
    return ("PMI_FD" in env or "PMI_PORT" in env) and not any(
        name in env for name in ("PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_ID"))


def relay_exit() -> None:
    """Fork: return in the child (the server); the parent waits and exits with its status.

    Call before MPI is initialised, and only where :func:`under_hydra` is true.
    """
    # The relay takes its signals synchronously (sigtimedwait): blocked from before the fork, a
    # signal that comes before it waits stays pending for it. Python handlers could not do this:
    # one runs between bytecodes, and a SIGTERM that landed after the last check but before
    # waitpid began was never passed on (the relay hung; CI, 1 in 300 runs under load).
    before = signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, *SWALLOWED, signal.SIGCHLD))
    swallowed = SWALLOWED + ((signal.SIGQUIT,) if is_forker(os.getppid()) else ())
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        return
    _relay(child, swallowed)


def _relay(child: int, swallowed: tuple[signal.Signals, ...] = SWALLOWED) -> NoReturn:
    """Pass FORWARDED signals on to ``child`` (all but ``swallowed``) until it ends, then exit
    with its status (128+N for signal N). The signals are blocked: taken by sigtimedwait."""
    with contextlib.suppress(KeyError, ValueError, OSError):  # the server's PMI connection, not ours
        os.close(int(os.environ["PMI_FD"]))
    taken = {*FORWARDED, *swallowed, signal.SIGCHLD}
    while True:
        try:
            pid, status = os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            os._exit(1)
        if pid == child and (os.WIFEXITED(status) or os.WIFSIGNALED(status)):
            break
        info = signal.sigtimedwait(taken, 1.0)  # SIGCHLD, or a second without: waitpid again
        if info is not None and info.si_signo in FORWARDED and info.si_signo not in swallowed:
            with contextlib.suppress(OSError):
                os.kill(child, info.si_signo)
    code = os.waitstatus_to_exitcode(status)
    os._exit(128 - code if code < 0 else code)
