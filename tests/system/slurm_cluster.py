"""A real one-node Slurm (munged, slurmctld, slurmd as root) in a temporary directory.

Everything it needs lives in that directory: a generated munge key and socket, a
generated slurm.conf with its own ports, state, spool, pid and log files. The daemons
run in the foreground as children of the test process and are killed by pid at the
end. Clients (srun, sinfo) find the cluster through ``SLURM_CONF``.

Job ids start at a random number: MPICH names its shared-memory segment after the
PMI job id, and a killed job leaves it in /dev/shm, where it would hang MPI_Init of a
later job with the same id (each new cluster would otherwise count from 1 again).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CPUS = 8  # more than this machine's cores (SlurmdParameters=config_overrides): srun -n 3 and more fit
READY_TIMEOUT = 30.0


def slurm_problem() -> str:
    """Why a Slurm cannot be started here ("" if it can)."""
    missing = [name for name in ("munged", "slurmctld", "slurmd", "srun", "sinfo") if _which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup --test installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "slurmd must run as root"
    return ""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SlurmCluster:
    """munged + slurmctld + slurmd on this host; :meth:`start`, then :meth:`stop`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """What a client (srun, sinfo) needs on top of the caller's environment."""
        return {"SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        try:
            self._start_munge()
            self._write_conf()
            self._daemon([_need("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
            self._daemon([_need("slurmd"), "-D", "-f", str(self.conf), "-N", self.node], "slurmd.out")
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel this cluster's jobs, kill the daemons (by pid), newest first, and reap them."""
        if self.processes and all(proc.poll() is None for proc in self.processes):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [_need("scancel"), "--full", "--partition=test"],
                    env={**os.environ, **self.env},
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munge/munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    # -- the parts

    def _start_munge(self) -> None:
        munge = self.root / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self._daemon(
            [
                _need("munged"),
                "--foreground",
                "--force",  # as root, in a directory of our own
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            "munge/munged.out",
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.munge_socket.exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start\n{self.logs()}")
            time.sleep(0.05)

    def _write_conf(self) -> None:
        for name in ("state", "spool"):
            (self.root / name).mkdir(mode=0o700)
        r = self.root
        self.conf.write_text(
            f"""\
ClusterName=mpishtest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
MpiDefault=pmi2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
FirstJobId={secrets.randbelow(60_000_000) + 1000}
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={r / "slurmctld.log"}
SlurmdLogFile={r / "slurmd.log"}
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=5
KillWait=5
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN
PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _daemon(self, command: list[str], output: str) -> None:
        with open(self.root / output, "wb") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,  # a terminal's signals do not reach the daemons
            )
        self.processes.append(proc)

    def _check_alive(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}\n{self.logs()}")

    def _wait_ready(self) -> None:
        """Until sinfo shows the node idle (bounded by READY_TIMEOUT)."""
        deadline = time.monotonic() + READY_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            proc = subprocess.run(
                [_need("sinfo"), "-h", "-N", "-o", "%t"],
                env={**os.environ, **self.env},
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            state = proc.stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"slurm not ready in {READY_TIMEOUT:.0f} s (node state {state!r})\n{self.logs()}")


def _need(name: str) -> str:
    path = _which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed")
    return path
