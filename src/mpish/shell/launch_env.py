"""The environment an embedded console (``mpish -n K``) gives MPI for the spawn of its servers.

MPICH: its singleton init runs ``mpiexec`` from PATH, made the wheel's and wrapped
(:func:`prepare_singleton`). Open MPI's (its launcher prte): ``shell/open_mpi.py``; the
servers drop what was set for the launch before running anything
(:func:`forget_launch_variables`). The reasons are in ``shell/mpi_session.py``.

The spawn itself is watched by a thread (:class:`SpawnWatch`): MPI_Comm_spawn has no time
limit and Python cannot act on Ctrl-C inside it, so servers stuck at start-up would keep
the console there for good. Ctrl-C, the time limit, and (MPICH) a server that ended, end the
launcher, the servers and the console with one line (:func:`end_start`); so does Ctrl-C
after the spawn, until the session is up (:func:`abandon_start`).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from mpish.report import Reporter, owner
from mpish.transport.procfs import descendants
from mpish.transport.shm import describe as describe_memory

from . import protocol
from .open_mpi import FAULT_TOLERANCE, PRTE_TMPDIR, SET_FOR_LAUNCH, remove_prte_tmpdir
from .orphan import (
    end_launcher_tree,
    end_spawn_launcher,
    rank_starters,
    read_launcher_pid,
    started_process_ended,
    watch_command,
)
from .pmi_port import Stdio, foreign_peer
from .scratch import LAUNCH_PREFIX, HeldDirectory
from .segments import (
    drop_singleton_segments,
    foreign_names_since,
    foreign_segments,
    mapped_segments,
    remove_ours,
)

LAUNCHER_PID_FILE = "launcher.pid"
LAUNCHER_MARK = "MPISH_LAUNCHER_DIR"  # in the launcher's environment: the wrapper it was started by
LAUNCHER_GRACE = 4.0  # seconds the launcher of a console that died gets to end by itself (> ORPHAN_GRACE)
SPAWN_POLL = 0.02  # the console's look at its launcher while MPI spawns the servers
STRANGER_EVERY = 5  # polls between two looks at whose is the console's PMI connection (pmi_port.py)
SETTLE = 0.3  # after a server ended at start-up: time for its last words to pass the launcher
SPAWN_STEPS = 4  # the spawn's time limit, in start-up steps (-t): the servers' Python, MPI_Init, launcher
INTERRUPTED = "interrupted while the shell servers started, so there is no session"


_USER_PATH: dict[bytes, bytes] = {}  # PATH before prepare_singleton changed it


def prepare_singleton() -> Path | None:
    """Make MPICH's singleton init (which runs ``mpiexec`` from PATH) run the wheel's launcher.

    That launcher is ``mpiexec.gforker`` where the MPI has it (the mpich wheel does): it forks
    the servers itself and speaks PMI with each over a socketpair, so nothing of the session
    listens on a port but the console's own singleton PMI port. Hydra (``mpiexec``, the
    fallback) listens for its proxy on a TCP port of every address, unauthenticated: whoever
    reaches it first gets the job's environment and can have hydra run programs as the user
    (PMI ``spawn``). The launcher is started through a wrapper, in its own session
    (``setsid``, so that its signals never reach the user's shell or script in our process
    group), with /dev/null as its input (gforker's servers inherit it; the terminal is the
    console's) and with the launch environment only (:func:`launch_environment_names`, ``env
    -i``): the user's variables reach the servers over the secure channel
    (``protocol.Environ``). gforker signals every process of the job (SIGINT, then SIGQUIT)
    when one ends abnormally, the singleton too: the wrapper gives it pid 0 for the console
    (which it then leaves alone), and the servers' exit relays ignore both
    (``shell/exit_relay.py``). Hydra gets ``-disable-auto-cleanup`` (see
    ``shell/mpi_session.py``). Call it last before MPI starts: the variables the console sets
    for the launch must be set by then.
    Returns the temporary directory of the wrapper, its config file and the pid of the
    launcher it runs (``setsid`` does not fork: the wrapper leads no process group), removed
    once the servers run (None if not made). It is locked while the console or its watcher
    lives, so one left by a console killed at the wrong moment is swept by a later start
    (``shell/scratch.py``).
    """
    bindir = Path(sys.executable).parent
    real = bindir / "mpiexec"
    if b"PATH" in os.environb:  # the servers' commands get it back (environ_messages)
        _USER_PATH[b"PATH"] = os.environb[b"PATH"]
    path = os.environ.get("PATH", "")
    if real.exists() and path.split(os.pathsep)[0] != str(bindir):
        path = str(bindir) + os.pathsep + path
    os.environ["PATH"] = path
    setsid = shutil.which("setsid")
    env = shutil.which("env")
    if not real.exists() or setsid is None or env is None or "HYDRA_CONFIG_FILE" in os.environ:
        return None
    global _wrapper
    forker = bindir / "mpiexec.gforker"
    _wrapper = HeldDirectory(LAUNCH_PREFIX)  # locked until the console and its watcher are gone
    atexit.register(remove_wrapper)  # a start that failed (LaunchError) has nothing else to do it
    wrapper = Path(_wrapper.path)
    (wrapper / "hydra.conf").write_text("-disable-auto-cleanup\n")
    script = wrapper / "mpiexec"
    kept = " ".join(f'${{{name}+"{name}=${name}"}}'  # set: one word, as it is; unset: none
                    for name in sorted({*launch_environment_names(os.environ), "PATH", "HYDRA_CONFIG_FILE",
                                        LAUNCHER_MARK}))
    lines = [
        "#!/bin/sh",
        f"PATH={shlex.quote(path)}; export PATH",
        f"HYDRA_CONFIG_FILE={shlex.quote(str(wrapper / 'hydra.conf'))}; export HYDRA_CONFIG_FILE",
        f"{LAUNCHER_MARK}={shlex.quote(str(wrapper))}; export {LAUNCHER_MARK}",
        f"echo $$ > {shlex.quote(str(wrapper / LAUNCHER_PID_FILE))}",
    ]
    if forker.exists():  # [-v] -pmi_args PORT INTERFACE KEY PID: the console is signalled as PID
        lines += ['i=0; at=0; for word; do i=$((i + 1)); [ "$word" = -pmi_args ] && at=$((i + 4)); done',
                  'i=0; n=$#; while [ $i -lt $n ]; do word=$1; shift; i=$((i + 1)); '
                  '[ $i -eq $at ] && word=0; set -- "$@" "$word"; done']
        lines.append(f'exec {shlex.quote(env)} -i {kept} {shlex.quote(setsid)} '
                     f'{shlex.quote(str(forker))} "$@" < /dev/null')
    else:
        lines.append(f'exec {shlex.quote(env)} -i {kept} {shlex.quote(setsid)} {shlex.quote(str(real))} "$@"')
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o700)
    os.environ["PATH"] = str(wrapper) + os.pathsep + path
    return wrapper


# What the singleton's mpiexec (and through it every server, before the console's Environ)
# is given of the console's environment: what hydra, MPI's start in the servers (its MPICH,
# libfabric, UCX settings, the loopback and fault-tolerance variables set here), their Python
# (the interpreter's own variables, the library path, the locale) and their key loading (HOME,
# MPISH_HOME) need; nothing a user keeps secrets in. PATH is the wrapper's.
LAUNCH_NAMES = frozenset(("HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LANGUAGE", "LD_LIBRARY_PATH",
                          "LD_PRELOAD", "OPAL_PREFIX"))
LAUNCH_PREFIXES = ("LC_", "PYTHON", "MPISH_", "HYDRA_", "MPIEXEC_", "MPIR_CVAR_", "MPICH_", "FI_", "UCX_",
                   "OMPI_MCA_", "PRTE_MCA_", "PRTE_ALLOW_")
# a limit the user set for MPI jobs (mpiexec ends a job after that many seconds) is not one on
# an interactive session: its launcher ended the servers, or (gforker) left them running and the
# console crashing in MPI's end; the servers still have it in their environment (protocol.Environ)
NOT_FOR_LAUNCH = frozenset(("MPIEXEC_TIMEOUT",))
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def launch_environment_names(environ: Mapping[str, str]) -> list[str]:
    """The names of ``environ`` that the singleton's mpiexec is started with (LAUNCH_NAMES,
    LAUNCH_PREFIXES, but not NOT_FOR_LAUNCH); every other variable reaches the servers over the
    secure channel only."""
    return sorted(name for name in environ if _NAME.fullmatch(name) and name not in NOT_FOR_LAUNCH
                  and (name in LAUNCH_NAMES or name.startswith(LAUNCH_PREFIXES)))


def start_launcher_watch(wrapper: Path) -> subprocess.Popen[bytes] | None:
    """Start the watcher that ends this console's launcher once the console is gone
    (:func:`mpish.shell.orphan.watch_launcher`); it removes ``wrapper`` then, and holds its
    lock until it has. Before the spawn: a console killed while its servers start (or fail
    to) has no server to do it."""
    held = () if _wrapper is None or _wrapper.fd is None else (_wrapper.fd,)
    try:
        return subprocess.Popen(
            watch_command(os.getpid(), wrapper, LAUNCHER_GRACE), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
            pass_fds=held)
    except OSError:
        return None


class SpawnWatch:
    """While MPI spawns the servers (the console's thread is inside MPI_Comm_spawn, which
    releases the interpreter), a thread watches the start, as nothing else can:

    * Ctrl-C: Python runs its SIGINT handler only once the spawn returns, which a server stuck
      at start-up never lets it do. Python's own C handler writes the signal's number to a
      wakeup pipe (``signal.set_wakeup_fd``), which this thread reads.
    * the start-up time limit (``limit`` seconds; MPI's spawn has none).
    * under MPICH's singleton (``wrapper``, :func:`prepare_singleton`), the launcher: once a
      server it started has ended, the spawn can never complete (MPICH waits for every server,
      and neither gforker nor hydra's proxy says so; hydra's spins); a server that has mapped
      shared memory of another user spins in MPI_Init for good (``shell/segments.py``).

    ``failed(launcher, why, status)`` is called then, in the thread, ``launcher`` being the
    singleton's mpiexec (0: unknown, or not MPICH) and ``why`` the line to print; it must not return.
    """

    def __init__(self, wrapper: Path | None, failed: Callable[[int, str, int], None], server: str,
                 limit: float) -> None:
        self.wrapper = wrapper
        self.failed = failed
        self.server = server
        self.limit = limit
        self.started = time.time() - 1.0  # ctimes are whole ticks: a second's margin
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mpish-spawn-watch", daemon=True)
        self._wakeup: tuple[int, int] | None = None  # the pipe Python's signal handler writes to
        self._previous_wakeup = -1
        self.stdio: Stdio | None = None  # MPICH's singleton: descriptors 0-2 as they were (pmi_port.py)

    def __enter__(self) -> SpawnWatch:
        if self.wrapper is not None:
            self.stdio = Stdio()
        read, write = os.pipe()
        os.set_blocking(write, False)
        try:
            self._previous_wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
            self._wakeup = (read, write)
        except ValueError:  # not the main thread: Ctrl-C is not ours to handle
            os.close(read)
            os.close(write)
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.done.set()
        self.thread.join()
        if self.stdio is not None:  # the spawn returned or failed: through our launcher, or a stranger?
            self._stranger(read_launcher_pid(self.wrapper) if self.wrapper else 0)
            self.stdio.close()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            for fd in self._wakeup:
                os.close(fd)
            self._wakeup = None

    def _interrupted(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True if a SIGINT arrived meanwhile."""
        if self._wakeup is None:
            self.done.wait(timeout)
            return False
        if not select.select([self._wakeup[0]], [], [], timeout)[0]:
            return False
        try:
            return signal.SIGINT in os.read(self._wakeup[0], 64)
        except BlockingIOError:
            return False

    def _run(self) -> None:
        launcher = looks = 0
        deadline = time.monotonic() + self.limit
        while not self.done.is_set():
            interrupted = self._interrupted(SPAWN_POLL)
            if self.done.is_set():  # the spawn returned: the console takes over (a Ctrl-C included)
                return
            launcher = launcher or (read_launcher_pid(self.wrapper) if self.wrapper else 0)
            looks += 1
            if self.stdio is not None and looks % STRANGER_EVERY == 0:  # reads the whole socket table
                self._stranger(launcher)
            if interrupted:
                self.failed(launcher, INTERRUPTED, 130)
                return
            if time.monotonic() > deadline:
                self.failed(launcher, f"the shell servers did not start within {self.limit:g} s, so there is "
                                      f"no session; check that this runs here: {self.server} "
                                      f"(-t SECONDS gives each start-up step longer)", 1)
                return
            if self.wrapper is None:
                continue
            starters = rank_starters(launcher) if launcher else []  # gforker, or hydra's proxies
            foreign = foreign_segments([pid for starter in starters for pid in descendants(starter)])
            if foreign:
                self.failed(launcher, describe_memory(foreign[0], who="a shell server"), 1)
                return
            if any(started_process_ended(starter) for starter in starters):
                if not self.done.wait(SETTLE):  # the spawn did not return meanwhile after all
                    self.failed(launcher, self._ended(), 1)
                return

    def _stranger(self, launcher: int) -> None:
        """End the start if the console's singleton PMI connection is not its launcher's
        (``shell/pmi_port.py``): descriptors 0-2 put back, one line, no session."""
        assert self.stdio is not None
        replaced = self.stdio.restore()  # MPICH's launchers answer stdio=no: a stranger asked for them
        stranger = foreign_peer(os.getpid(), launcher)
        if stranger and not launcher and self.wrapper is not None:  # its pid file half-written?
            launcher = read_launcher_pid(self.wrapper)
            stranger = foreign_peer(os.getpid(), launcher)
        if replaced and not stranger:
            stranger = "a process that was not its launcher (it took the console's stdin, stdout and stderr)"
        if not stranger:
            return
        self.stdio.take_back()
        self.failed(launcher, f"{stranger} connected to this console's MPI start-up port (MPICH's "
                              f"singleton PMI port, open on every address) before its launcher did, to "
                              f"take the start over, so no session was started and your terminal is "
                              f"yours again; run mpish again, and if this repeats, someone on this host "
                              f"is attacking your sessions: tell its administrators", 1)

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
_wrapper: HeldDirectory | None = None  # prepare_singleton's directory, while the console has it


def launcher_watched() -> bool:
    return _launcher_watch is not None and _launcher_watch.poll() is None


def remove_wrapper() -> None:
    """The servers run (or never will): :func:`prepare_singleton`'s directory goes, unless the
    launcher's watcher removes it once the console is gone (the launcher may still read it)."""
    global _wrapper
    if _wrapper is not None:
        if launcher_watched():
            _wrapper.release()  # the watcher holds the lock on
        else:
            _wrapper.remove()
        _wrapper = None


def end_start(launcher: int, why: str, status: int) -> NoReturn:
    """End a start that cannot complete: say ``why``, end the launcher and the servers, exit.

    ``launcher``: MPICH's singleton mpiexec (0: not known yet, its watcher ends it once the
    console is gone, :func:`start_launcher_watch`; or not MPICH: the prte Open MPI started).
    """
    if threading.current_thread() is threading.main_thread():  # a second Ctrl-C must not cut it short
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
    Reporter().say(why)
    if launcher:
        segments = mapped_segments([os.getpid(), *descendants(launcher)])  # no finalize will remove them
        end_launcher_tree(launcher)
        remove_ours(segments)
    else:
        end_spawn_launcher(os.getpid())
        remove_prte_tmpdir()
        drop_singleton_segments()
    remove_wrapper()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def abandon_start(wrapper: Path | None, launcher: int = 0) -> NoReturn:
    """Ctrl-C after the spawn returned, before the session is up (merge, admission, handshakes)."""
    end_start(launcher or (read_launcher_pid(wrapper) if wrapper else 0), INTERRUPTED, 130)


@contextlib.contextmanager
def owned_launcher(wrapper: Path | None, server: str, limit: float) -> Iterator[None]:
    """Around the spawn: the console owns the launcher from its start (``wrapper``:
    :func:`prepare_singleton`'s directory under MPICH's singleton, else None). A watcher ends it
    if the console dies (:func:`start_launcher_watch`); a server that ends before the spawn
    completes (``server``: its command), Ctrl-C, or ``limit`` seconds without the spawn
    completing end the launcher, its servers and the console, with one line (:class:`SpawnWatch`).
    """
    global _launcher_watch
    if wrapper is not None:
        _launcher_watch = start_launcher_watch(wrapper)
    with SpawnWatch(wrapper, end_start, server, limit):
        yield


# an embedded session is on this host alone: MPI's network listeners on loopback only (UCX,
# MPICH's default netmod in the wheel; libfabric's tcp provider). What stays on 0.0.0.0 cannot be
# moved: MPICH's singleton PMI port (the console's) and hydra's control port (mpiexec's) are bound
# by MPL_listen_anyport with use_loopback=0, compiled in (mpl_sockaddr.c, pmi_v1.c, hydra's sock.c).
# UCX's tcp transport is off as well (shared memory carries everything on one host): any local
# user could open a thousand connections to its listeners, and each rank and the console then
# ran out of descriptors and printed an accept() error in a loop, ~70 MB/s to the user's terminal,
# until the session ended (a security review); SysV is off as in transport/mpi.py.
LOOPBACK = {"UCX_NET_DEVICES": "lo", "UCX_TLS": "^sysv,tcp", "FI_TCP_IFACE": "lo"}


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


def environ_messages(environ: Mapping[bytes, bytes]) -> list[protocol.Environ]:
    """The console's environment as :class:`~mpish.shell.protocol.Environ` messages, for the
    servers it spawned (their launcher was given the launch environment only), with the PATH
    the user had: :func:`prepare_singleton` put the launcher's wrapper and mpish's own bin
    directory first, and the servers' commands found mpish's python3, pip and mpiexec before
    the user's (helper-130: ``pip install`` went into mpish's venv)."""
    environ = {**environ, **_USER_PATH}
    data = b"".join(name + b"=" + value + b"\0" for name, value in environ.items())
    step = protocol.ENVIRON_PIECE
    starts = range(0, len(data), step) if data else range(1)
    return [protocol.Environ(data[start:start + step], start + step >= len(data)) for start in starts]


def adopt_console_environ(data: bytes) -> None:
    """A spawned server: the console's environment (:func:`environ_messages`, joined) over the
    one its launcher gave it, then without the variables set for the launch
    (:func:`forget_launch_variables`); the launcher's own (PMI's) stay. Before its shell starts,
    so that every command sees the user's environment, as the console has it."""
    for entry in data.split(b"\0")[:-1]:
        name, equals, value = entry.partition(b"=")
        if name and equals:
            os.environb[name] = value
    forget_launch_variables()


def forget_launch_variables() -> None:
    """Drop the variables the console set for MPI's start (after MPI_Init; a server's commands
    must see the user's environment, not an Open MPI with fault tolerance turned on)."""
    for name in os.environ.pop(SET_FOR_LAUNCH, "").split(","):
        if name in (*FAULT_TOLERANCE, *LOOPBACK, "OPAL_PREFIX", PRTE_TMPDIR):
            os.environ.pop(name, None)
