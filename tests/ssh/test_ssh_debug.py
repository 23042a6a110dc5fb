"""``mpish ssh --debug``: the remote side's diagnostics reach the user, labelled with the host."""

from __future__ import annotations

import re
from pathlib import Path

from ssh_util import mpish_ssh
from sshd_server import SshServer


def test_debug_shows_each_hosts_remote_diagnostics_prefixed_with_its_name(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "--debug", "-c", "true")
    assert done.returncode == 0, done.stderr
    for host in ("host1", "host2"):  # the shipped server's log line at its end, through ssh's stderr
        assert re.search(rf"^{host}: mpish\[\d+\] mpish\.shell\.server\.loop: the session ends", done.stderr,
                         re.MULTILINE), done.stderr


def test_without_debug_the_remote_side_logs_nothing(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host1", "-c", "true")
    assert done.returncode == 0 and "mpish.shell" not in done.stderr, done.stderr


def test_debug_shows_a_hosts_stderr_escaped(tmp_path: Path) -> None:
    """With --debug, ssh's stderr (a host's login script, its sshd) was written raw after the
    host's label: a host could put terminal controls inside mpish's lines (security review)."""
    server = SshServer(tmp_path / "sshd")
    key = server.authorized_keys.read_text()
    banner = "printf '\\033]0;pwned\\007\\033[2Jbanner\\n' >&2"  # the file holds the backslashes
    server.authorized_keys.write_text(f'command="{banner}; eval \\"$SSH_ORIGINAL_COMMAND\\"" {key}')
    server.start()
    try:
        done = mpish_ssh(server, "host1", "--debug", "-c", "true")
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr, repr(done.stderr)
    assert re.search(r"^host1: .*banner$", done.stderr, re.MULTILINE), done.stderr
