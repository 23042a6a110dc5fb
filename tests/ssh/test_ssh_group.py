"""Group: one call or shell command on many hosts in parallel."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

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


def test_group_default_output_is_whole_lines_prefixed_by_host(
    sshd: SshServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """As pdsh and clush -L show it: 8 hosts printing 2,000 long lines each at once were spliced
    mid-line with no host named (86 corrupt lines in 400,000)."""
    line = "x" * 90
    command = f"i=0; while [ $i -lt 2000 ]; do echo \"$i-{line}\"; i=$((i+1)); done; printf tail; echo e >&2"
    with Group(ALIASES[:4], python=sys.executable, ssh_options=sshd.ssh_options) as group:
        results = group.shell(command)
    assert all(r.value == 0 for r in results.values()), results
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4 * 2001
    for host in ALIASES[:4]:
        mine = [text[len(host) + 2:] for text in lines if text.startswith(f"{host}: ")]
        assert mine == [f"{i}-{line}" for i in range(2000)] + ["tail"]
    assert sorted(err.splitlines()) == sorted(f"{host}: e" for host in ALIASES[:4])


def test_group_connect_connects_again_a_host_whose_agent_died(sshd: SshServer) -> None:
    with Group(["host1", "host2"], python=sys.executable, ssh_options=sshd.ssh_options) as group:
        died = group.each(lambda r: r.call(os._exit, 3) if r.host == "host1" else r.call(abs, -1))
        assert not died["host1"].ok and died["host2"].value == 1
        again = group.connect()
        assert list(again) == ["host1"] and again["host1"].ok
        assert {h: r.value for h, r in group.call(abs, -2).items()} == {"host1": 2, "host2": 2}


def test_ctrl_c_during_a_group_call_closes_its_connections_and_returns_at_once(sshd: SshServer) -> None:
    """Without `with`, the script waited for the remote sleeps to end (the pool's threads are
    joined at exit); now the interrupt closes the connections and their agents end the calls."""
    group = Group(["host1", "host2"], python=sys.executable, ssh_options=sshd.ssh_options)
    group.connect()
    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(1.0, signal.pthread_kill, (main, signal.SIGINT))  # Ctrl-C's signal
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        group.call(time.sleep, 60)
    assert all(remote.closed for remote in group.remotes.values())
    workers = [t for t in threading.enumerate() if t.name.startswith("mpish-group")]
    for worker in workers:
        worker.join(10)
    assert not [t for t in workers if t.is_alive()]  # nothing left for the interpreter's exit to wait on
    assert time.monotonic() - started < 30  # the remote calls sleep 60 s
    group.close()
