"""transport.ssh.wait_for_exits: the end of mpish ssh waits for every ssh at once, woken by each exit."""

from __future__ import annotations

import subprocess

from mpish.transport.ssh import wait_for_exits


def test_wait_for_exits_returns_once_every_process_has_ended_and_reaps_them() -> None:
    processes = [subprocess.Popen(["sleep", delay]) for delay in ("0.05", "0.2", "0")]
    wait_for_exits(processes, timeout=30)
    assert [process.returncode for process in processes] == [0, 0, 0]


def test_wait_for_exits_gives_up_at_its_timeout_on_a_process_that_does_not_end() -> None:
    stuck = subprocess.Popen(["sleep", "60"])
    done = subprocess.Popen(["true"])
    try:
        wait_for_exits([stuck, done], timeout=0.3)
        assert stuck.returncode is None
    finally:
        stuck.kill()
        stuck.wait()
        done.wait()
