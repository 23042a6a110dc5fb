"""A hang-up (``~.``) of an :attach program, server side (pty_session.py) and what the console says."""

from __future__ import annotations

import os
import select
import shutil
import signal
import time
from pathlib import Path

from mpish.shell import protocol as p
from mpish.shell.attach import Ended, outcome
from mpish.shell.pty_session import PtyHost


def _run_until_exit(host: PtyHost, sent: list[object], deadline: float) -> p.PtyExit:
    while time.monotonic() < deadline:
        fds = host.read_fds()
        if fds:
            select.select(fds, [], [], 0.05)
        else:
            time.sleep(0.05)
        host.pump(1 << 16)
        done = [message for message in sent if isinstance(message, p.PtyExit)]
        if done:
            return done[0]
    raise AssertionError("no PtyExit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def test_a_program_that_ignores_sighup_is_killed_after_the_hang_up_and_reported_so(tmp_path: Path) -> None:
    """The user trial's program, under the launching bash: SIGHUP killed that bash, the program ran
    on, and the console said "killed by SIGHUP"."""
    sent: list[object] = []
    bash = shutil.which("bash") or "/bin/bash"
    host = PtyHost(sent.append, lambda data: None, bash, str(tmp_path / "no-state-file"))
    pidfile = tmp_path / "pid"
    command = f"""bash -c "echo \\$\\$ > {pidfile}; trap '' INT TERM HUP; while :; do sleep 0.1; done" """
    host.open(p.PtyOpen(1, command, 24, 80, "xterm"), str(tmp_path), busy=False)
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        host.pump(1 << 16)
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        host.close(p.PtyClose(1))
        ended = _run_until_exit(host, sent, time.monotonic() + 10)
        assert (ended.exit, ended.signal) == (128 + signal.SIGKILL, signal.SIGKILL)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        host.shutdown()


def test_a_hang_up_is_said_as_such_and_killed_only_when_the_status_says_so() -> None:
    hup, kill = int(signal.SIGHUP), int(signal.SIGKILL)
    assert outcome(Ended(128 + kill, kill, "", hung_up=True)) == (
        "hung up: SIGHUP sent; still running a second later: killed by SIGKILL")
    assert outcome(Ended(128 + hup, hup, "", hung_up=True)) == "hung up: SIGHUP sent; killed by SIGHUP"
    assert outcome(Ended(0, 0, "", hung_up=True)) == "hung up: SIGHUP sent; it ended (exit code 0)"
    assert outcome(Ended(3, 0, "", hung_up=False)) == "exit code 3"
    assert outcome(Ended(0, 0, "", hung_up=False)) == ""
    assert outcome(Ended(128 + hup, hup, "", hung_up=False)) == "killed by SIGHUP"
