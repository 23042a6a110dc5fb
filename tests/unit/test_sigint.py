"""server/sigint.py against a real bash: which of its children a Ctrl-C takes for the line's forks."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from mpish.shell.server.sigint import LineInterrupt, SignalLoop
from mpish.transport.procfs import children


def test_a_background_subshell_of_an_earlier_command_is_not_taken_for_a_fork_of_the_line() -> None:
    """A ``{ while sleep 1; do :; done; } &`` never execs and carries no marker, like a fork
    caught before its exec. Taken for one, it was signalled at every later Ctrl-C and turned
    off the watch for children bash forks after the SIGINT (module doc) for the whole session."""
    # the stand-in for the server's bash ignores the SIGINTs sent here (so it stays their parent)
    line = "trap '' INT; { while sleep 1; do :; done; } & echo started; exec sleep 60"
    bash = subprocess.Popen(["bash", "-c", line], stdout=subprocess.PIPE, env={}, start_new_session=True)
    try:
        assert bash.stdout is not None and bash.stdout.readline() == b"started\n"
        deadline = time.monotonic() + 10
        while not children(bash.pid) and time.monotonic() < deadline:  # the loop (forked before the echo)
            time.sleep(0.01)
        earlier = frozenset(children(bash.pid))
        assert earlier
        stopped_by = LineInterrupt(bash.pid, "marker-of-this-command", earlier)
        assert stopped_by.forks == set()
        assert stopped_by.watch_new  # no child of the line: what bash forks next is chased
        taken_for_forks = LineInterrupt(bash.pid, "marker-of-this-command")  # not told what came before
        assert taken_for_forks.forks and not taken_for_forks.watch_new
    finally:
        os.killpg(bash.pid, signal.SIGKILL)
        bash.wait()
        if bash.stdout is not None:
            bash.stdout.close()


def _spins_within(loop: SignalLoop, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if loop.spinning():
            return True
        time.sleep(0.05)
    return False


def test_signal_loop_tells_a_process_spinning_in_the_kernel_from_one_asleep_or_busy_in_user_space() -> None:
    """Bash caught in its SIGINT handler spends its time raising SIGINT (kernel time). ``dd``
    from /dev/zero spends its time in the kernel as well; ``sleep`` uses no CPU; a loop of
    the user's runs in user space: only the first is taken for the loop, so a bash busy with
    a loop that traps INT is not restarted."""
    kernel = subprocess.Popen(["dd", "if=/dev/zero", "of=/dev/null", "bs=1M"], stderr=subprocess.DEVNULL)
    asleep = subprocess.Popen(["sleep", "60"])
    user = subprocess.Popen(["perl", "-e", "1 while 1"])
    try:
        loops = {name: SignalLoop(proc.pid) for name, proc in
                 (("kernel", kernel), ("asleep", asleep), ("user", user))}
        assert _spins_within(loops["kernel"], 30)
        assert not _spins_within(loops["asleep"], 1.6)
        assert not _spins_within(loops["user"], 1.6)
    finally:
        for proc in (kernel, asleep, user):
            proc.kill()
            proc.wait()
    assert not SignalLoop(kernel.pid).spinning()  # gone: nothing to restart
