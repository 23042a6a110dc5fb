"""The MPI shell (``mpish -n K``) with the options clush users reach for first (issue 12).

Targets read clush's node selection for ranks: ``-w`` ranks or hosts, ``-x`` the same left
out, ``-g GROUP`` the ranks on the hosts of a ClusterShell group.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from shell_util import MPISH, make_home, run, shell_env
from terminal import Person, at_terminal

pytestmark = [pytest.mark.mpi, pytest.mark.console]
LINE = "-" * 15


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


@pytest.fixture
def groups(tmp_path: Path) -> Path:
    """A ClusterShell configuration with @here (this host) and @away (another host)."""
    confdir = tmp_path / "clustershell"
    confdir.mkdir()
    (confdir / "groups.conf").write_text(
        "[Main]\ndefault: local\n\n[local]\n"
        "map: sed -n 's/^$GROUP:\\(.*\\)/\\1/p' $CFGDIR/groups\n"
    )
    (confdir / "groups").write_text(f"here: {socket.gethostname()}\naway: elsewhere[1-2]\n")
    return confdir


def test_words_after_the_options_are_the_command_and_x_leaves_ranks_out(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "3", "-x", "@2", "-L", "echo", "r$MPISH_RANK", "-n"], home, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "@1: r1 -n\n@3: r3 -n\n"  # -n after the command is the command's


def test_f_runs_the_command_on_at_most_that_many_ranks_at_once_in_every_mode(
    home: Path, tmp_path: Path
) -> None:
    """`mpish -n 2 -f 1 true` was 'unrecognized arguments: -f' though the README said clush's
    options work in every mode (a clush user's review). Each command counts the commands
    running beside it (marker files); with -f 2 of 4 ranks, never more than 2."""
    (tmp_path / "running").mkdir()
    count = ("touch running/$MPISH_RANK; ls running | wc -l > seen.$MPISH_RANK; sleep 0.3; "
             "rm running/$MPISH_RANK")
    (tmp_path / "lines").write_text(count + "\n")
    for most, how in ((2, ["-f", "2", "-c", count]), (1, ["--fanout", "1", "-C", "lines"])):  # -C: console
        result = run([MPISH, "-n", "4", *how], home, tmp_path)
        assert result.returncode == 0, result.stderr
        seen = {path.name: int(path.read_text()) for path in tmp_path.glob("seen.*")}
        assert len(seen) == 4 and max(seen.values()) <= most, (how, seen)
        for path in tmp_path.glob("seen.*"):
            path.unlink()
    refused = run([MPISH, "-n", "2", "-f", "0", "true"], home, tmp_path)
    assert refused.returncode == 2 and b"-f/--fanout: '0': give a number of targets" in refused.stderr


def test_n_beyond_what_one_host_should_start_is_refused_at_once(home: Path, tmp_path: Path) -> None:
    """`mpish -n 99999999 true` waited 20 s, then said the servers did not start (a clush
    user's review); refused before MPI starts now, with what to do instead."""
    result = run([MPISH, "-n", "99999999", "true"], home, tmp_path, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().startswith("mpish: -n 99999999: more shell servers than one host should "
                                             "start"), result.stderr


def test_version_is_printed(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "--version"], home, tmp_path)
    assert (result.returncode, result.stdout.decode().split()[0]) == (0, "mpish")


def test_g_runs_on_the_ranks_of_a_groups_hosts(home: Path, tmp_path: Path, groups: Path) -> None:
    env = {"CLUSTERSHELL_CFGDIR": str(groups)}
    script = "echo same; [ $MPISH_RANK = 2 ] && echo two >&2; exit $MPISH_RANK"
    result = run([MPISH, "-n", "2", "-g", "here", "--label", "host", "--no-maxrc", "-c", script],
                 home, tmp_path, **env)
    host = socket.gethostname()
    assert result.returncode == 0, result.stderr  # --no-maxrc: clush's default status
    assert result.stdout.decode() == f"{LINE}\n{host} (2)\n{LINE}\nsame\n"  # named by host
    err = result.stderr.decode()
    assert err.startswith(f"{host}@2: two\n"), err  # stderr labelled too, with the rank: 2 on this host
    assert f"mpish: {host}@2: exit code" in err
    # ranks of one host with different outputs: headers that tell them apart (helper-104: "vm (1)" x3)
    ranks = run([MPISH, "-n", "3", "--label", "host", "-c", "echo r$MPISH_RANK"], home, tmp_path)
    headers = [line for line in ranks.stdout.decode().splitlines() if line.startswith(host)]
    assert headers == [f"{host}@{rank} (1)" for rank in (1, 2, 3)], ranks.stdout + ranks.stderr
    # -w and -x take groups and node sets too: the ranks on those hosts
    argv = [MPISH, "-n", "2", "-w", "@here", "-x", "@1", "-L", "echo", "r$MPISH_RANK"]
    named = run(argv, home, tmp_path, **env)
    assert named.stdout.decode() == "@2: r2\n", named.stderr
    away = run([MPISH, "-n", "1", "-g", "away", "true"], home, tmp_path, **env)
    assert away.returncode == 2
    assert away.stderr.decode().strip() == "mpish: no shell server on the hosts of away"


def test_X_a_and_hostfile_select_ranks_by_their_hosts_as_g_does(
    home: Path, tmp_path: Path, groups: Path
) -> None:
    """`mpish -n K` refused clush's -X, -a and --hostfile ('unrecognized arguments') though the
    README said clush's options work in every mode (a clush user's review)."""
    env = {"CLUSTERSHELL_CFGDIR": str(groups)}
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"# this host\n{socket.gethostname()}\n")
    for how in (["--hostfile", str(hostfile)], ["-a"], ["--all", "-X", "away"]):
        result = run([MPISH, "-n", "2", *how, "-L", "echo", "r$MPISH_RANK"], home, tmp_path, **env)
        assert result.stdout.decode() == "@1: r1\n@2: r2\n", (how, result.stderr)
    gone = run([MPISH, "-n", "2", "-a", "-X", "here", "true"], home, tmp_path, **env)
    assert gone.returncode == 2 and gone.stderr.decode().strip() == "mpish: no target left to run on"
    nowhere = tmp_path / "elsewhere"
    nowhere.write_text("elsewhere[1-2]\n")
    away = run([MPISH, "-n", "1", "--hostfile", str(nowhere), "true"], home, tmp_path, **env)
    assert away.returncode == 2 and f"no shell server on the hosts of {nowhere}" in away.stderr.decode()


def test_w_or_hostfile_naming_other_hosts_suggests_mpish_ssh_before_any_rank_starts(
    home: Path, tmp_path: Path,
) -> None:
    """A user trial's ``mpish -w 'node[1-4]' uptime`` (``ssh`` forgotten) started the ranks, then said
    "no shell server on host 'node1'": every server of mpish -n runs on this host."""
    here = socket.gethostname()
    started = time.monotonic()
    result = run([MPISH, "-w", "node[1-4]", "uptime"], home, tmp_path)
    assert (result.returncode, result.stdout) == (2, b""), result.stderr
    assert result.stderr.decode() == (f"mpish: no shell server on host 'node1': those of mpish -n all run on "
                                      f"this host ({here}). To run on other hosts over ssh, did you mean "
                                      "`mpish ssh -w 'node[1-4]' uptime`?\n")
    assert time.monotonic() - started < 5  # nothing started (the ranks took seconds)
    nowhere = tmp_path / "elsewhere"
    nowhere.write_text("elsewhere[1-2]\n")
    result = run([MPISH, "-n", "2", "--hostfile", str(nowhere), "-c", "echo hi"], home, tmp_path)
    assert result.returncode == 2 and f"did you mean `mpish ssh --hostfile {nowhere} -c 'echo hi'`?" in \
        result.stderr.decode(), result.stderr


def test_u_is_the_command_timeout_and_B_gathers_stderr(home: Path, tmp_path: Path) -> None:
    command = "echo a; echo b >&2; sleep 30.0625"
    result = run([MPISH, "-n", "2", "-B", "-u", "1", "-c", command], home, tmp_path)
    assert result.returncode == 255, result.stderr  # as clush -S after a timeout; not Ctrl-C's 130
    assert result.stdout.decode() == f"{LINE}\n@1-2 (2)\n{LINE}\na\nb\n"
    assert "mpish: @1-2: command timeout\n" in result.stderr.decode()  # clush's words, as over ssh


def test_c_and_command_words_together_are_refused(home: Path, tmp_path: Path) -> None:
    env = shell_env(home)
    done = subprocess.run([MPISH, "-n", "1", "-c", "true", "echo", "x"], env=env, cwd=tmp_path,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 2
    assert b"either with -c/-C or as the last words" in done.stderr


# --- the output options apply to -C and to the console, not only to -c ----------------------


def test_output_options_apply_to_commands_from_a_file(home: Path, tmp_path: Path) -> None:
    script = tmp_path / "commands"
    script.write_text("echo r$MPISH_RANK\n")
    lines = run([MPISH, "-n", "2", "-L", "-C", str(script)], home, tmp_path)
    assert lines.stdout.decode() == "@1: r1\n@2: r2\n", lines.stderr
    script.write_text("echo same; exit 3\n")
    bare = run([MPISH, "-n", "2", "-bN", "-q", "-C", str(script)], home, tmp_path)
    assert bare.stdout.decode() == "same\n"  # -bN: gathered, no header
    bare = run([MPISH, "-n", "2", "-N", "-q", "-C", str(script)], home, tmp_path)
    assert bare.stdout.decode() == "same\nsame\n"  # -N alone: each rank's lines, as clush's -N
    assert b"exit code" not in bare.stderr and bare.returncode == 3  # -q: no 'exit code' line
    as_json = run([MPISH, "-n", "2", "--json", "-C", "-"], home, tmp_path, input=b"echo hi\n")
    records = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    assert [(r["rank"], r["stdout"]) for r in records] == [(1, "hi\n"), (2, "hi\n")], as_json.stderr


def test_console_shows_output_as_the_output_options_say(home: Path, tmp_path: Path) -> None:
    env = shell_env(home, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    with at_terminal(MPISH, ["-n", "2", "-L"], env, str(tmp_path)) as person:
        person.prompt()
        screen = person.run("echo r$MPISH_RANK")
        assert "@1: r1\r\n@2: r2\r\n" in screen, screen
        assert "mode: json" in person.run(":mode json")
        screen = person.run("echo hi")
        assert '"rank": 1' in screen and '"rank": 2' in screen and LINE not in screen
        person.type("exit")


def test_x_takes_a_list_of_ranks_each_with_its_at(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "3", "-x", "@1,@2", "-L", "echo", "r$MPISH_RANK"], home, tmp_path)
    assert (result.returncode, result.stdout.decode()) == (0, "@3: r3\n"), result.stderr


def test_b_with_one_target_prints_its_header_as_clush_does_and_the_default_stays_raw(
    home: Path, tmp_path: Path
) -> None:
    for option in ("-b", "-B"):
        result = run([MPISH, "-n", "2", "-w", "@2", option, "-c", "echo r$MPISH_RANK"], home, tmp_path)
        expected = (0, f"{LINE}\n@2 (1)\n{LINE}\nr2\n")
        assert (result.returncode, result.stdout.decode()) == expected, result.stderr
    result = run([MPISH, "-n", "2", "-w", "@2", "-c", "echo r$MPISH_RANK"], home, tmp_path)
    assert (result.returncode, result.stdout.decode()) == (0, "r2\n"), result.stderr  # as ssh shows it


def test_x_naming_no_rank_or_host_there_runs_nothing_and_x_naming_some_leaves_them_out(
    home: Path, tmp_path: Path
) -> None:
    """clush ignores ``-x`` of nodes that are not in the set and runs everywhere; a new user's
    misspelt ``-x vn`` (the host is vm) ran on every rank: a misspelt exclusion must not run
    where it was meant not to (status 2, nothing run), while ``-x @2-7`` of 2 ranks leaves out 2."""
    result = run([MPISH, "-n", "2", "-x", "@2-7", "-L", "echo", "r$MPISH_RANK"], home, tmp_path)
    assert (result.returncode, result.stdout.decode(), result.stderr.decode()) == (0, "@1: r1\n", "")
    mark = tmp_path / "ran"
    for excluded, said in ((["-x", "@5"], "-x @5: no shell server on rank(s) 5 (the servers are @1-2)"),
                           (["-x", "nosuchhost"], "-x nosuchhost: no shell server on host 'nosuchhost'")):
        result = run([MPISH, "-n", "2", *excluded, "-c", f"touch {mark}"], home, tmp_path)
        assert result.returncode == 2 and not mark.exists(), result.stderr
        assert said in result.stderr.decode() and "nothing was run" in result.stderr.decode()
    result = run([MPISH, "-n", "2", "-x", "@3-1", "-c", "true"], home, tmp_path)  # a bad rank set still is
    assert result.returncode != 0 and "3-1" in result.stderr.decode() and b"Traceback" not in result.stderr


@pytest.mark.parametrize("option", ["-x", "-w"])
def test_an_at_name_that_is_no_group_and_no_host_is_an_error_in_one_line_as_in_mpish_ssh(
    home: Path, tmp_path: Path, option: str
) -> None:
    """``-x @typo`` (a misspelt group) left out nothing and ran on every rank, with status 0;
    ``mpish ssh`` says it in one line with status 2, as the README says both do."""
    result = run([MPISH, "-n", "2", option, "@typo", "-L", "echo", "r$MPISH_RANK"], home, tmp_path)
    assert (result.returncode, result.stdout) == (2, b""), result.stderr
    assert result.stderr.decode() == ("mpish: @typo is no group (ClusterShell's groups.conf, as for clush) "
                                      "and no host of a shell server\n")


def test_a_bad_node_set_is_a_usage_error_with_status_2_as_in_mpish_ssh(home: Path, tmp_path: Path) -> None:
    """(It exited 1 over MPI, 2 over ssh, where the README says 2 for both.)"""
    result = run([MPISH, "-n", "2", "-w", "node[1-", "-c", "true"], home, tmp_path)
    assert (result.returncode, result.stdout) == (2, b""), result.stderr
    assert result.stderr.decode().startswith("mpish: bad host set 'node[1-'")


def test_ctrl_c_on_a_command_that_traps_sigint_says_it_handled_it_not_silence(person: Person) -> None:
    """A command that traps SIGINT ends with status 0: Ctrl-C must not look like a success."""
    person.prompt()
    person.run(":mode live")
    person.type("trap 'echo caught-$MPISH_RANK' INT; echo started-$MPISH_RANK; sleep 60 & wait $!; kill $!; "
                "trap - INT")
    person.child.expect(["started-1", "started-2"])
    person.child.expect(["started-1", "started-2"])
    time.sleep(0.3)
    person.child.sendcontrol("c")
    screen = person.prompt()
    assert "caught-1" in screen and "caught-2" in screen, screen
    assert "@1-2: interrupted (SIGINT): the command handled it and exited 0" in screen, screen
    screen = person.run("echo again-$MPISH_RANK")  # a later command that ends alone says nothing more
    assert "again-1" in screen and "interrupted" not in screen, screen
