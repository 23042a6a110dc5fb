"""``mpish ssh``: the MPI shell's console and ShellServer over real ssh pipes (test sshd)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from ssh_util import SRC, console_at_terminal, mpish_ssh
from sshd_server import SshServer

from terminal import Person


def test_c_groups_four_hosts_and_each_host_is_its_rank(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-4]", "-c", "f() { echo same; }; f; exit 2")
    assert done.returncode == 2, done.stderr
    assert done.stdout == "---------------\nhost[1-4] (4)\n---------------\nsame\n"
    assert "mpish: host[1-4]: exit code 2" in done.stderr


def test_json_and_the_largest_exit_status(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-4]", "--json", "-c", 'echo r$MPISH_RANK; exit "$MPISH_RANK"')
    assert done.returncode == 4, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["host"], r["exit"], r["stdout"]) for r in records] == [
        (f"host{i}", i, f"r{i}\n") for i in range(1, 5)
    ]


def test_an_unreachable_host_is_reported_and_the_others_go_on(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2],nohost.invalid", "-c", "echo up")
    assert done.returncode == 255
    assert done.stdout == "---------------\nhost[1-2] (2)\n---------------\nup\n"
    assert re.search(r"^nohost\.invalid: host unreachable", done.stderr, re.MULTILINE), done.stderr


def test_console_state_persists_per_host_targets_and_ctrl_c(person: Person, tmp_path: Path) -> None:
    screen = person.prompt()
    assert "nohost.invalid: host unreachable" in screen
    person.run(f"cd {tmp_path} && export GREETING=hello && f() {{ echo fn-$1; }}", f"{tmp_path}")
    person.run("alias hi='echo alias-works'")
    screen = person.run("pwd; echo $GREETING; f x; hi", f"{tmp_path}")
    assert "host[1-2] (2)" in screen
    for text in (str(tmp_path), "hello", "fn-x", "alias-works"):
        assert screen.count(text + "\r\n") == 1, screen
    screen = person.run("@host2 echo only-$MPISH_RANK")
    assert "only-2" in screen and "only-1" not in screen
    screen = person.run("@host[1-2] echo both-$MPISH_RANK")
    assert "both-1" in screen and "both-2" in screen
    person.run(":mode live")  # output as it comes, so the test sees the command running
    person.child.sendline("echo started; sleep 61.25; echo not-reached")
    seen: set[int] = set()
    while len(seen) < 2:  # the two hosts' lines come in any order
        seen.add(person.child.expect(["host1: started", "host2: started"]))
    person.child.sendcontrol("c")
    screen = person.prompt()
    assert "interrupting host[1-2]" in screen and "not-reached" not in screen
    screen = person.run("f again; echo $GREETING")  # the session went on, state restored
    assert "fn-again" in screen and "hello" in screen
    screen = person.run("@host1 pgrep -fx 'sleep 61.25' || echo none-left")  # not only the 1st command's
    assert "none-left" in screen, screen
    person.child.sendline("exit")
    person.child.expect(pexpect.EOF)
    person.child.close()
    assert person.child.exitstatus == 0


def test_console_ends_cleanly_on_ctrl_d(person: Person) -> None:
    person.prompt()
    person.child.sendeof()
    person.child.expect(pexpect.EOF)
    person.child.close()
    assert person.child.exitstatus == 0


def test_a_host_lost_during_the_command_counts_as_255_and_the_others_finish(sshd: SshServer) -> None:
    # on host2 the command kills its own shell server ($PPID of the server's bash)
    done = mpish_ssh(sshd, "host[1-3]", "--json", "-c", 'test "$MPISH_RANK" = 2 && kill -9 $PPID; echo ok')
    assert done.returncode == 255, done.stderr
    records = {r["host"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(records) == ["host1", "host2", "host3"]
    for host in ("host1", "host3"):
        assert (records[host]["exit"], records[host]["stdout"]) == (0, "ok\n")
    assert records["host2"]["exit"] == 255 and "ended unexpectedly" in records["host2"]["error"]


def test_timeout_kills_the_command_and_says_so(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-2]", "-u", "1", "-c", "echo a; sleep 30.5; echo not-reached")
    assert done.returncode == 255, done.stderr  # as clush -S after a timeout; not Ctrl-C's 130
    assert done.stdout == "---------------\nhost[1-2] (2)\n---------------\na\n"
    assert done.stderr == "mpish: host[1-2]: command timeout\n"  # clush's words, as over MPI


def test_put_and_get_through_the_console_read_from_stdin(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 << 20))
    (tmp_path / "remote").mkdir()
    script = (f"cd {tmp_path}/remote\n:put {source} copy.bin\n"
              f":get {tmp_path}/remote/copy.bin {tmp_path}/back.bin\nsha256sum copy.bin\n")
    done = mpish_ssh(sshd, "host[1-2]", input=script)
    assert done.returncode == 0, done.stderr
    assert "put host[1-2]: ok, size verified, bytes authenticated by ssh" in done.stdout
    # with the rate of the bytes received, as a put's (it had none)
    assert re.search(r"get host\[1-2\]: ok, size verified, bytes authenticated by ssh \(\d+\.\d\d s, "
                     r"[\d.]+ [KM]iB/s\)\n", done.stdout), done.stdout
    for rank in (1, 2):
        assert (tmp_path / f"back.bin.host{rank}").read_bytes() == source.read_bytes()
        assert f"  {tmp_path}/back.bin.host{rank}\n" in done.stdout


def test_the_remote_side_refuses_a_bad_start_and_writes_nothing_to_stdout() -> None:
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(SRC))
    for args in ([], ["x", "y"], ["0", "2"], ["3", "2"]):
        done = subprocess.run([sys.executable, "-m", "mpish.shell.remote", *args], input=b"x" * 100,
                              capture_output=True, timeout=60, env=env, check=False)
        assert done.returncode == 2 and done.stdout == b""
        assert b"not started by an mpish ssh console" in done.stderr


def test_fanout_bounds_the_hosts_being_connected_at_once(
    sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpish.shell import ssh_session

    connecting_at_start: list[int] = []
    real_connect = ssh_session._connect

    def counting_connect(session: ssh_session.SshSession, rank: int, *args: object) -> bool:
        connecting_at_start.append(sum(ssh_session._connecting(session, r) for r in session.peers))
        return real_connect(session, rank, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ssh_session, "_connect", counting_connect)
    session = ssh_session.start_ssh_session(
        [f"host{i}" for i in range(1, 6)],
        python=(sys.executable,),
        ssh_options=sshd.ssh_options,
        fanout=2,
    )
    try:
        assert sorted(peer.host for peer in session.peers.values()) == [f"host{i}" for i in range(1, 6)]
        assert not session.failed
        assert len(connecting_at_start) == 5
        assert max(connecting_at_start) <= 1  # a third ssh starts only when one of two has joined
    finally:
        session.finish()


def test_fanout_one_on_the_command_line(sshd: SshServer) -> None:
    done = mpish_ssh(sshd, "host[1-3]", "-f", "1", "-c", "echo one at a time")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "---------------\nhost[1-3] (3)\n---------------\none at a time\n"


def test_console_shows_output_without_a_final_newline_and_ends_its_line(person: Person) -> None:
    person.prompt()
    screen = person.run("printf nonl-$MPISH_RANK")
    assert "nonl-1\r\n" in screen and "nonl-2\r\n" in screen, screen
    screen = person.run("@host1 printf 'a\\nb'")
    assert "a\r\nb\r\n" in screen, screen


def test_console_keeps_dollar_question_mark_across_commands(person: Person) -> None:
    person.prompt()
    person.run("false")
    screen = person.run("echo status=$?")
    assert "status=1\r\n" in screen, screen


def test_console_ctrl_c_keeps_what_ran_before_the_interrupted_command(person: Person) -> None:
    person.prompt()
    person.run(":mode live")
    person.child.sendline("export X=1; cd /; echo started; sleep 30.75; echo not-reached")
    person.child.expect(["host1: started", "host2: started"])
    person.child.expect(["host1: started", "host2: started"])
    person.child.sendcontrol("c")
    screen = person.prompt("/")
    assert "killed by SIGINT" in screen and "not-reached" not in screen and "restarted" not in screen
    screen = person.run("echo X=$X; pwd", "/")
    assert screen.count("X=1\r\n") == 2 and screen.count(": /\r\n") == 2, screen


def test_console_says_when_the_shell_had_to_be_restarted(person: Person) -> None:
    person.prompt()
    person.run(":mode live")
    person.child.sendline("echo started; sh -c \"trap '' INT; sleep 30.5\"; echo not-reached")
    person.child.expect(["host1: started", "host2: started"])
    person.child.expect(["host1: started", "host2: started"])
    person.child.sendcontrol("c")
    person.child.expect("interrupting")
    person.child.sendcontrol("c")
    screen = person.prompt()
    assert "killed by SIGTERM (the command ignored SIGINT: the shell was restarted" in screen, screen


def test_console_reports_a_host_lost_during_a_command_once(person: Person) -> None:
    person.prompt()
    screen = person.run('test "$MPISH_RANK" = 2 && kill -9 $PPID; echo ok')
    lost = [line for line in screen.splitlines() if "host2" in line and "ended" in line]
    assert len(lost) == 1, screen
    assert "ok" in screen and "[host1]" in person.run("true")  # host1 goes on, alone


def test_C_runs_the_lines_of_a_file_or_of_stdin_as_the_mpi_shells_C(sshd: SshServer, tmp_path: Path) -> None:
    """``mpish ssh HOSTS -C FILE`` and ``-C -``, as the MPI shell has them; a missing FILE is one line."""
    script = tmp_path / "lines"
    script.write_text("x=7\necho got-$x\nfalse\n")
    done = mpish_ssh(sshd, "host[1-2]", "-C", str(script))
    assert "got-7" in done.stdout, (done.stdout, done.stderr)
    assert done.returncode == 1, done.stderr  # the last line's status, as with -C over MPI
    done = mpish_ssh(sshd, "host[1-2]", "-C", "-", input="echo from-stdin\n")
    assert done.returncode == 0 and "from-stdin" in done.stdout, (done.stdout, done.stderr)
    done = mpish_ssh(sshd, "host[1-2]", "-C", str(tmp_path / "missing"))  # one line, no host reached
    assert done.returncode == 2
    missing = tmp_path / "missing"
    assert done.stderr == f"mpish: cannot read commands from {missing}: No such file or directory\n"


def test_C_ends_at_a_failed_targets_line_with_status_2_and_a_builtin_that_succeeds_leaves_0(
    sshd: SshServer, tmp_path: Path,
) -> None:
    """As the MPI shell's -C (shell/repl.py): the lines after a failed :targets ran on the old hosts."""
    script = tmp_path / "lines"
    script.write_text(f":targets host9\ntouch {tmp_path}/ran\n")
    done = mpish_ssh(sshd, "host[1-2]", "-C", str(script))
    assert done.returncode == 2 and not (tmp_path / "ran").exists(), done.stderr
    assert f"mpish: {script}: line 1 (:targets) failed: the rest of the script was not run\n" in done.stderr
    done = mpish_ssh(sshd, "host[1-2]", "-C", "-", input="false\n:targets host1\n")
    assert done.returncode == 0, done.stderr


