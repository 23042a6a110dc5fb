"""``mpish ssh HOSTS [-c CMD]``: node sets, grouping, JSON, live output, exit status, console."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from ssh_util import SRC, mpish_ssh
from sshd_server import SshServer

from mpish.shell.ssh_cli import HostsError, expand_hosts, fold_hosts
from terminal import ANSI, at_terminal


def test_node_sets_expand_and_fold() -> None:
    assert expand_hosts("node[1-3],login1") == ["login1", "node1", "node2", "node3"]
    assert expand_hosts("host[1-2],host2") == ["host1", "host2"]
    assert fold_hosts(["host1", "host3", "host2"]) == "host[1-3]"
    with pytest.raises(HostsError):
        expand_hosts("node[3-")


def test_identical_outputs_are_shown_once_and_the_largest_status_wins(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-4]", "-c", "echo same; echo oops >&2; test $$ -gt 0 && exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "---------------\nhost[1-4] (4)\n---------------\nsame\n"
    assert done.stderr.count("oops") == 1
    assert "mpish: host[1-4]: exit code 3" in done.stderr


def test_distinct_outputs_get_their_own_headers(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "-f", "2", "-c", "echo $$")  # a pid per host
    assert done.returncode == 0, done.stderr
    headers = re.findall(r"^(host\d) \(1\)$", done.stdout, re.MULTILINE)
    assert headers == ["host1", "host2", "host3"]


def test_one_host_streams_raw_output_and_its_status(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host1", "-c", "printf 'a\\nb'; exit 7")
    assert (done.returncode, done.stdout) == (7, "a\nb")


def test_json_one_object_per_host_with_errors_as_255(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2],badkey", "--json", "-c", "echo out; echo err >&2; kill -KILL $$")
    assert done.returncode == 255
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["host"] for r in records] == ["badkey", "host1", "host2"]
    for record in records[1:]:
        assert set(record) == {"rank", "host", "exit", "signal", "stdout", "stderr", "seconds", "timed_out"}
        assert (record["exit"], record["signal"]) == (137, 9)
        assert (record["stdout"], record["stderr"]) == ("out\n", "err\n")
        assert record["seconds"] >= 0
    assert records[0]["exit"] == 255 and "authentication refused" in records[0]["error"]


def test_live_output_is_prefixed_by_host(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-v", "-c", "echo one; printf two")
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert lines == ["host1: one", "host1: two", "host2: one", "host2: two"]


def test_errors_are_reported_per_host_and_count_as_255(sshd: SshServer, tmp_path: Path) -> None:
    done = mpish_ssh(sshd, "host1,badkey", "-c", "exit 0")
    assert done.returncode == 255
    assert re.search(r"^badkey: authentication refused", done.stderr, re.MULTILINE)
    argv = ["--python", str(tmp_path / "no-python"), "host2", "-c", "true"]
    missing = mpish_ssh(sshd, *argv)
    assert missing.returncode == 255
    assert re.search(r"^host2: the remote Python was not found", missing.stderr, re.MULTILINE)
    bad = mpish_ssh(sshd, "host[1-", "-c", "true")
    assert bad.returncode == 2 and "bad host set" in bad.stderr  # a usage error, as an unknown group


# --- the console, through a real pseudo-terminal ----------------------------------------------


@pytest.fixture
def console(sshd: SshServer, tmp_path: Path) -> Iterator[pexpect.spawn]:
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1", TERM="dumb")
    argv = ["-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python", sys.executable, "host[1-2]"]
    with at_terminal(sys.executable, argv, env, str(tmp_path)) as person:
        yield person.child


def test_console_keeps_cwd_and_environment_per_host(console: pexpect.spawn, tmp_path: Path) -> None:
    console.expect_exact("[host[1-2]] ")
    console.expect_exact("#> ")
    console.sendline(f"cd {tmp_path}")
    console.expect_exact(f"[host[1-2]] {tmp_path}#> ")
    console.sendline("export MPISH_TEST_VALUE=forty-two")
    console.expect_exact("#> ")
    console.sendline("echo value=$MPISH_TEST_VALUE; pwd; exit 4")
    console.expect_exact(f"{tmp_path}#> ")
    screen = ANSI.sub("", console.before or "")
    assert "host[1-2] (2)" in screen
    assert screen.count("value=forty-two") == 1
    assert "mpish: host[1-2]: exit code 4" in screen
    console.sendline(":quit")
    console.expect(pexpect.EOF)
    console.close()
    assert console.exitstatus == 0


@pytest.mark.parametrize("ending", ["ctrl-d", "exit"])
def test_console_ends_on_ctrl_d_and_exit(console: pexpect.spawn, ending: str) -> None:
    console.expect_exact("#> ")
    time.sleep(0.3)  # a person reads the prompt before typing (the line editor is then ready)
    if ending == "exit":
        console.sendline("exit")
    else:
        console.sendcontrol("d")  # at an empty line: end of input, as in bash
    console.expect(pexpect.EOF)
    console.close()
    assert console.exitstatus == 0


def test_grouped_output_without_a_final_newline_is_not_glued_to_the_next_header(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-c", "printf def$MPISH_RANK")
    assert done.returncode == 0, done.stderr
    line = "-" * 15
    assert done.stdout == f"{line}\nhost1 (1)\n{line}\ndef1\n{line}\nhost2 (1)\n{line}\ndef2\n"


def test_bash_errors_read_as_in_an_interactive_bash(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-c", "nosuchcmd")
    assert done.returncode == 127
    assert done.stderr.startswith("host[1-2]: bash: nosuchcmd: command not found\n"), done.stderr


def test_background_jobs_end_with_the_session(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-c", "sleep 100.375 &")
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if subprocess.run(["pgrep", "-f", "sleep 100.375"], check=False).returncode != 0:
            break
        time.sleep(0.1)
    assert subprocess.run(["pgrep", "-f", "sleep 100.375"], check=False).returncode != 0


def test_json_has_the_mpi_fields_and_error_only_for_errors(sshd: SshServer) -> None:
    timed = mpish_ssh(sshd, "host[1-2]", "--json", "-u", "1", "-c", "sleep 30.25")
    records = [json.loads(line) for line in timed.stdout.splitlines()]
    assert [(r["rank"], r["host"], r["timed_out"]) for r in records] == [
        (1, "host1", True), (2, "host2", True)]
    exited = mpish_ssh(sshd, "host1", "--json", "-c", "exit 3")
    (record,) = [json.loads(line) for line in exited.stdout.splitlines()]
    assert record["exit"] == 3 and record["timed_out"] is False and "error" not in record


def test_stdin_is_broadcast_to_every_host_and_nostdin_turns_it_off(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-c", "cat", input="hi\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "---------------\nhost[1-2] (2)\n---------------\nhi\n"
    done = mpish_ssh(sshd, "host[1-2]", "--nostdin", "-c", "wc -c", input="hi\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "---------------\nhost[1-2] (2)\n---------------\n0\n"


def test_mebibytes_of_stdin_arrive_whole_on_every_host(sshd: SshServer) -> None:
    data = "".join(f"line {i}\n" for i in range(400_000))  # ~4.6 MiB: more than the credit window
    done = mpish_ssh(sshd, "host[1-2]", "-c", "sha256sum", input=data)
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(data.encode()).hexdigest()
    assert done.stdout == f"---------------\nhost[1-2] (2)\n---------------\n{digest}  -\n"


def test_debug_logs_on_stderr_and_the_output_stays_the_same(sshd: SshServer) -> None:
    quiet = mpish_ssh(sshd, "host1", "-c", "echo out")
    loud = mpish_ssh(sshd, "--debug", "host1", "-c", "echo out")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "out\n", "")
    assert (loud.returncode, loud.stdout) == (0, "out\n"), loud.stderr
    assert re.match(r"mpish\[\d+\] mpish\.cli: mpish \S+, Python \S+: mpish ssh ", loud.stderr), loud.stderr


def test_an_unbalanced_quote_in_o_or_python_is_one_line_not_a_traceback() -> None:
    for option in (["-o", "'-p 22"], ["--python", "'python3"]):
        done = subprocess.run([sys.executable, "-m", "mpish", "ssh", *option, "host1", "true"],
                              env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("mpish ssh: -o or --python: No closing quotation"), done.stderr


def test_an_empty_python_is_a_usage_error_naming_the_option() -> None:
    # helper-141: each host ran `exec  -c CODE`; said "--python  did not run the start-up code"
    for python in ("", " "):
        done = subprocess.run([sys.executable, "-m", "mpish", "ssh", "--python", python, "host1", "true"],
                              env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert done.stderr == (f"mpish ssh: --python {python!r} names no interpreter: give the hosts' "
                               "Python 3.10+ (default python3)\n")
