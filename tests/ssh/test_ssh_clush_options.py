"""``mpish ssh`` with the options clush users reach for first (issue 12), against a real sshd.

Each test runs the command line through a subprocess, as a user would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_server import SshServer

from terminal import shown_after_ctrl_c

SRC = Path(__file__).resolve().parents[2] / "src"
LINE = "-" * 15


def mpish_ssh(
    sshd: SshServer, *args: str, ssh_options: str | None = None, env: dict[str, str] | None = None,
    timeout: float = 60, input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mpish ssh`` against the test sshd (its ssh_config unless ``ssh_options``), this venv's
    Python on the "remote", no user ClusterShell configuration unless ``env`` gives one."""
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", ssh_options or " ".join(sshd.ssh_options),
            "--python", sys.executable, *args]
    full = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1", **(env or {}))
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full, check=False,
                          input=input)


def headers(stdout: str) -> list[str]:
    return re.findall(rf"^{LINE}\n(.+)\n{LINE}$", stdout, re.MULTILINE)


@pytest.fixture
def no_groups(tmp_path: Path) -> dict[str, str]:
    """An environment with no ClusterShell configuration of the user's."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HOME": os.environ.get("HOME", "/root")}


@pytest.fixture
def groups(tmp_path: Path) -> dict[str, str]:
    """A user's ClusterShell group configuration (as clush reads it), with @web and all."""
    confdir = tmp_path / "clustershell"
    confdir.mkdir()
    (confdir / "groups.conf").write_text(
        "[Main]\ndefault: local\n\n[local]\n"
        "map: sed -n 's/^$GROUP:\\(.*\\)/\\1/p' $CFGDIR/groups\n"
        "all: sed -n 's/^all:\\(.*\\)/\\1/p' $CFGDIR/groups\n"
        "list: sed -n 's/^\\([0-9A-Za-z_-]*\\):.*/\\1/p' $CFGDIR/groups\n"
    )
    (confdir / "groups").write_text("web: host[1-2]\ndb: host4\nall: host[1-4]\n")
    return {"CLUSTERSHELL_CFGDIR": str(confdir), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


# --- the command, --version ----------------------------------------------------------------


def test_words_after_hosts_and_options_are_the_command(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "echo", "hi", "$MPISH_RANK")
    assert done.returncode == 0, done.stderr
    assert headers(done.stdout) == ["host1 (1)", "host2 (1)"]
    assert "hi 1\n" in done.stdout and "hi 2\n" in done.stdout
    # from the first word of the command on, options belong to the command (as clush)
    done = mpish_ssh(sshd, "-w", "host1", "-L", "ls", "-d", "/")
    assert (done.returncode, done.stdout) == (0, "host1: /\n"), done.stderr


def test_command_given_twice_is_refused_in_one_line(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host1", "-c", "true", "echo", "again")
    assert done.returncode == 2
    assert "either with -c/-C or as the last words" in done.stderr


def test_l_logs_in_as_that_user_as_clush_l_does(sshd: SshServer) -> None:
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    done = mpish_ssh(sshd, "host1", "-l", me, "-c", "whoami")
    assert (done.returncode, done.stdout.strip()) == (0, me), done.stderr
    refused = mpish_ssh(sshd, "host1", "-l", "nosuchuser-mpish", "-c", "whoami")  # ssh got it
    assert refused.returncode != 0 and "host1" in refused.stderr, refused.stderr
    assert me not in refused.stdout


def test_version_is_printed() -> None:
    done = subprocess.run([sys.executable, "-m", "mpish", "ssh", "--version"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(SRC)), check=False)
    assert (done.returncode, done.stdout.split()[0]) == (0, "mpish"), done.stderr


# --- choosing hosts ------------------------------------------------------------------------------


def test_exclude_and_hostfile_choose_the_hosts(sshd: SshServer, tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# the test cluster\nhost[1-2]\n\nhost4  # and one more\n")
    done = mpish_ssh(sshd, "--hostfile", str(hostfile), "-x", "host2", "echo", "x")
    assert done.returncode == 0, done.stderr
    assert headers(done.stdout) == ["host[1,4] (2)"]
    done = mpish_ssh(sshd, "-w", "host[1-4]", "-x", "host[2-3]", "-w", "badkey", "-x", "badkey", "echo", "x")
    assert headers(done.stdout) == ["host[1,4] (2)"], done.stderr


def test_a_host_left_out_keeps_the_others_numbers_as_over_mpi(sshd: SshServer) -> None:
    """A new user: ``-x @2`` made host3 ``@2`` ($MPISH_RANK, JSON rank, the console's ``@2``)."""
    done = mpish_ssh(sshd, "host[1-3]", "-x", "@2", "-L", "-c", "echo $MPISH_RANK $MPISH_SIZE")
    assert (done.returncode, done.stdout) == (0, "host1: 1 4\nhost3: 3 4\n"), done.stderr
    done = mpish_ssh(sshd, "host[1-3]", "-x", "host1", "--json", "-c", "true")
    assert sorted((r["rank"], r["host"]) for r in map(json.loads, done.stdout.splitlines())) == [
        (2, "host2"), (3, "host3")], done.stderr
    done = mpish_ssh(sshd, "host[1-3]", "-x", "@2", input="@3 echo three $MPISH_RANK\n@2 echo two\n")
    assert "three 3" in done.stdout, done.stdout + done.stderr
    assert "two" not in done.stdout.replace("@2 echo two", ""), done.stdout


def test_a_misspelt_exclusion_runs_nothing_anywhere(sshd: SshServer, tmp_path: Path) -> None:
    """clush ignores ``-x hots2`` and runs on every host; here nothing runs, status 2."""
    mark = tmp_path / "ran"
    done = mpish_ssh(sshd, "host[1-3]", "-x", "hots2", "-c", f"touch {mark}")
    assert done.returncode == 2 and not mark.exists(), done.stdout + done.stderr
    assert done.stderr == ("mpish: -x hots2: none of the hosts given is there (they are host[1-3]): "
                           "nothing was run\n")


def test_the_venvs_example_groups_are_not_active(sshd: SshServer, no_groups: dict[str, str]) -> None:
    # pip installs ClusterShell's examples (@compute = example[32-159]) into the venv's etc/
    done = mpish_ssh(sshd, "@compute", "-c", "true", env=no_groups)
    assert done.returncode == 2
    assert "example" not in done.stderr + done.stdout
    assert re.fullmatch(r"mpish: @compute: no group configuration found \(.*CLUSTERSHELL_CFGDIR\)\n",
                        done.stderr), done.stderr


def test_groups_come_from_the_users_clustershell_configuration(
    sshd: SshServer, groups: dict[str, str]
) -> None:
    done = mpish_ssh(sshd, "-g", "web", "echo", "x", env=groups)
    assert headers(done.stdout) == ["host[1-2] (2)"], done.stderr
    done = mpish_ssh(sshd, "@web,@db", "-c", "echo x", env=groups)
    assert headers(done.stdout) == ["host[1-2,4] (3)"], done.stderr
    done = mpish_ssh(sshd, "-a", "-X", "web", "echo", "x", env=groups)
    assert headers(done.stdout) == ["host[3-4] (2)"], done.stderr
    # a comma-separated list of groups, as clush reads it (a clush user: `-X web,db` left out
    # web only, db read as a host name; `-g web,db` tried to reach a host named db)
    done = mpish_ssh(sshd, "-a", "-X", "web,db", "echo", "x", "$MPISH_RANK", env=groups)
    assert done.stdout == "x 3\n", done.stdout + done.stderr  # one host: its output as ssh prints it
    done = mpish_ssh(sshd, "-g", "web,db", "echo", "x", env=groups)
    assert headers(done.stdout) == ["host[1-2,4] (3)"], done.stderr
    for unknown in (["-g", "nosuch"], ["-w", "@nosuch"], ["-w", "host1", "-x", "@web,@nosuch"],
                    ["-a", "-X", "web,nosuch"]):
        # one line and status 2 wherever the unknown group is, as clush's "No node to run on"
        done = mpish_ssh(sshd, *unknown, "true", env=groups)
        assert done.returncode == 2, (unknown, done.stderr)
        assert done.stderr.startswith("mpish: group @nosuch is unknown or empty (") and \
            done.stderr.count("\n") == 1, done.stderr


def test_a_broken_groups_conf_is_named_in_one_line(sshd: SshServer, tmp_path: Path) -> None:
    """A groups.conf configparser cannot read ended in MissingSectionHeaderError's traceback."""
    confdir = tmp_path / "broken"
    confdir.mkdir()
    (confdir / "groups.conf").write_text("[Main\n")
    env = {"CLUSTERSHELL_CFGDIR": str(confdir), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    for selection in (["-g", "compute"], ["-a"], ["-w", "host1,@web"], ["-w", "host1", "-x", "@web"]):
        done = mpish_ssh(sshd, *selection, "true", env=env)
        assert done.returncode == 2, (selection, done.stderr)
        assert "group source error: File contains no section headers." in done.stderr, done.stderr
        assert f"(read {confdir / 'groups.conf'})" in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr


def noisy_server(tmp_path: Path, command: str) -> SshServer:
    """An sshd whose key runs ``command`` (authorized_keys' forced command) instead of the one given."""
    server = SshServer(tmp_path / "noisy")
    key = server.authorized_keys.read_text()
    server.authorized_keys.write_text(f'command="{command}" ' + key)
    server.start()
    return server


def test_a_login_that_prints_to_stdout_is_shown_and_the_command_runs_behind_it(tmp_path: Path) -> None:
    """A chatty .bashrc or forced command before the remote side: mpish ssh refused the host
    ("its output did not start with mpish's hello"), where ssh and clush show it and run.
    Now it is shown once per host on stderr, escaped, and the command's output is as usual."""
    banner = "echo login-banner; printf 'tab\\there\\033[2J\\n'; eval \\\"$SSH_ORIGINAL_COMMAND\\\""
    server = noisy_server(tmp_path, banner)
    try:
        done = mpish_ssh(server, "host[1-2]", "-c", "echo ran on $MPISH_RANK")
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == ["host1: login-banner", "host1: tab\\x09here\\x1b[2J",
                                                "host2: login-banner", "host2: tab\\x09here\\x1b[2J"]
    shown = ["", "\nhost1 (1)\n", "\nran on 1\n", "\nhost2 (1)\n", "\nran on 2\n"]
    assert done.stdout.split(LINE) == shown, done.stdout


def test_what_a_login_writes_to_stderr_is_shown_as_host_lines_and_only_in_the_error_of_a_host_that_fails(
        tmp_path: Path) -> None:
    """helper-141: ssh's own stderr and the login's were dropped when the connection worked
    (`-o -v` gave nothing, nor ssh's warnings or a .bashrc's errors); clush and ssh show them.
    Now once the host has greeted they are shown as host lines, escaped; a host that never
    greets has them in its error only (not twice)."""
    login = "echo login-warning >&2; printf 'bell\\a\\033[2J\\n' >&2; eval \\\"$SSH_ORIGINAL_COMMAND\\\""
    server = noisy_server(tmp_path, login)
    try:
        done = mpish_ssh(server, "host[1-2]", "-c", "echo ran on $MPISH_RANK")
        failed = mpish_ssh(server, "host1", "--python", "/nonexistent/python3", "-c", "true")
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == ["host1: bell\\x07\\x1b[2J", "host1: login-warning",
                                                "host2: bell\\x07\\x1b[2J", "host2: login-warning"]
    assert done.stdout.split(LINE) == ["", "\nhost1 (1)\n", "\nran on 1\n", "\nhost2 (1)\n", "\nran on 2\n"]
    assert failed.returncode == 255 and failed.stdout == "", failed.stderr
    assert failed.stderr.count("login-warning") == 1 and not failed.stderr.startswith("host1: login"), \
        failed.stderr


def test_a_forced_command_that_never_runs_mpish_is_named_with_what_it_printed(tmp_path: Path) -> None:
    server = noisy_server(tmp_path, "echo no shell access for you")
    try:
        done = mpish_ssh(server, "host1", "-c", "uptime")
    finally:
        server.stop()
    assert done.returncode == 255 and done.stdout == "", done.stderr
    assert "before mpish started, its login printed b'no shell access for you\\n' (a forced command " \
           "that does not run the one given?)" in done.stderr, done.stderr


def test_calls_run_behind_a_login_that_prints_to_stdout(tmp_path: Path) -> None:
    from mpish.ssh import connect

    server = noisy_server(tmp_path, "echo login-banner; eval \\\"$SSH_ORIGINAL_COMMAND\\\"")
    try:
        with connect("host1", ssh_options=server.ssh_options, python=sys.executable) as remote:
            assert remote.call(os.getpid) != os.getpid()
    finally:
        server.stop()


# --- output modes and exit status ------------------------------------------------------------------

SCRIPT = "echo out $MPISH_RANK; echo err >&2; [ $MPISH_RANK = 1 ] && echo extra; exit 2"


def test_grouped_stderr_is_labelled_with_its_hosts(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "-c", SCRIPT)
    assert done.stderr.splitlines()[0] == "host[1-3]: err"
    assert headers(done.stdout) == ["host1 (1)", "host2 (1)", "host3 (1)"]


def test_B_gathers_stderr_with_stdout(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "-B", "host[1-2]", "-c", "echo out; echo err >&2")
    assert done.stdout == f"{LINE}\nhost[1-2] (2)\n{LINE}\nout\nerr\n"
    assert done.stderr == ""  # and exit 0: no status line
    one = mpish_ssh(sshd, "-B", "host1", "-c", "echo out; echo err >&2")
    assert (one.stdout, one.stderr) == (f"{LINE}\nhost1 (1)\n{LINE}\nout\nerr\n", "")  # a header, as clush -B


def test_L_orders_lines_by_host_and_N_drops_the_labels(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "-L", "-c", SCRIPT)
    assert done.stdout == "host1: out 1\nhost1: extra\nhost2: out 2\nhost3: out 3\n"
    assert done.stderr.startswith("host1: err\nhost2: err\nhost3: err\n")
    done = mpish_ssh(sshd, "host[1-3]", "-L", "-N", "-c", SCRIPT)
    assert done.stdout == "out 1\nextra\nout 2\nout 3\n"
    # -N alone is clush's -N: every host's lines, unlabelled (it gathered them: a clush user's
    # `-N ... | wc -l` counted one host); -bN gathers them without a header
    done = mpish_ssh(sshd, "host[1-2]", "-N", "-c", "echo same")
    assert done.stdout == "same\nsame\n"
    done = mpish_ssh(sshd, "host[1-2]", "-bN", "-c", "echo same")
    assert done.stdout == "same\n"


def test_bL_gathers_identical_lines_under_their_hosts_as_clush_bL(sshd: SshServer) -> None:
    """-b with -L printed each host's lines apart (-L won); clush -bL gathers line by line:
    the first lines are alike on all three hosts, only host3 has a second."""
    done = mpish_ssh(sshd, "host[1-3]", "-bL", "-c", "echo o; [ $MPISH_RANK = 3 ] && echo x; true")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "host[1-3]: o\nhost3: x\n"


def test_q_leaves_out_counts_and_exit_code_lines(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-q", "-c", "echo same; exit 3")
    assert (done.returncode, done.stdout) == (3, f"{LINE}\nhost[1-2]\n{LINE}\nsame\n")
    assert "exit code" not in done.stderr


def test_diff_shows_each_output_against_the_first_silent_hosts_and_a_missing_newline_too(
    sshd: SshServer,
) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "--diff", "-c", "echo same; [ $MPISH_RANK = 3 ] && echo more; true")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "--- host[1-2] (2)\n+++ host3\n@@ -1 +1,2 @@\n same\n+more\n"
    # a clush user: hosts that printed nothing, and an output without its final newline, were no
    # difference at all (no output, status 0)
    done = mpish_ssh(sshd, "host[1-3]", "--diff", "-c", '[ $MPISH_RANK = 2 ] || echo same')
    assert done.stdout == "--- host[1,3] (2)\n+++ host2\n@@ -1 +0,0 @@\n-same\n", done.stdout
    done = mpish_ssh(sshd, "host[1-2]", "--diff", "-c", 'printf abc; [ $MPISH_RANK = 1 ] || echo')
    assert done.stdout == ("--- host1\n+++ host2\n@@ -1 +1 @@\n-abc\n\\ No newline at end of file\n+abc\n"), \
        done.stdout  # as GNU diff -u prints it (the marker counted as a line, patch refused the hunk)


def test_exit_status_is_the_largest_unless_no_maxrc(sshd: SshServer) -> None:
    assert mpish_ssh(sshd, "host[1-2]", "-S", "exit", "$MPISH_RANK").returncode == 2
    assert mpish_ssh(sshd, "host[1-2]", "exit", "$MPISH_RANK").returncode == 2  # -S is the default
    done = mpish_ssh(sshd, "host[1-2],badkey", "--no-maxrc", "exit", "$MPISH_RANK")
    assert done.returncode == 0  # as clush without -S: failures reported, status 0
    assert "mpish: host1: exit code 2" in done.stderr and "badkey: authentication refused" in done.stderr


def test_outdir_and_errdir_keep_each_hosts_streams_in_a_file_of_its_own(
        sshd: SshServer, tmp_path: Path) -> None:
    out, err = tmp_path / "made" / "out", tmp_path / "err"  # made if not there, as clush does
    done = mpish_ssh(sshd, "host[1-2],badkey", "--outdir", str(out), "--errdir", str(err), "-L",
                     "echo out $MPISH_RANK; echo err $MPISH_RANK >&2; printf 'last'")
    assert done.returncode == 255, done.stderr  # badkey: authentication refused
    assert {path.name: path.read_text() for path in out.iterdir()} == {
        "host1": "out 2\nlast", "host2": "out 3\nlast", "badkey": ""}  # (badkey is @1: node-set order)
    errors = {path.name: path.read_text() for path in err.iterdir()}
    assert errors.pop("badkey").startswith("authentication refused"), errors  # (helper-144: empty)
    assert errors == {"host1": "err 2\n", "host2": "err 3\n"}
    assert "host1: out 2\n" in done.stdout and "host2: last\n" in done.stdout  # shown as without them
    (out / "host2").unlink()
    (out / "host2").symlink_to(tmp_path / "elsewhere")  # planted: refused, said, and the status says so
    done = mpish_ssh(sshd, "host[1-2]", "--outdir", str(out), "--no-maxrc", "echo again")
    assert done.returncode == 1 and "mpish: cannot write " in done.stderr, done.stderr
    assert (out / "host1").read_text() == "again\n" and not (tmp_path / "elsewhere").exists()
    refused = mpish_ssh(sshd, "host1", "--outdir", "/proc/none", "true")
    assert refused.returncode == 2 and refused.stderr == (
        "mpish ssh: --outdir/--errdir: cannot make the directory /proc/none: No such file or directory\n")


# --- timeouts, ssh options --------------------------------------------------------------------------


def test_u_is_the_command_timeout(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-u", "1", "--json", "sleep", "30.125")
    assert done.stdout.count('"timed_out": true') == 2, done.stdout + done.stderr


def test_u_gives_up_a_host_whose_server_stopped_answering_and_shows_the_others(
    sshd: SshServer, tmp_path: Path
) -> None:
    """host2's server stopped (SIGSTOP: a frozen host, a network partition) during `-u 4`:
    mpish waited for ever and held host1's and host3's output back with it, where clush's own
    timer returns at the deadline. Now host2 is given up 10 s after its timeout, with why."""
    pids = tmp_path / "pids"
    pids.mkdir()
    mine = f"{pids}/$MPISH_RANK"
    command = f"echo $PPID > {mine}.tmp && mv {mine}.tmp {mine}; sleep 2; echo done-$MPISH_RANK"
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options),
            "--python", sys.executable, "host[1-3]", "-u", "4", "-c", command]
    proc = subprocess.Popen(argv, env=dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1"), text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = 0
    try:
        for _ in range(1200):
            if (pids / "2").exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        server = int((pids / "2").read_text())
        os.kill(server, signal.SIGSTOP)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)  # over ssh it is left as it is (unreachable)
    assert proc.returncode == 255, err
    assert "done-1" in out and "done-3" in out and "done-2" not in out, (out, err)
    assert re.search(r"^host2: no answer 10 s after its 4 s timeout: its server or host stopped answering "
                     r".*; given up$", out + err, re.MULTILINE), (out, err)


def frozen_host_run(sshd: SshServer, tmp_path: Path, *args: str, lines: str) -> tuple[int, str, float]:
    """``mpish ssh host[1-2] ARGS -C -`` with ``lines`` on stdin after host2's server stopped
    itself (SIGSTOP, a frozen host) behind a first line; (status, stdout and stderr, seconds)."""
    pid = tmp_path / "server2"
    freeze = f"@2 echo $PPID > {pid}; (sleep 0.5; kill -STOP $PPID) &\n@1 sleep 2\n"
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options),
            "--python", sys.executable, "host[1-2]", *args, "-C", "-"]
    began = time.monotonic()
    try:
        done = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1"), text=True,
                              input=freeze + lines, capture_output=True, timeout=120, check=False)
    finally:
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid.read_text()), signal.SIGKILL)  # over ssh it is left as it is (unreachable)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - began