def console_reading(config: Path, hosts: str, script: str, *more: str) -> subprocess.CompletedProcess[str]:
    """`mpish ssh HOSTS` through the ssh config ``config``, its console reading ``script``."""
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", f"-F {config}", "--python", sys.executable,
            hosts, *more]
    return subprocess.run(argv, input=script, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1"), check=False)


def test_reconnect_brings_a_lost_host_back_as_the_same_rank_with_a_new_shell(
    sshd: SshServer, tmp_path: Path
) -> None:
    """A host whose server died stayed out of the session for good (clush's next command would
    reach it). A failed :reconnect leaves it lost and can be tried again (that was a KeyError);
    a host chosen out of the targets before it was lost stays out of them when it is back."""
    config = tmp_path / "ssh_config"  # host2 made unreachable, then reachable again, from the session
    include = f"Include {sshd.ssh_options[1]}\n"
    config.write_text(include)
    unreachable = shlex.quote(f"Host host2\n  Port 1\n\n{include}")
    script = "\n".join([
        "export KEEP=1", ":targets host1", "@all [ $MPISH_RANK = 2 ] && kill -9 $PPID; true", "@host2 true",
        f"printf %s {unreachable} > {config}", ":reconnect", ":targets",
        f"printf %s {shlex.quote(include)} > {config}", ":reconnect host1", ":reconnect host2", ":reconnect",
        "echo chosen-$MPISH_RANK", "@all echo back-$MPISH_RANK KEEP=${KEEP:-gone}", ""])
    done = console_reading(config, "host[1-2]", script, "-C", "-")
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    assert "mpish: host2 was lost (its server is gone)" in err, err  # before :reconnect
    assert "host2: not reconnected: host unreachable" in err and "port 1: Connection refused" in err, err
    assert "mpish:\n" not in err, err  # its first line after "mpish:", not a bare "mpish:" line
    assert "  lost: host2: its server is gone (:reconnect brings it back)" in out, out
    assert "host1: connected, not lost" in err, err
    assert out.count("host2: reconnected, with a new shell") == 1, out
    assert "nothing to reconnect: no host was lost" in out, out
    assert "chosen-1" in out and "chosen-2" not in out, out  # the targets chosen before stay so
    assert "back-1 KEEP=1" in out and "back-2 KEEP=gone" in out, out  # rank 2 again, a new shell


def test_targets_counts_a_lost_host_among_the_servers(sshd: SshServer, tmp_path: Path) -> None:
    """After host2 of host[1-3] was lost, :targets said "@all (2 of 2 servers)" and listed host2
    under lost: (a clush user's trial): the lost host was counted nowhere."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {sshd.ssh_options[1]}\n")
    done = console_reading(config, "host[1-3]", "@host2 kill -9 $PPID\n:targets\n")
    assert "targets: host[1,3] (2 of 3 hosts, 1 lost)\n" in done.stdout, (done.stdout, done.stderr)
    assert "  lost: host2: its server is gone (:reconnect brings it back)" in done.stdout, done.stdout


def test_targets_names_hosts_not_rank_numbers(sshd: SshServer, tmp_path: Path) -> None:
    """`:targets host2` then `:targets` said "targets: @2 (1 of 3 servers)": the host by its
    number only (a clush user's trial); the hosts are still listed with their numbers, which
    @2 and :attach @2 take (helper-141)."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {sshd.ssh_options[1]}\n")
    done = console_reading(config, "host[1-3]", ":targets host2\n:targets\n")
    listed = "targets: host2 (1 of 3 hosts)\n  host1: @1\n  host2: @2\n  host3: @3\n"
    assert done.stdout.count(listed) == 2, done.stdout


@pytest.mark.parametrize("how", ["a pipe", "-C -", "-C FILE"])
def test_a_host_down_when_the_console_starts_is_kept_lost_and_reconnect_brings_it_in(
    sshd: SshServer, tmp_path: Path, how: str
) -> None:
    """`mpish ssh 'host1,nosuch'`: the host that could not be reached was dropped for the whole
    session (`:reconnect nosuch` said "@nosuch is no group"), where clush's interactive mode
    keeps a node that is still booting in its set. It is now lost from the start: :targets
    names it, :reconnect tries it, and once back it is a target as the others; in the lines of
    `-C` too (a clush user's review found it dropped there)."""
    config = tmp_path / "ssh_config"
    include = f"Include {sshd.ssh_options[1]}\n"
    config.write_text(f"Host host3\n  Port 1\nHost *\n  {include}")  # host3 is down at the start
    script = "\n".join([":targets", "@host3 true", ":reconnect host3",
                        f"printf %s {shlex.quote(include)} > {config}", ":reconnect host3",
                        "echo up-$MPISH_RANK", ":targets", ""])
    lines = tmp_path / "lines"
    lines.write_text(script)
    more = {"a pipe": (), "-C -": ("-C", "-"), "-C FILE": ("-C", str(lines))}[how]
    done = console_reading(config, "host1,host3", script, *more)  # the console, its commands not typed
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    assert "  lost: host3: not reached at the start (:reconnect brings it back)" in out, out
    assert "mpish: host3 was not reached at the start (:reconnect tries again)" in err, err
    assert "host3: not reconnected: host unreachable" in err, err  # the first try: still down
    assert out.count("host3: reconnected, with a new shell") == 1, out
    assert "up-1" in out and "up-2" in out, out  # a target once back
    assert out.count("lost:") == 1, out  # the last :targets: nothing lost
    assert "no group" not in err, err


def test_at_a_terminal_a_console_whose_every_host_was_lost_stays_for_reconnect(
    sshd: SshServer, tmp_path: Path
) -> None:
    """`mpish ssh host1` whose one server died ended the session at once, where :reconnect
    (the README's remedy, and a dropped network's) could not be typed."""
    with console_at_terminal(sshd, "host1", tmp_path) as person:
        person.prompt()
        screen = person.run("kill -9 $PPID")
        assert "host1: the remote side ended unexpectedly" in screen, screen
        screen = person.run("echo lost")
        assert "every host was lost: :reconnect brings them back (or :quit)" in screen, screen
        screen = person.run(":reconnect")
        assert "host1: reconnected, with a new shell" in screen, screen
        assert "reached-1" in person.run("echo reached-$MPISH_RANK"), screen
        person.type(":quit")
        person.child.expect(pexpect.EOF)
