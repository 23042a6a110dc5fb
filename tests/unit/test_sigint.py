"""server/sigint.py against a real bash: which of its children a Ctrl-C takes for the line's forks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
        time.sleep(0.002)
    return False


# bash's loop, made here: a SIGINT handler that raises SIGINT again (libc's raise() itself
# installed as the handler, through ctypes: the handler runs in C, as bash's does)
_RAISING = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None)
libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.signal(signal.SIGINT, ctypes.cast(getattr(libc, "raise"), ctypes.c_void_p))
sys.stdout.write("ready\\n"); sys.stdout.flush()
os.kill(os.getpid(), signal.SIGINT)
"""


def test_signal_loop_tells_a_process_raising_sigint_for_ever_from_one_asleep_busy_or_in_syscalls() -> None:
    """Bash caught in its SIGINT handler (server/sigint.py) raises SIGINT again and again:
    kernel time and a SIGINT pending. Neither a sleeping process, nor a user-space loop, nor
    one living on system calls (``dd`` from /dev/zero: kernel time, no SIGINT: a ``while
    read`` loop of the user's that traps INT) is taken for it: restarting bash for them
    would throw away a session that was working."""
    looping = subprocess.Popen([sys.executable, "-c", _RAISING], stdout=subprocess.PIPE)
    kernel = subprocess.Popen(["dd", "if=/dev/zero", "of=/dev/null", "bs=64k"], stderr=subprocess.DEVNULL)
    asleep = subprocess.Popen(["sleep", "60"])
    user = subprocess.Popen(["perl", "-e", "1 while 1"])
    try:
        assert looping.stdout is not None and looping.stdout.readline() == b"ready\n"
        loops = {name: SignalLoop(proc.pid) for name, proc in
                 (("looping", looping), ("kernel", kernel), ("asleep", asleep), ("user", user))}
        assert _spins_within(loops["looping"], 30)
        for name in ("kernel", "asleep", "user"):
            assert not _spins_within(loops[name], 1.6), name
    finally:
        for proc in (looping, kernel, asleep, user):
            proc.kill()
            proc.wait()
        if looping.stdout is not None:
            looping.stdout.close()
    assert not _spins_within(SignalLoop(looping.pid), 1.1)  # gone: nothing to restart
