"""``mpish ssh --debug``: the remote side's diagnostics reach the user, labelled with the host."""

from __future__ import annotations

import re

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
