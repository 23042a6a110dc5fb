"""The orphan watcher (shell/orphan.py) never signals a process that took its server's pid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

# Runs as pid 1 of a new pid namespace, where ns_last_pid can be set without touching anyone
# else's processes: the server ends during the watcher's grace period and a new process is
# made to take its pid, as a busy host may do.
SCENARIO = textwrap.dedent("""
    import subprocess, sys
    console = subprocess.Popen(["true"]); console.wait()  # the console: gone (SIGKILLed, say)
    server = subprocess.Popen(["sleep", "60"])
    watcher = subprocess.Popen([sys.executable, "-m", "mpish.shell.orphan", str(console.pid),
                                str(server.pid), "3"], stderr=subprocess.PIPE, text=True)
    for line in watcher.stderr:  # MPISH_DEBUG: it has seen the console gone; grace started
        if "gets 3 s to end by itself" in line:
            break
    server.kill(); server.wait()  # the server ends by itself, within the grace period
    with open("/proc/sys/kernel/ns_last_pid", "w") as handle:
        handle.write(str(server.pid - 1))
    newcomer = subprocess.Popen(["sleep", "60"])
    assert newcomer.pid == server.pid, (newcomer.pid, server.pid)
    watcher.wait(timeout=30)
    print("newcomer alive" if newcomer.poll() is None else f"newcomer ended: {newcomer.returncode}")
    newcomer.kill(); newcomer.wait()
""")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_a_process_that_took_the_servers_pid_during_the_grace_is_not_signalled() -> None:
    """The watcher slept through its grace with the server's pid, then SIGKILLed whatever had
    that pid (security review, LOW): now it holds a pidfd and leaves once the server ends."""
    proc = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", SCENARIO],
        env={**os.environ, "MPISH_DEBUG": "1"}, capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0 and "unshare failed" in proc.stderr:
        pytest.skip(f"no pid namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "newcomer alive", proc.stderr