def test_a_put_to_a_frozen_host_ends_at_its_timeout_and_gives_the_host_up(
    sshd: SshServer, tmp_path: Path
) -> None:
    """A clush user's review: a :put to a host whose server had stopped never ended; Ctrl-C
    did nothing (the console blocked writing to that host's full pipe), `-u`/:timeout did not
    apply, and a second :put hung even after Ctrl-Cs. Now the timeout stops the copy on every
    target (host1 waited for host2's credit), and host2, silent 10 s after the stop, is given up."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))  # more than the credit window: host1 waits for host2
    (tmp_path / "dst").mkdir()
    status, said, took = frozen_host_run(sshd, tmp_path, lines=f":timeout 3\n:put {big} {tmp_path}/dst/\n")
    assert took < 60 and status != 0, said
    assert re.search(r"put host1: timed out after 3 s: .*stopped", said), said
    assert re.search(r"put host2: no answer 10 s after the copy was stopped: its server or host stopped "
                     r"answering .*; given up", said), said
    assert not (tmp_path / "dst" / "big.bin").exists()


def test_a_get_from_a_frozen_host_ends_at_its_timeout_and_gives_the_host_up(
    sshd: SshServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(40 << 20))
    (tmp_path / "here").mkdir()
    status, said, took = frozen_host_run(sshd, tmp_path, "-u", "3",
                                         lines=f":lcd {tmp_path}/here\n:get {big}\n")
    assert took < 60 and status != 0, said
    assert "the get timed out after 3 s: stopping it" in said, said
    assert re.search(r"get host2: no answer 10 s after the copy was stopped: .*; given up", said), said
    assert sorted(os.listdir(tmp_path / "here")) in ([], ["big.bin.host1"]), os.listdir(tmp_path / "here")


def test_u_bounds_the_connection_too_as_clushs(sshd: SshServer, silent_config: Path) -> None:
    """A clush user's review: `-u 3` to a host whose ssh hangs in the banner exchange took ssh's
    10 s ConnectTimeout (clush's -u returned at 3 s)."""
    began = time.monotonic()
    done = mpish_ssh(sshd, "silent1,host1", "-u", "2", "-c", "echo ok", ssh_options=f"-F{silent_config}",
                     timeout=25)
    took = time.monotonic() - began
    assert done.returncode == 255 and headers(done.stdout) == ["host1 (1)"], done.stderr
    assert done.stderr.startswith("silent1: host unreachable"), done.stderr
    assert took < 8, took  # not the 10 s of -t's default


def test_t_is_ssh_connect_timeout_and_identical_failures_fold(
    sshd: SshServer, silent_config: Path
) -> None:
    # a host that accepts and never answers: ssh gives up after -t seconds (not 30 s or more)
    done = mpish_ssh(sshd, "silent[1-3],host1", "-t", "1", "echo", "ok", ssh_options=f"-F{silent_config}",
                     timeout=25)
    assert done.returncode == 255
    assert headers(done.stdout) == ["host1 (1)"]
    failures = [line for line in done.stderr.splitlines() if line.startswith("silent")]
    # one failure on three hosts: said once, under their node set, with <host> for each one's name
    assert failures == ["silent[1-3] (3): host unreachable: ssh could not connect. Check the name, that sshd "
                        f"runs there and the network/ProxyJump path (`ssh -F{silent_config} <host> true`)."]
    assert "banner exchange" in done.stderr
    # ssh's own words, below, are as ssh wrote them for the first host (%h was put into them)
    assert "--- ssh stderr of silent1 (the others' the same, of their own name) ---\n" in done.stderr
    assert "%h" not in done.stderr.partition("--- ssh stderr of")[2], done.stderr


def test_o_takes_a_value_that_starts_with_a_dash(sshd: SshServer) -> None:
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", f"-F{sshd.ssh_options[1]}", "--python",
            sys.executable, "host1", "echo", "reached"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env=dict(os.environ, PYTHONPATH=str(SRC)))
    assert (done.returncode, done.stdout) == (0, "reached\n"), done.stderr


