"""What an embedded session (``mpish -n 2``) listens on: MPI's transports on loopback only; the
console's singleton PMI port, which MPICH binds with INADDR_ANY compiled in, is the only other
(launch_env.LOOPBACK); its launcher (mpiexec.gforker) listens on none."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpish.shell.server.bash import STRIP_ENV_PREFIXES
from shell_util import MPI, MPISH, kill_session, make_home, session_processes, shell_env

pytestmark = pytest.mark.mpi


def _listeners() -> dict[int, str]:
    """Every listening TCP socket of the host (IPv4): inode -> "address:port"."""
    found = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "0A":  # LISTEN
            continue
        address, port = fields[1].split(":")
        ip = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
        found[int(fields[9])] = f"{ip}:{int(port, 16)}"
    return found


def _held_by(pids: list[int]) -> dict[int, set[int]]:
    """Socket inode -> the pids (of ``pids``) holding it."""
    held: dict[int, set[int]] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        held.setdefault(int(target[8:-1]), set()).add(pid)
    return held


def test_an_embedded_session_listens_on_no_address_of_the_host_but_loopback(tmp_path: Path) -> None:
    """Every rank's transport (UCX) listened on the host's other address as well as 127.0.0.1.
    Under MPICH (UCX) none listens at all: a local user's thousand connections to UCX's loopback
    listeners exhausted the console's and the ranks' descriptors and made UCX print an accept()
    error in a loop to the user's terminal (a security review); only the singleton port is left."""
    home = make_home(tmp_path / "home")
    err = tmp_path / "console.err"
    with err.open("wb") as stream:
        proc = subprocess.Popen([MPISH, "-n", "2", "-c", "sleep 5"], env=shell_env(home), cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stream,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(command.startswith(b"sleep\0") for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.05)
        processes = session_processes(home)
        listeners = _listeners()
        ours = {listeners[inode]: holders for inode, holders in _held_by(list(processes)).items()
                if inode in listeners}
        assert ours, processes  # the session's transports do listen
        elsewhere = {address: holders for address, holders in ours.items()
                     if not address.startswith(("127.", "0.0.0.0:"))}
        assert not elsewhere, elsewhere
        if MPI.name == "mpich":  # MPICH's singleton PMI port (the console's) alone; its launcher has none
            assert len(ours) == 1 and next(iter(ours)).startswith("0.0.0.0:"), ours
        elif MPI.name != "openmpi":  # over libfabric's tcp provider: its listeners on loopback too
            assert len([address for address in ours if address.startswith("0.0.0.0:")]) <= 1, ours
        assert proc.wait(timeout=60) == 0, err.read_text(errors="replace")
    finally:
        kill_session(proc.pid, home)


def test_the_servers_commands_see_the_users_environment_not_the_loopback_settings(tmp_path: Path) -> None:
    """UCX_NET_DEVICES=lo and UCX_TLS=^sysv,tcp are for MPI's start only: a user's own MPI
    program run from the shell must not be confined to loopback or to shared memory."""
    home = make_home(tmp_path / "home")
    launch_only = ("UCX_NET_DEVICES", "UCX_TLS", "FI_TCP_IFACE")
    env = {k: v for k, v in shell_env(home).items() if k not in launch_only}
    result = subprocess.run([MPISH, "-n", "1", "-c", "echo ucx=${UCX_NET_DEVICES-unset},${UCX_TLS-unset}"],
                            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().splitlines()[-1] == "ucx=unset,unset", result.stdout


@pytest.mark.skipif(MPI.name == "openmpi", reason="MPICH's singleton launcher")
def test_the_embedded_sessions_launcher_listens_on_no_port_of_its_own(tmp_path: Path) -> None:
    """hydra (MPICH's mpiexec) listened for its proxy on 0.0.0.0 with no authentication: whoever
    connected first (a local user polling the world-readable /proc/net/tcp, then sending hydra's
    12-byte init header) got the job's environment and could have hydra run programs as the user
    (PMI spawn). The embedded session's launcher is mpiexec.gforker, which forks the servers and
    speaks PMI over socketpairs: the only listening sockets it holds are the console's, inherited
    (MPICH's singleton PMI port, which the console has already accepted its launcher on). The
    attack is made as well: a connection to each port the launcher holds, hydra's header sent,
    gets no byte of the session's environment."""
    home = make_home(tmp_path / "home")
    secret = "s3cret-" + os.urandom(8).hex()
    err = tmp_path / "console.err"
    with err.open("wb") as stream:
        proc = subprocess.Popen([MPISH, "-n", "2", "-c", "sleep 5"], env=shell_env(home, MY_API_TOKEN=secret),
                                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stream, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sum(command.startswith(b"sleep\0") for command in session_processes(home).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text(errors="replace")
            time.sleep(0.05)
        processes = session_processes(home)
        launchers = [pid for pid, command in processes.items() if b"mpiexec" in command.split(b"\0")[0]]
        assert launchers, processes
        listeners = _listeners()
        held = _held_by([proc.pid, *launchers])
        launchers_own = {listeners[inode] for inode, holders in held.items()
                         if inode in listeners and proc.pid not in holders}
        assert not launchers_own, f"the launcher listens on {launchers_own}"
        leaked = b""
        for inode, holders in held.items():
            if inode in listeners and holders & set(launchers):
                port = int(listeners[inode].rsplit(":", 1)[1])
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as sock:
                    sock.settimeout(2)
                    sock.sendall(b"HYD\0" + struct.pack("=ii", 0, 0))  # hydra's init header: pgid 0, proxy 0
                    with contextlib.suppress(OSError):
                        while chunk := sock.recv(65536):
                            leaked += chunk
        assert secret.encode() not in leaked, "the session's environment was sent to a stranger"
        assert proc.wait(timeout=60) == 0, err.read_text(errors="replace")
    finally:
        kill_session(proc.pid, home)
        proc.wait(timeout=30)


@pytest.mark.parametrize("venv_on_path", [True, False])
def test_a_spawned_servers_commands_see_the_users_environment_exactly(
    tmp_path: Path, venv_on_path: bool
) -> None:
    """The servers' launcher is given the launch environment only; the rest comes from the
    console after the handshake (protocol.Environ): every variable of the user's, with its value
    byte for byte (spaces, newlines, quotes, unicode), PATH in its order, none added but mpish's.
    Without mpish's bin directory on the user's PATH (mpish run by its path, as a user's
    alias does), the console put it first for MPICH's start, and the servers' commands ran
    mpish's python3, pip and mpiexec instead of the user's (helper-130)."""
    home = make_home(tmp_path / "home")
    odd = "two  spaces\n\ttab and newline 'single' \"double\" $HOME `true` \\ ünïcödé ✓ =x"
    first = [str(Path(MPISH).parent)] if venv_on_path else []
    path = os.pathsep.join([*first, "/nonexistent/first", "/usr/local/bin", "/usr/bin", "/bin",
                            "/nonexistent/last"])
    env = shell_env(home, MY_ODD_VALUE=odd, MY_API_TOKEN="s3cret", MY_EMPTY="", PATH=path)
    env = {k: v for k, v in env.items() if k not in ("UCX_NET_DEVICES", "FI_TCP_IFACE")}
    result = subprocess.run([MPISH, "-n", "2", "-c", "env -0 > env.$MPISH_RANK"], env=env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=90)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    mpish_own = {"MPISH_RANK", "MPISH_SIZE", "__MPISH_JOB", "PWD", "OLDPWD", "SHLVL", "_"}
    for rank in (1, 2):
        entries = (tmp_path / f"env.{rank}").read_bytes().split(b"\0")[:-1]
        seen = dict(entry.decode().split("=", 1) for entry in entries)
        assert seen["MY_ODD_VALUE"] == odd
        assert seen["PATH"] == path
        assert seen["MY_EMPTY"] == ""
        missing = {k for k in env
                   if k.isidentifier() and k not in seen and not k.startswith(STRIP_ENV_PREFIXES)}
        assert not missing, missing  # (the MPI launcher's own variables are not the user's, as before)
        changed = {k: (v, seen[k]) for k, v in env.items() if seen.get(k, v) != v and k not in mpish_own}
        assert not changed, changed


@pytest.mark.skipif(MPI.name == "openmpi", reason="MPICH's singleton launcher")
def test_without_gforker_a_session_starts_under_hydra_as_before(tmp_path: Path) -> None:
    """An MPICH with no mpiexec.gforker beside its Python (a plain build: hydra only) falls back
    to hydra. There hydra's proxy, not mpiexec, connects to the console's singleton port, and the
    check of whose that connection is (shell/pmi_port.py) named it a stranger: no start at all.
    The MPICH here is played by a copy of this virtual environment without gforker."""
    real = Path(sys.executable).parent.parent
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib").symlink_to(real / "lib")
    (venv / "pyvenv.cfg").write_text((real / "pyvenv.cfg").read_text())
    for name in os.listdir(real / "bin"):
        if name != "mpiexec.gforker":
            target = real / "bin" / name
            python_itself = name.startswith("python")
            (venv / "bin" / name).symlink_to(os.path.realpath(target) if python_itself else target)
    python = venv / "bin" / "python"
    home = make_home(tmp_path / "home")
    above = "p=$$; for step in 1 2 3; do p=$(ps -o ppid= -p $p | tr -d ' '); done; ps -o comm= -p $p"
    result = subprocess.run([str(python), "-m", "mpish", "-n", "2", "-c", f"echo ran; {above}"],
                            env=shell_env(home), cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=120)
    text = result.stderr.decode(errors="replace")
    assert result.returncode == 0, text
    assert "connected to this console's MPI start-up port" not in text, text
    assert result.stdout.decode().splitlines()[-2:] == ["ran", "hydra_pmi_proxy"], result.stdout
