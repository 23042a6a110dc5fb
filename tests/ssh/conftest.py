"""Fixtures: one real OpenSSH sshd on 127.0.0.1 per session, keys made per run."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ssh_util import console_at_terminal
from sshd_server import SshServer, find_sshd

from marks import mark_directory
from mpish.ssh import Remote, connect
from terminal import Person

pytest_collection_modifyitems = mark_directory(__file__, "ssh")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if find_sshd() is None:  # CI installs openssh-server (scripts/setup --test): no skip there
        pytest.skip("OpenSSH sshd is not installed (scripts/setup --test installs it)")
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (no SSH banner)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture
def silent_config(sshd: SshServer, silent_port: int, tmp_path: Path) -> Path:
    """An ssh_config with the test hosts and ``silent*``: hosts whose port accepts and never speaks."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {sshd.ssh_options[1]}\n\nHost silent*\n  HostName 127.0.0.1\n"
                      f"  Port {silent_port}\n  LogLevel ERROR\n  StrictHostKeyChecking no\n"
                      "  UserKnownHostsFile /dev/null\n")
    return config


@pytest.fixture
def connect_options(sshd: SshServer) -> dict[str, object]:
    """What connect() needs to reach the test sshd with this venv's Python."""
    return {"python": sys.executable, "ssh_options": sshd.ssh_options}


@pytest.fixture(scope="module")
def remote(sshd: SshServer) -> Iterator[Remote]:
    with connect("host1", python=sys.executable, ssh_options=sshd.ssh_options) as r:
        yield r


@pytest.fixture
def person(sshd: SshServer, tmp_path: Path) -> Iterator[Person]:
    """A person at the console of ``mpish ssh host[1-2],nohost.invalid`` on a pseudo-terminal."""
    with console_at_terminal(sshd, "host[1-2],nohost.invalid", tmp_path) as at:
        yield at