def test_python_advice_names_the_option(sshd: SshServer, tmp_path: Path) -> None:
    done = mpish_ssh(sshd, "--python", str(tmp_path / "no-python"), "host[1-2]", "true")
    assert done.returncode == 255
    advice = "host[1-2] (2): the remote Python was not found (exit 127). Pass --python with a path"
    assert advice in done.stderr
    assert "python=" not in done.stderr


def test_f_bounds_the_hosts_running_the_command_at_once(sshd: SshServer, tmp_path: Path) -> None:
    log = tmp_path / "events"  # every "host" is this machine: one file, appended to atomically
    command = f"echo start >> {log}; sleep 0.5; echo end >> {log}"
    done = mpish_ssh(sshd, "host[1-4]", "-f", "2", "--nostdin", "-c", command)
    assert done.returncode == 0, done.stderr
    running = most = 0
    for event in log.read_text().split():
        running += 1 if event == "start" else -1
        most = max(most, running)
    assert log.read_text().split().count("end") == 4
    assert most == 2  # never more than -f at once, and the window is used


def test_hosts_lost_during_the_command_are_reported_once_folded(sshd: SshServer) -> None:
    # on hosts 2-4 the command kills its own shell server ($PPID of the server's bash)
    done = mpish_ssh(sshd, "host[1-4]", "-c", 'test "$MPISH_RANK" != 1 && kill -9 $PPID; echo ok')
    assert done.returncode == 255
    assert headers(done.stdout) == ["host1 (1)"]
    lines = [line for line in done.stderr.splitlines() if "ended unexpectedly" in line]
    assert lines == [lines[0]] and lines[0].startswith("host[2-4] (3): the remote side ended"), done.stderr
    assert lines[0].endswith("Run it again.") and ":reconnect" not in done.stderr, done.stderr  # no console


