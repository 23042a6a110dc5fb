"""Every failure a user meets has its own exception class and a message that says what to do."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
from sshd_server import SshServer

import mpish.calls.client
import mpish.transport.ship
from mpish.ssh import (
    AgentDied,
    AuthenticationRefused,
    CallTimeout,
    HostUnreachable,
    MpishMissing,
    ProtocolVersionMismatch,
    RemotePythonMissing,
    TransportBroken,
    TransportClosed,
    connect,
)
from mpish.wire.errors import RemoteProtocolError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module is not importable remotely


def test_host_unreachable_when_sshd_is_stopped(sshd: SshServer, tmp_path: Path) -> None:
    server = SshServer(tmp_path / "stopped")
    server.start()
    server.stop()
    with pytest.raises(HostUnreachable) as caught:
        connect("host1", python=sys.executable, ssh_options=server.ssh_options, timeout=30)
    assert isinstance(caught.value, TransportBroken)
    assert caught.value.exit_status == 255
    assert "unreachable" in str(caught.value) and "Connection refused" in str(caught.value)
    # the command it suggests reaches the same host: the user's ssh options are in it
    assert f"`{shlex.join(['ssh', *server.ssh_options, 'host1'])} true`" in str(caught.value)


def test_authentication_refused_with_an_unauthorized_key(sshd: SshServer) -> None:
    with pytest.raises(AuthenticationRefused) as caught:
        connect("badkey", python=sys.executable, ssh_options=sshd.ssh_options)
    assert "Permission denied" in caught.value.stderr
    assert "authentication refused" in str(caught.value)


def test_an_unverified_host_key_is_named_with_what_to_do(sshd: SshServer, tmp_path: Path) -> None:
    """A host whose key ssh does not trust (strict checking, not in known_hosts) was reported
    only as "ssh failed (exit status 255)" (a clush user)."""
    config = tmp_path / "ssh_config"
    lines = ["Host strict", "HostName 127.0.0.1", f"Port {sshd.port}", f"IdentityFile {sshd.user_key}",
             "IdentitiesOnly yes", "StrictHostKeyChecking yes", "UserKnownHostsFile /dev/null",
             "GlobalKnownHostsFile /dev/null", "BatchMode yes"]
    config.write_text("\n  ".join(lines) + "\n")
    with pytest.raises(AuthenticationRefused) as caught:
        connect("strict", python=sys.executable, ssh_options=("-F", str(config)), timeout=30)
    assert "Host key verification failed" in caught.value.stderr
    assert "strict: host key not verified" in str(caught.value), caught.value
    assert f"`ssh -F {config} strict true`" in str(caught.value)


def test_remote_python_missing(connect_options: dict[str, object]) -> None:
    options = dict(connect_options, python="/nonexistent/python3")
    with pytest.raises(RemotePythonMissing) as caught:
        connect("host1", **options)  # type: ignore[arg-type]
    assert caught.value.exit_status == 127
    assert "python=" in str(caught.value)


def test_mpish_missing_on_the_remote_without_bootstrap(connect_options: dict[str, object]) -> None:
    # -S: no site-packages, so this Python cannot import mpish (nor msgpack)
    options = dict(connect_options, python=[sys.executable, "-S"], bootstrap=False)
    with pytest.raises(MpishMissing) as caught:
        connect("host1", **options)  # type: ignore[arg-type]
    assert "pip install" in str(caught.value)
    assert "No module named" in caught.value.stderr


def test_mpish_missing_when_even_the_bootstrap_fails(
    connect_options: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mpish.transport.ship, "MIN_PYTHON", (99, 0))  # as if this Python were too old
    with pytest.raises(MpishMissing, match=r"is too old, mpish needs 99\.0 or later") as caught:
        connect("host1", **connect_options)  # type: ignore[arg-type]
    assert caught.value.exit_status == 1


def test_not_an_agent_is_a_protocol_error(connect_options: dict[str, object]) -> None:
    # /bin/echo prints its arguments (no start mark) and ends instead of speaking mpish
    options = dict(connect_options, python=["/bin/echo", "hello"])
    with pytest.raises(RemoteProtocolError, match="did not start with an mpish hello"):
        connect("host1", **options)  # type: ignore[arg-type]


def test_protocol_version_mismatch(
    connect_options: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mpish.calls.client, "PROTOCOL_VERSION", 999)
    from mpish.calls.messages import PROTOCOL_VERSION

    with pytest.raises(ProtocolVersionMismatch, match=f"protocol {PROTOCOL_VERSION}, this one speaks 999"):
        connect("host1", **connect_options)  # type: ignore[arg-type]


def announce_and_sleep() -> None:
    print("started", flush=True)
    time.sleep(60)


def test_agent_killed_mid_call_is_reported_with_the_signal_and_closes_the_connection(
    connect_options: dict[str, object],
) -> None:
    remote = connect("host4", **connect_options)  # type: ignore[arg-type]
    killed: list[int] = []

    def kill_on_start(stream: str, data: bytes) -> None:
        if b"started" in data and not killed:
            os.kill(remote.info.pid, signal.SIGKILL)
            killed.append(remote.info.pid)

    try:
        with pytest.raises(AgentDied) as caught:
            remote.invoke(announce_and_sleep, on_output=kill_on_start)
        assert killed == [remote.info.pid]
        assert "host4: the mpish agent ended: killed by SIGKILL (signal 9)" in str(caught.value)
        assert caught.value.exit_status == 128 + signal.SIGKILL  # as a shell says it; ssh said 255
        assert remote.closed
        with pytest.raises(TransportClosed):
            remote.call(abs, 1)
    finally:
        remote.close()


def test_call_timeout_closes_the_connection(connect_options: dict[str, object]) -> None:
    with connect("host5", **connect_options) as remote:  # type: ignore[arg-type]
        pid = remote.info.pid
        with pytest.raises(CallTimeout) as caught:
            remote.call(time.sleep, 60, timeout=0.5)
        assert isinstance(caught.value, TimeoutError)
        assert remote.closed
        with pytest.raises(TransportClosed):
            remote.call(abs, 1)
    # the agent noticed the end of its stdin and exited instead of sleeping on (bounded wait)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
