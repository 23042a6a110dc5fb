"""server/sigint.py against a real bash: which of its children a Ctrl-C takes for the line's forks."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from mpish.shell.server.sigint import LineInterrupt
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