def test_console_honours_the_output_options_and_f(sshd: SshServer, tmp_path: Path) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-L", input="echo r$MPISH_RANK\n")
    assert done.stdout == "host1: r1\nhost2: r2\n", done.stderr
    log = tmp_path / "events"  # -f 1 at the console too, as clush's interactive mode keeps its fan-out
    done = mpish_ssh(sshd, "host[1-3]", "-f", "1", "-q",
                     input=f"echo start >> {log}; sleep 0.3; echo end >> {log}\n")
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["start", "end"] * 3


def test_hosts_are_ranked_in_node_set_order_as_clush_sorts_them(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "-w", "host2,host1", "--json", "-c", "echo $MPISH_RANK")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    ranked = [(r["rank"], r["host"], r["stdout"]) for r in records]
    assert ranked == [(1, "host1", "1\n"), (2, "host2", "2\n")]  # @1 is host1 at the console too


def test_console_commands_from_a_file_or_a_pipe_exit_255_when_a_host_was_unreachable(
    sshd: SshServer, tmp_path: Path
) -> None:
    """`-C FILE` and commands piped in exited with the last line's status, 0, with a host down:
    a cron job could not tell (clush -S: 255, as mpish's -c)."""
    commands = tmp_path / "commands"
    commands.write_text("echo hi\n")
    for args, given in ((["-C", str(commands)], None), ([], "echo hi\n")):
        done = mpish_ssh(sshd, "host1,nohost.invalid", *args, input=given)
        assert done.returncode == 255, (args, done.stderr)
        assert done.stdout.splitlines()[-1] == "hi", done.stdout
        assert "nohost.invalid: host unreachable" in done.stderr, done.stderr
    done = mpish_ssh(sshd, "host1,nohost.invalid", "--no-maxrc", "-C", str(commands))
    assert done.returncode == 0, done.stderr  # clush's default: failures reported, status 0
    done = mpish_ssh(sshd, "host[1-2]", "-C", str(commands))
    assert done.returncode == 0, done.stderr


