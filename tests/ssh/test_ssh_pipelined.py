"""``mpish ssh -c``: each host's Run travels with its code, so a host starts the command
without waiting for its own Hello's round trip, nor for the other hosts to join."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ssh_util import mpish_ssh
from sshd_server import SshServer


def late_python(tmp_path: Path, mark: Path) -> Path:
    """A ``--python`` whose rank 2 starts only once ``mark`` exists (or after 40 s)."""
    script = tmp_path / "late-python"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$3" = 2 ]; then i=0; while [ ! -e {mark} ] && [ $i -lt 400 ]; do\n'
        "  sleep 0.1; i=$((i+1))\n"
        "done; fi\n"
        f'exec {sys.executable} "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_a_host_runs_the_command_before_a_slow_host_has_joined(sshd: SshServer, tmp_path: Path) -> None:
    # host2 joins only after some host has run the command: the console sending the Run only
    # once every host had joined waited for host2 until its Hello deadline (-t 1 + 15 s) and failed it.
    mark = tmp_path / "ran"
    python = late_python(tmp_path, mark)
    done = mpish_ssh(sshd, "host[1-2]", "--json", "--python", str(python), "-t", "1",
                     "-c", f"touch {mark}; echo out-$((6*7)); echo err >&2; exit 4")
    assert done.returncode == 4, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["host"] for r in records] == ["host1", "host2"]
    for record in records:  # host1's answers came before host2 joined: kept, in order
        assert (record["exit"], record["stdout"], record["stderr"]) == (4, "out-42\n", "err\n")
        assert "error" not in record


def test_stdin_reaches_every_host_with_the_run_sent_ahead(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "-c", "tr a-z A-Z; exit 5", input="hello\n")
    assert done.returncode == 5, done.stderr
    assert done.stdout == "---------------\nhost[1-3] (3)\n---------------\nHELLO\n"


def test_with_more_hosts_than_the_fanout_the_command_still_runs_everywhere_in_order(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "-f", "1", "--json", "-c", "echo $$; exit 2")
    assert done.returncode == 2, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["host"], r["exit"]) for r in records] == [("host1", 2), ("host2", 2), ("host3", 2)]
    assert len({r["stdout"] for r in records}) == 3  # three shells, three pids
