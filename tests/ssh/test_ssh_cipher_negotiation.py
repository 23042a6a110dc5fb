"""Over a real sshd, mpish's ssh negotiates AES-GCM where the CPU has AES instructions and no
configuration chose the ciphers, and keeps a configured choice (transport/ssh_ciphers.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from ssh_util import mpish_ssh
from sshd_server import SshServer, find_sshd

from mpish.transport.ssh_ciphers import cpu_has_aes, default_ciphers

NEGOTIATED = re.compile(r"kex: client->server cipher: (\S+)")


@pytest.fixture
def debug_sshd(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd of its own that logs each connection's negotiated cipher (LogLevel DEBUG)."""
    if find_sshd() is None:
        pytest.skip("OpenSSH sshd is not installed (scripts/setup --test installs it)")
    server = SshServer(tmp_path / "sshd")
    server.sshd_config.write_text(server.sshd_config.read_text().replace("LogLevel ERROR", "LogLevel DEBUG"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def negotiated(server: SshServer) -> list[str]:
    return NEGOTIATED.findall(server.log.read_text(errors="replace"))


def test_a_session_negotiates_aes_gcm_where_the_cpu_has_aes_and_nothing_chose(debug_sshd: SshServer) -> None:
    proc = mpish_ssh(debug_sshd, "host1", "-c", "echo up")
    assert (proc.returncode, proc.stdout) == (0, "up\n"), proc.stderr
    default = default_ciphers("ssh")
    expected = "aes256-gcm@openssh.com" if cpu_has_aes(Path("/proc/cpuinfo").read_text()) else default[0]
    assert negotiated(debug_sshd) == [expected], debug_sshd.log.read_text()[-3000:]


def test_a_ciphers_line_in_an_included_config_file_is_kept(debug_sshd: SshServer, tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.conf"
    chosen.write_text("Host *\n  Ciphers aes128-ctr\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {chosen}\n\n" + debug_sshd.ssh_config.read_text())
    debug_sshd.ssh_config = config  # ssh_options: -F config
    proc = mpish_ssh(debug_sshd, "host1", "-c", "echo up")
    assert (proc.returncode, proc.stdout) == (0, "up\n"), proc.stderr
    assert negotiated(debug_sshd) == ["aes128-ctr"]


def test_a_cipher_given_with_the_users_options_is_kept(debug_sshd: SshServer) -> None:
    proc = mpish_ssh(debug_sshd, "-o", "-c aes192-ctr", "host1", "-c", "echo up")
    assert (proc.returncode, proc.stdout) == (0, "up\n"), proc.stderr
    assert negotiated(debug_sshd) == ["aes192-ctr"]