def test_more_hosts_than_descriptors_fail_with_a_reason_not_a_traceback(
    sshd: SshServer, tmp_path: Path
) -> None:
    """Each host's ssh takes three pipes: past the descriptor limit mpish printed a Python
    traceback (OSError: Too many open files), near 330 hosts under a soft limit of 1,024. Now
    the soft limit is raised to the hard one, and past that each host that cannot start says
    why, folded; the others run."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host n*\n  HostName 127.0.0.1\n  Port {sshd.port}\n  IdentityFile {sshd.user_key}\n"
                      "  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                      "  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", f"-F {config}", "--python", sys.executable,
            "n[1-16]", "-c", "echo hi"]

    def limited(soft: int, hard: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                              env=dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1"),
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))

    done = limited(40, 4096)  # a low soft limit: raised, every host runs
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("n[1-16] (16)\n---------------\nhi\n"), done.stdout
    done = limited(40, 40)  # a low hard limit: some hosts cannot start, and say why
    assert done.returncode == 255, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = (r"^n\[\d+-16\] \(\d+\): cannot start ssh: Too many open files \(too many connections at "
            r"once for this process's limits: lower the fan-out, -f, or raise `ulimit -n`")
    assert re.search(said, done.stderr, re.MULTILINE), done.stderr
    assert "hi" in done.stdout


def test_json_advice_for_an_unreachable_host_has_the_users_ssh_options(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "nohost.invalid", "--json", "-c", "true")
    error = json.loads(done.stdout)["error"]
    assert f"`{shlex.join(['ssh', *sshd.ssh_options, 'nohost.invalid'])} true`" in error, error


def test_a_python_option_that_eats_the_code_is_named_without_the_code(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "--python", f"{sys.executable} -X", "host[1-2]", "true")  # -X takes -c's value
    assert done.returncode == 255
    assert done.stderr.startswith(f"host[1-2] (2): the remote side could not start: --python "
                                  f"{shlex.join([sys.executable, '-X'])} did not run the start-up code"), \
        done.stderr
    assert "zlib" not in done.stderr and "exec(" not in done.stderr, done.stderr  # none of the code


def test_an_endless_grouped_command_gives_way_to_labelled_lines_so_head_ends_it(sshd: SshServer) -> None:
    """``mpish ssh 'host[1-2]' -c yes | head -2`` ran for ever: grouped output waited for the end."""
    word = f"flood{os.getpid()}"
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python",
            sys.executable, "--gather-limit", "1", "host[1-2]", "-c", f"yes {word}"]
    script = f"{shlex.join(argv)} | head -2; echo status=${{PIPESTATUS[0]}}"
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env,
                              check=False)
    finally:
        found = subprocess.run(["pgrep", "-f", f"^yes {word}$"], capture_output=True, text=True, check=False)
        for pid in found.stdout.split():  # this test's own commands, by id
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
    *shown, status = done.stdout.splitlines()
    assert status == "status=141", (done.stdout[-300:], done.stderr)
    assert len(shown) == 2 and all(line in (f"host1: {word}", f"host2: {word}") for line in shown), shown
    assert done.stderr.count("more than 1 MiB of output gathered") == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_ctrl_c_on_a_terminal_ends_a_one_shot_command_while_its_gathered_output_is_being_shown(
    sshd: SshServer,
) -> None:
    """As ``mpish -n 2 -c yes`` (tests/mpi/test_shell_flood.py): the display of what was gathered,
    past the gather limit, did not look at the keyboard in mpish ssh's -c mode."""
    import pexpect

    word = f"flood{os.getpid()}c"
    argv = ["-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python", sys.executable,
            "--gather-limit", "8", "host[1-2]", "-c", f"yes {word}"]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    child = pexpect.spawn(sys.executable, argv, env=env, timeout=60, dimensions=(50, 250))
    try:
        child.expect(b"more than 8 MiB of output gathered")
        after = shown_after_ctrl_c(child)
        assert after < (4 << 20), f"{after} bytes shown after the Ctrl-C"
    finally:
        if child.isalive():
            child.terminate(force=True)
        found = subprocess.run(["pgrep", "-f", f"^yes {word}$"], capture_output=True, text=True, check=False)
        for pid in found.stdout.split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def test_b_with_one_host_prints_its_header_as_clush_does(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "-b", "host1", "-c", "echo hi")
    assert (done.returncode, done.stdout) == (0, f"{LINE}\nhost1 (1)\n{LINE}\nhi\n"), done.stderr
    done = mpish_ssh(sshd, "host1", "-c", "echo hi")
    assert (done.returncode, done.stdout) == (0, "hi\n"), done.stderr  # the default: as ssh shows it


