"""``mpish ssh`` goes through the user's ControlMaster when their ssh config sets one up.

The user's ssh is run as configured (transport/ssh.py adds only -T, BatchMode, ConnectTimeout
and, where nobody chose them, a Ciphers order: none of them turns multiplexing off), so a
second ``mpish ssh`` to the same host is a new session on the master's connection: sshd sees
no second login.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_util import mpish_ssh
from sshd_server import SshServer, find_sshd


@pytest.fixture
def logged_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd of its own that logs every accepted login (LogLevel VERBOSE)."""
    if find_sshd() is None:
        pytest.skip("OpenSSH sshd is not installed (scripts/setup --test installs it)")
    server = SshServer(tmp_path / "sshd")
    config = server.sshd_config.read_text()
    server.sshd_config.write_text(config.replace("LogLevel ERROR", "LogLevel VERBOSE"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def logins(server: SshServer) -> int:
    return server.log.read_text(errors="replace").count("Accepted publickey")


def test_a_second_session_goes_through_the_users_control_master(
    logged_sshd: SshServer, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    sockets = Path(tempfile.mkdtemp(prefix="mpish-cm-"))  # a short path: a socket's is at most 107 bytes
    master = sockets / "cm-%C"
    config.write_text(f"Host *\n  ControlMaster auto\n  ControlPath {master}\n  ControlPersist 60\n\n"
                      + logged_sshd.ssh_config.read_text())
    logged_sshd.ssh_config = config  # ssh_options: -F config
    try:
        first = mpish_ssh(logged_sshd, "host1", "-c", "echo one")
        assert (first.returncode, first.stdout) == (0, "one\n"), first.stderr
        assert logins(logged_sshd) == 1
        second = mpish_ssh(logged_sshd, "host1", "-c", "echo two")
        assert (second.returncode, second.stdout) == (0, "two\n"), second.stderr
        assert logins(logged_sshd) == 1  # the same connection: no second login
        assert list(sockets.glob("cm-*"))  # the master is still there for the next one
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "host1"], capture_output=True, timeout=30,
                       check=False)
        shutil.rmtree(sockets, ignore_errors=True)
