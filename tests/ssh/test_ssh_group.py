"""Group: one call or shell command on many hosts in parallel."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from sshd_server import ALIASES, SshServer

from mpish.ssh import AuthenticationRefused, Group


def test_group_calls_every_alias(sshd: SshServer) -> None:
    with Group(ALIASES, fanout=3, python=sys.executable, ssh_options=sshd.ssh_options) as group:
        results = group.call(os.getpid)
        assert list(results) == list(ALIASES)
        assert all(r.ok for r in results.values()), {h: r.error for h, r in results.items()}
        pids = {h: r.unwrap() for h, r in results.items()}
        assert len(set(pids.values())) == len(ALIASES)  # eight distinct agents
        assert pids == {h: group.remotes[h].info.pid for h in ALIASES}
        squares = group.call(lambda x: x * x, 12)
        assert {r.value for r in squares.values()} == {144}


def test_group_reports_each_failure_per_host(sshd: SshServer) -> None:
    with Group(["host1", "badkey", "host2"], python=sys.executable, ssh_options=sshd.ssh_options) as group:
        results = group.call_data("os.getpid")
        assert results["host1"].ok and results["host2"].ok
        assert isinstance(results["badkey"].error, AuthenticationRefused)
        with pytest.raises(AuthenticationRefused):
            results["badkey"].unwrap()
        failing = group.call(int, "not a number")
        assert isinstance(failing["host1"].error, ValueError)


def test_group_shell_streams_output_per_host(sshd: SshServer) -> None:
    seen: dict[str, bytes] = {}
    lock = threading.Lock()

    def on_output(host: str, stream: str, data: bytes) -> None:
        with lock:
            seen[host] = seen.get(host, b"") + data

    hosts = ["host1", "host2", "host3"]
    with Group(
        hosts, fanout=2, on_output=on_output, python=sys.executable, ssh_options=sshd.ssh_options
    ) as group:
        results = group.shell("echo hi from $$; exit 2")
    assert {h: r.value for h, r in results.items()} == dict.fromkeys(hosts, 2)
    assert set(seen) == set(hosts)
    assert all(data.startswith(b"hi from ") for data in seen.values())


def test_each_once_connects_runs_and_closes_per_host(sshd: SshServer) -> None:
    done: list[str] = []
    group = Group(["host1", "host2", "badkey"], fanout=2, python=sys.executable, ssh_options=sshd.ssh_options)
    results = group.each_once(
        lambda remote: remote.call_data("os.getpid"), on_done=lambda r: done.append(r.host)
    )
    assert sorted(done) == ["badkey", "host1", "host2"]
    assert results["host1"].ok and results["host2"].ok and results["host1"].seconds > 0
    assert isinstance(results["badkey"].error, AuthenticationRefused)
    assert group.remotes == {}  # nothing stays open