# --- --copy, --rcopy -------------------------------------------------------------------------


CUT_PROXY = r"""
import os, select, socket, sys
peer = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
left = int(sys.argv[2])  # bytes from ssh to pass on: then the connection is cut (a host lost)
while True:
    ready = select.select([0, peer], [], [])[0]
    if 0 in ready:
        data = os.read(0, 65536)
        left -= len(data)
        if not data or left < 0:
            os._exit(0)
        peer.sendall(data)
    if peer in ready:
        data = peer.recv(65536)
        if not data:
            os._exit(0)
        os.write(1, data)
"""


def test_a_host_lost_during_a_copy_is_named_in_its_report(sshd: SshServer, tmp_path: Path) -> None:
    """host2's connection cut while --copy sends it a file: its report read "put data.bin to :
    rank lost" (the lost host's name was dropped); the copy fails, host1's copy is whole."""
    proxy = tmp_path / "cut.py"
    proxy.write_text(CUT_PROXY)
    config = tmp_path / "ssh_config"
    config.write_text(f"Host host2\n  ProxyCommand {sys.executable} {proxy} {sshd.port} 2000000\n"
                      f"Host *\n  Include {sshd.ssh_options[1]}\n")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(8 << 20))
    remote = tmp_path / "remote"
    remote.mkdir()
    done = mpish_ssh(sshd, "host[1-2]", "--copy", str(data), "--dest", str(remote),
                     ssh_options=f"-F {config}")
    assert done.returncode == 1, done.stderr
    assert re.search(rf"^mpish: put {data} to host2: .+", done.stdout + done.stderr, re.MULTILINE), done
    assert " to :" not in done.stdout + done.stderr, done
    assert f"mpish: put {data} to host1: ok" in done.stdout, done


def test_copy_and_rcopy_copy_files_and_trees_and_name_copies_by_host_as_clush(
    sshd: SshServer, tmp_path: Path
) -> None:
    tree = tmp_path / "d"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho ran\n")
    (tree / "sub" / "run.sh").chmod(0o755)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(300000))
    remote, back = tmp_path / "remote", tmp_path / "back"
    remote.mkdir()
    back.mkdir()
    done = mpish_ssh(sshd, "host1", "--copy", str(data), str(tree), "--dest", str(remote))
    assert done.returncode == 0, done.stderr
    assert (remote / "data.bin").read_bytes() == data.read_bytes()
    assert (remote / "d" / "sub" / "run.sh").read_bytes() == b"#!/bin/sh\necho ran\n"
    assert os.access(remote / "d" / "sub" / "run.sh", os.X_OK)
    done = mpish_ssh(sshd, "-w", "host[1-2]", "-f", "1", "--rcopy", str(remote / "data.bin"),
                     str(remote / "d"), "--dest", str(back))  # -f 1: a host at a time, a report per file
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"mpish: get {remote}/data.bin from host[1-2]: ok") == 1, done.stdout
    assert done.stdout.count(f"mpish: get {remote}/d from host[1-2]: ok") == 1, done.stdout
    for host in ("host1", "host2"):
        assert (back / f"data.bin.{host}").read_bytes() == data.read_bytes()
        assert (back / f"d.{host}" / "sub" / "run.sh").read_bytes() == b"#!/bin/sh\necho ran\n"
        assert f"  {back}/data.bin.{host}\n" in done.stdout, done.stdout
    done = mpish_ssh(sshd, "host2", "--rcopy", str(remote / "data.bin"))  # one host: still NAME.host
    assert done.returncode == 0, done.stderr
    assert (remote / "data.bin.host2").read_bytes() == data.read_bytes()
    done = mpish_ssh(sshd, "host1", "--copy", str(data), "--dest", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    missing = f"mpish: put {data} to host1: cannot write into {tmp_path}/nowhere: no such directory"
    assert missing in done.stderr, done.stderr


def test_p_keeps_the_times_and_modes_of_copies_both_ways_as_clush_p(sshd: SshServer, tmp_path: Path) -> None:
    old = 1_600_000_000_000_000_000  # ns
    tree = tmp_path / "d"
    tree.mkdir()
    (tree / "conf").write_bytes(b"x=1\n")
    (tree / "conf").chmod(0o640)
    for path in (tree / "conf", tree):
        os.utime(path, ns=(old, old))
    remote, back = tmp_path / "remote", tmp_path / "back"
    remote.mkdir()
    back.mkdir()
    done = mpish_ssh(sshd, "host1", "--copy", "-p", str(tree), "--dest", str(remote))
    assert done.returncode == 0, done.stderr
    done = mpish_ssh(sshd, "host[1-2]", "--rcopy", str(remote / "d" / "conf"), "--dest", str(back), "-p")
    assert done.returncode == 0, done.stderr
    for copy in (remote / "d", remote / "d" / "conf", back / "conf.host1", back / "conf.host2"):
        assert os.stat(copy).st_mtime_ns == old, copy
    assert os.stat(back / "conf.host2").st_mode & 0o777 == 0o640
    refused = mpish_ssh(sshd, "host1", "-p", "true")
    assert refused.returncode == 2 and "-p keeps a copy's times and modes: it goes with --copy or --rcopy" \
        in refused.stderr, refused.stderr


def test_copy_checks_every_source_before_reaching_any_host_and_a_missing_one_copies_nothing(
    sshd: SshServer, tmp_path: Path
) -> None:
    """`--copy tree run.sh --dest DIR` without run.sh said so, copied tree and exited 1 (a clush
    user's trial); now one line, status 2 (a usage error), nothing copied and no host reached
    (nohost.invalid would have added its own line)."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("x\n")
    into = tmp_path / "into"
    into.mkdir()
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python",
            sys.executable, "host1,nohost.invalid", "--copy", "tree", "run.sh", "--dest", str(into)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1"))
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (f"mpish: --copy: no file or directory 'run.sh' on this machine (in {tmp_path}); "
                           "nothing was copied\n")
    assert list(into.iterdir()) == []


def test_pick_runs_the_command_on_that_many_hosts(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-4]", "--pick", "2", "-L", "-c", "echo $MPISH_RANK")
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2 and len(set(lines)) == 2, (done.stdout, done.stderr)
    assert all(re.fullmatch(r"host([1-4]): \1", line) for line in lines), lines
    refused = mpish_ssh(sshd, "host[1-4]", "--pick", "0", "-c", "true")
    assert (refused.returncode, refused.stderr) == (2, "mpish ssh: --pick must be at least 1\n")
