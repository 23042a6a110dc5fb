"""The MPI shell, non-interactive: embedded spawn and mpiexec, keys, grouping, JSON, status."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shell_util import MPI, MPISH, make_home, mpiexec, run, shell_env
from terminal import Person

pytestmark = pytest.mark.mpi


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_home(tmp_path / "home")


def test_embedded_grouped_output_and_largest_exit(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "3", "-c", "echo same; echo oops >&2; exit $MPISH_RANK"], home, tmp_path)
    out = result.stdout.decode()
    assert out.count("same") == 1, out  # identical outputs shown once
    assert "@1-3 (3)" in out
    assert result.returncode == 3  # the largest remote exit status, like clush -S
    err = result.stderr.decode()
    assert "oops" in err
    assert "@1: exit code 1" in err and "@3: exit code 3" in err


def test_different_outputs_are_grouped_separately(home: Path, tmp_path: Path) -> None:
    command = 'if [ "$MPISH_RANK" = 2 ]; then echo two; else echo other; fi'
    result = run([MPISH, "-n", "3", "-c", command], home, tmp_path)
    out = result.stdout.decode()
    assert result.returncode == 0
    assert "@1,3 (2)" in out and "@2 (1)" in out
    assert out.count("other") == 1 and out.count("two") == 1


def test_json_one_object_per_rank(home: Path, tmp_path: Path) -> None:
    result = run(
        [MPISH, "-n", "2", "--json", "-c", "printf out$MPISH_RANK; echo err >&2; exit 5"], home, tmp_path
    )
    assert result.returncode == 5
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["rank"] for r in lines] == [1, 2]
    for record in lines:
        assert set(record) >= {"rank", "host", "exit", "signal", "stdout", "stderr", "seconds"}
        assert record["stdout"] == f"out{record['rank']}"
        assert record["stderr"] == "err\n"
        assert record["exit"] == 5 and record["signal"] is None


@pytest.mark.parametrize("size", [2, 4])
def test_mpiexec_rank0_is_console(home: Path, tmp_path: Path, size: int) -> None:
    result = run([*mpiexec("-n", str(size)), MPISH, "--json", "-c", "echo $MPISH_RANK"], home, tmp_path)
    assert result.returncode == 0, result.stderr
    ranks = [json.loads(line)["rank"] for line in result.stdout.decode().splitlines()]
    assert ranks == list(range(1, size))


def test_binary_output_is_exact(home: Path, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4
    (tmp_path / "blob").write_bytes(data)
    result = run([MPISH, "-n", "1", "-c", f"cat {tmp_path / 'blob'}"], home, tmp_path)
    assert result.returncode == 0
    assert result.stdout == data  # one target: streamed as is, binary-safe


def test_a_session_started_in_a_directory_named_by_bytes_not_utf8_runs_its_commands(
    home: Path, tmp_path: Path
) -> None:
    """A server whose cwd (or an exported variable) holds a byte that is not UTF-8 died writing
    its state file (strict UTF-8: helper-142), and a command holding such a byte ended in a
    traceback (helper-141): both run as those bytes, as with ssh and clush."""
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff")
    os.mkdir(odd)
    result = run([MPISH, "-n", "2", "-c", b"pwd; printf '%s|' \xff"], home, Path(os.fsdecode(odd)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(odd + b"\n\xff|\n"), result.stdout  # (the group's line ended)


def test_refused_rank_never_runs_a_command(tmp_path: Path) -> None:
    """MPMD with another key on ranks 1-2: refused by fingerprint; the marker is never made."""
    from mpish import keys

    good = make_home(tmp_path / "a")
    other = make_home(tmp_path / "b")
    marker = tmp_path / "marker"
    command = f"touch {marker}.$MPISH_RANK"
    args = [
        *mpiexec(),
        "-n",
        "1",
        *MPI.env_option("MPISH_HOME", str(good)),
        MPISH,
        "-c",
        command,
        ":",
        "-n",
        "1",
        *MPI.env_option("MPISH_HOME", str(good)),
        MPISH,
        "-c",
        command,
        ":",
        "-n",
        "2",
        *MPI.env_option("MPISH_HOME", str(other)),
        MPISH,
        "-c",
        command,
    ]
    result = run(args, good, tmp_path)
    err = result.stderr.decode()
    fp = keys.load_identity(other).fingerprint
    assert "rank 2 (" in err and "rank 3 (" in err and fp in err, err
    assert (tmp_path / "marker.1").exists()  # the good rank ran it
    assert not (tmp_path / "marker.2").exists() and not (tmp_path / "marker.3").exists()
    assert result.returncode == 0


def test_authorized_key_is_accepted(tmp_path: Path) -> None:
    console = make_home(tmp_path / "a")
    server = make_home(tmp_path / "b", trust=[console])
    (console / "authorized_keys").write_text(
        __import__("mpish.keys", fromlist=["x"]).load_identity(server).public_line + "\n"
    )
    args = [
        *mpiexec(),
        "-n",
        "1",
        *MPI.env_option("MPISH_HOME", str(console)),
        MPISH,
        "--json",
        "-c",
        "echo ok",
        ":",
        "-n",
        "1",
        *MPI.env_option("MPISH_HOME", str(server)),
        MPISH,
        "--json",
        "-c",
        "echo ok",
    ]
    result = run(args, console, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["stdout"] == "ok\n"


def test_timeout_kills_the_process_tree(home: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    command = f"sleep 300 & echo $! > {pidfile}; sleep 300"
    result = run([MPISH, "-n", "1", "-u", "1", "-c", command], home, tmp_path)
    assert result.returncode == 255  # a timeout, as clush -S (SIGINT as Ctrl-C; the background job: SIGTERM)
    assert "command timeout" in result.stderr.decode()
    pid = int(pidfile.read_text())
    for _ in range(100):  # the background sleep was in the killed process group
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        raise AssertionError("the background process survived the timeout")


def test_gigabyte_of_output_complete_with_bounded_memory(home: Path, tmp_path: Path) -> None:
    """1 GiB through the secure channel: every byte, right checksum, peak RSS < 200 MiB."""
    size = 1 << 30
    command = f"yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -c {size}"
    out_file = tmp_path / "out"
    with out_file.open("wb") as sink:
        import subprocess

        from shell_util import shell_env

        proc = subprocess.run(
            [MPISH, "-n", "1", "--stats", "-u", "100", "-c", command],
            env=shell_env(home),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,  # -c broadcasts stdin: give it none, whatever pytest's is
            stdout=sink,
            stderr=subprocess.PIPE,
            timeout=110,
        )
    assert proc.returncode == 0, proc.stderr
    line = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
    expected = hashlib.sha256()
    whole, rest = divmod(size, len(line))
    block = line * 1024
    for _ in range(whole // 1024):
        expected.update(block)
    expected.update(line * (whole % 1024) + line[:rest])
    got = hashlib.sha256()
    with out_file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            got.update(chunk)
    assert out_file.stat().st_size == size
    assert got.hexdigest() == expected.hexdigest()
    err = proc.stderr.decode()
    rss = {
        line.split(":")[1].strip(): int(line.split()[-2]) for line in err.splitlines() if "peak RSS" in line
    }
    print(err)
    assert set(rss) == {"rank 1", "console"}, err
    assert max(rss.values()) < 200 * 1024, rss


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (waits up to 20 s; a zombie counts as gone)."""
    for _ in range(200):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):  # gone before or while /proc was read (ESRCH)
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


# the launcher's option that keeps a job going when one of its processes fails
KEEP_GOING = ["--with-ft", "ulfm"] if MPI.name == "openmpi" else ["-disable-auto-cleanup"]


@pytest.mark.parametrize("launcher", ["embedded", f"mpiexec {' '.join(KEEP_GOING)}"])
def test_a_server_killed_by_a_signal_leaves_the_others_serving(
    home: Path, tmp_path: Path, launcher: str
) -> None:
    """kill -9 of rank 2's server: it alone is reported lost; ranks 1 and 3 finish that command
    and run the next; the end says in one last line that MPI must abort, and exits non-zero.

    Hydra SIGKILLs every process of the job when one is killed by a signal: before
    shell/exit_relay.py, all three ranks were lost and nothing was printed. Open MPI's prte
    ended the whole job, console included, unless fault tolerance was on (ULFM): the
    embedded console turns it on, and a wildcard receive acknowledges the failure.
    """
    commands = tmp_path / "commands"
    first = 'if [ "$MPISH_RANK" = 2 ]; then kill -9 $PPID; fi; sleep 1; echo a-$MPISH_RANK $PPID'
    commands.write_text(f"{first}\necho b-$MPISH_RANK\n@2 true\n:targets\n")
    argv = [MPISH, "-n", "3", "-C", str(commands)]
    if launcher != "embedded":
        argv = [*mpiexec("-n", "4", *KEEP_GOING), MPISH, "-C", str(commands)]
    result = run(argv, home, tmp_path, timeout=60)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert re.findall(r"mpish: rank (\d+) \(.*\) lost: its server process \d+ died", err) == ["2"], err
    assert re.search(r"^mpish: @2: exit code 255 \(its server process \d+ died\)$", err, re.MULTILINE), err
    for line in ("a-1", "a-3", "b-1", "b-3"):
        assert re.search(rf"^{line}\b", out, re.MULTILINE), (out, err)
    assert "a-2" not in out and "b-2" not in out
    assert out.index("a-3") < out.index("b-1")
    assert "mpish: rank 2 was lost (its server is gone); the others still serve (@all)" in err, err
    assert re.search(r"^  lost: @2 \(.+\): its server is gone$", out, re.MULTILINE), out  # :targets names it
    ours = [line for line in err.splitlines() if line.startswith("mpish: ")]
    assert ours[-1] == "mpish: rank 2 was lost, so MPI cannot end the job normally; aborting it", err
    assert result.returncode != 0
    for survivor in ("a-1", "a-3"):
        assert _gone(int(out.split(survivor)[1].split()[0])), "a surviving server outlived the session"


def test_a_server_that_stops_answering_is_given_up_after_its_timeout_and_the_others_are_shown(
    home: Path, tmp_path: Path
) -> None:
    """Rank 2's server stopped (SIGSTOP: a frozen host) during a command with -u 4: the
    console waited for ever, and ranks 1 and 3's results with it (clush's own timer ends at
    the deadline). Now rank 2 is given up ANSWER_GRACE seconds after its timeout, named with
    why, the others' output is shown, and its stopped server is killed, not left behind."""
    pids = tmp_path / "pids"
    pids.mkdir()
    mine = f"{pids}/$MPISH_RANK"
    command = f"echo $PPID > {mine}.tmp && mv {mine}.tmp {mine}; sleep 2; echo done-$MPISH_RANK"
    with (tmp_path / "out").open("wb") as out, (tmp_path / "err").open("wb") as err:
        proc = subprocess.Popen([MPISH, "-n", "3", "-u", "4", "-c", command], env=shell_env(home),
                                cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    server = 0
    try:
        deadline = time.monotonic() + 60
        while not (pids / "2").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        server = int((pids / "2").read_text())
        os.kill(server, signal.SIGSTOP)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server and not _gone(server):
            os.kill(server, signal.SIGKILL)
            raise AssertionError("the stopped server was left behind")
    out_text, err_text = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert "done-1" in out_text and "done-3" in out_text and "done-2" not in out_text, (out_text, err_text)
    assert re.search(r"^mpish: @2: exit code 255 \(no answer 10 s after its 4 s timeout: its server or host "
                     r"stopped answering .*; given up\)$", err_text, re.MULTILINE), err_text
    # a lost rank: MPI cannot end the job normally (it is aborted), with -c's status, the largest
    # (-S: the lost rank's 255), as over ssh; it was 1 whatever the ranks said (helper-130)
    assert proc.returncode == 255, err_text


def test_builtin_loop_stops_on_timeout_and_exit_is_no_error(home: Path, tmp_path: Path) -> None:
    """A loop inside bash itself stops on SIGINT; ``exit`` in a one-shot command is no error."""
    result = run([MPISH, "-n", "1", "-u", "1", "-c", "while :; do :; done"], home, tmp_path)
    assert result.returncode == 255, result.stderr
    assert "command timeout" in result.stderr.decode()
    result = run([MPISH, "-n", "1", "-c", "echo before; exit 7"], home, tmp_path)
    assert result.returncode == 7 and result.stdout == b"before\n"
    assert result.stderr == b"mpish: @1: exit code 7\n"


def test_first_run_creates_the_key_and_says_so(tmp_path: Path) -> None:
    from mpish import keys

    home = tmp_path / "fresh-home"
    result = run([MPISH, "-n", "1", "-c", "true"], home, tmp_path)
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    identity = keys.load_identity(home)
    assert f"mpish: created identity key {home / 'id_x25519'} ({identity.fingerprint})" in err, err
    assert "other ranks and hosts trust it through" in err
    again = run([MPISH, "-n", "1", "-c", "true"], home, tmp_path)
    assert again.returncode == 0 and b"created identity key" not in again.stderr
    assert keys.load_identity(home).public == identity.public


def test_grouped_output_without_a_final_newline_ends_its_line(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "2", "-c", "printf out$MPISH_RANK; printf err$MPISH_RANK >&2"], home, tmp_path)
    assert result.returncode == 0, result.stderr
    line = "-" * 15
    assert result.stdout.decode() == f"{line}\n@1 (1)\n{line}\nout1\n{line}\n@2 (1)\n{line}\nout2\n"
    assert result.stderr.decode() == "@1: err1\n@2: err2\n"  # stderr labelled, line ended


def test_bash_errors_name_bash_without_a_line_number(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "2", "-c", "nosuchcmd; cd /nonexistent"], home, tmp_path)
    err = result.stderr.decode()
    expected = "@1-2: bash: nosuchcmd: command not found\n@1-2: bash: cd: /nonexistent: No such file"
    assert err.startswith(expected), err


def test_history_holds_none_of_the_shells_own_start_up_lines(home: Path, tmp_path: Path) -> None:
    """``history`` listed mpish's own start-up lines (``exec 200>&30 ...``, ``builtin set +o
    history``) to a new user; the session's commands are not recorded either (a command file's
    lines are not typed ones), so it is empty, as in ``bash -c``."""
    result = run([MPISH, "-n", "1", "-c", "history; echo end"], home, tmp_path)
    assert result.stdout == b"end\n", result.stdout + result.stderr


@pytest.mark.console
def test_oldpwd_is_not_the_servers_state_directory(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cd -`` went into the server's private state directory (``$TMPDIR/mpish-...``: its
    check, command, parse and state files), left in OLDPWD by the shell's first cd (new user).
    Without an OLDPWD of the user's, there is none, as in ``bash -c``; after a restart the
    one from before is back."""
    monkeypatch.delenv("OLDPWD", raising=False)
    result = run([MPISH, "-n", "1", "-c", "echo OLDPWD=${OLDPWD-unset}"], home, tmp_path)
    assert result.stdout == b"OLDPWD=unset\n", result.stderr
    script = b"cd /usr\nexec true\necho OLDPWD=$OLDPWD\n"
    result = run([MPISH, "-n", "1", "-C", "-"], home, tmp_path, input=script)
    assert f"OLDPWD={tmp_path}\n".encode() in result.stdout, result.stdout + result.stderr
    # a stale PWD in the environment (the parent changed directory since) is not the shell's
    result = run([MPISH, "-n", "1", "-c", "echo PWD=$PWD"], home, tmp_path, PWD="/nonexistent")
    assert result.stdout == f"PWD={tmp_path}\n".encode(), result.stderr
    # one that names the directory through a link is kept, as bash -c keeps it (/home -> /gpfs)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    link = str(tmp_path / "link")
    result = run([MPISH, "-n", "1", "-c", "echo PWD=$PWD"], home, tmp_path / "real", PWD=link)
    assert result.stdout == f"PWD={tmp_path / 'link'}\n".encode(), result.stderr


def test_json_fields_are_those_of_mpish_ssh_and_exit_is_no_error(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "2", "--json", "-c", "exit 3"], home, tmp_path)
    assert result.returncode == 3
    for record in map(json.loads, result.stdout.decode().splitlines()):
        assert set(record) == {"rank", "host", "exit", "signal", "stdout", "stderr", "seconds", "timed_out"}
        assert record["exit"] == 3 and record["timed_out"] is False


def test_background_jobs_print_no_job_notice(home: Path, tmp_path: Path) -> None:
    result = run([MPISH, "-n", "2", "-c", "sleep 0.1 & wait; echo done"], home, tmp_path)
    assert result.returncode == 0 and b"[1]" not in result.stderr, result.stderr
    assert result.stdout.decode().count("done") == 1


def test_exit_restarts_the_shell_with_the_state_from_before_the_command(home: Path, tmp_path: Path) -> None:
    lines = (b"cd /usr && export KEPT=yes\necho shell=$$\nexport LOST=1; exit 7\n"
             b"echo shell=$$ KEPT=$KEPT LOST=$LOST; pwd\n")
    result = run([MPISH, "-n", "1", "-C", "-"], home, tmp_path, input=lines)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    note = "the shell exited; a new one has the state from before this command"
    assert f"mpish: @1: exit code 7 ({note})" in err, err
    first, second = re.findall(r"shell=(\d+)", out)
    assert first != second, out  # another bash answers after the exit ...
    assert "KEPT=yes LOST=\n/usr\n" in out, out  # ... with the state from before the line that exited


def test_exit_with_a_bad_argument_says_what_bash_says_and_keeps_or_ends_the_shell_as_bash(
    home: Path, tmp_path: Path
) -> None:
    """`exit 3 4` and `exit abc` were silent (the wrapper that hides bash's "exit" hid them)."""
    lines = (b"set -u; export KEPT=yes; echo shell=$$\nexit 3 4; echo not-run\necho status=$? shell=$$\n"
             b"exit -- 5 6\ntrue && exit abc\necho shell=$$ KEPT=$KEPT\nfalse || exit\n(exit 4); exit --\n")
    result = run([MPISH, "-n", "1", "-C", "-"], home, tmp_path, input=lines)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert err.count("bash: exit: too many arguments\nmpish: @1: exit code 1\n") == 2, err
    assert "bash: exit: abc: numeric argument required\nmpish: @1: exit code 2 (the shell exited" in err, err
    assert "mpish: @1: exit code 1 (the shell exited" in err, err  # a bare exit: the last status, as bash
    assert "mpish: @1: exit code 4 (the shell exited" in err, err
    first, same, other = re.findall(r"shell=(\d+)", out)
    assert first == same != other, out  # too many arguments: the shell goes on; abc: it exited
    assert "not-run" not in out and "status=1 " in out and "KEPT=yes" in out, out


@pytest.mark.console
def test_exit_typed_at_the_console_ends_it_with_bashs_status_for_signs_words_and_dollar_question(
    home: Path, tmp_path: Path
) -> None:
    """`exit -1` and `exit +3` ran on the ranks (each shell restarted, the console stayed: the
    next lines, meant for the user's own shell, ran on every rank); `exit abc` too."""
    abc = "mpish: exit: abc: numeric argument required"
    for line, status, said in (("exit -1", 255, ""), ("exit +3", 3, ""), ("logout -- 300", 44, ""),
                               ("exit $?", 1, ""), ("exit --", 1, ""), ("exit 9223372036854775807", 255, ""),
                               ("exit abc", 2, abc)):
        lines = f"false\n{line}\necho stayed\n".encode()
        result = run([MPISH, "-n", "1", "-C", "-"], home, tmp_path, input=lines)
        assert (result.returncode, b"stayed" in result.stdout) == (status, False), (line, result.stderr)
        assert said in result.stderr.decode() and "shell exited" not in result.stderr.decode(), line


def test_console_targets_read_rank_lists_as_w_and_x_do(home: Path, tmp_path: Path) -> None:
    """`@1,@3 cmd` and `:targets @1,@3` said "bad rank range '@3'"; -x @1,@3 took them."""
    lines = b"@1,@3 echo picked $MPISH_RANK\n:targets @1,@3\necho default $MPISH_RANK\n"
    result = run([MPISH, "-n", "3", "-C", "-"], home, tmp_path, input=lines)
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert sorted(re.findall(r"picked (\d)", out)) == ["1", "3"], out
    assert sorted(re.findall(r"default (\d)", out)) == ["1", "3"] and "targets: @1,3 (2 of 3" in out, out


def test_debug_logs_from_the_console_and_its_servers_and_is_silent_otherwise(
    home: Path, tmp_path: Path
) -> None:
    quiet = run([MPISH, "-n", "1", "-c", "true"], home, tmp_path)
    assert (quiet.returncode, quiet.stderr) == (0, b"")
    result = run([MPISH, "--debug", "-n", "1", "-c", "true"], home, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    console = {line.split("]")[0] for line in lines if "mpish.shell.mpi_session: console:" in line}
    server = {line.split("]")[0] for line in lines if "mpish.shell.mpi_server: rank 1: handshake" in line}
    assert len(console) == 1 and len(server) == 1 and console != server, lines  # two processes logged


def test_targeting_a_lost_rank_says_so_in_one_line_and_the_others_still_serve(person: Person) -> None:
    """At the console, after rank 2's server was killed: ``@2 echo x`` is one line naming rank
    2 as lost (no command sent, no traceback), and ``@1 echo y`` runs as before."""
    person.prompt()
    person.run("@2 kill -9 $PPID; sleep 1")  # the server of rank 2, whose shell runs the command
    screen = person.run("@2 echo x")
    said = [line.strip() for line in screen.splitlines() if line.strip().startswith("mpish:")]
    assert len(said) == 1 and "2" in said[0] and "lost" in said[0], screen
    assert "Traceback" not in screen and "\nx\r" not in screen, screen
    screen = person.run("@1 echo y")
    assert re.search(r"^y\r?$", screen, re.MULTILINE), screen
    assert "Traceback" not in screen, screen


def test_an_exit_trap_runs_when_the_session_ends_as_at_the_end_of_an_ssh_command(
        home: Path, tmp_path: Path) -> None:
    """bash was SIGKILLed at the end: a cleanup `trap ... EXIT` never ran (its files stayed)."""
    mark = tmp_path / "cleaned"
    result = run([MPISH, "-n", "2", "-c", f'trap "touch {mark}.$MPISH_RANK" EXIT; echo x'], home, tmp_path)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().splitlines()[-1] == "x"
    assert (tmp_path / "cleaned.1").exists() and (tmp_path / "cleaned.2").exists()
    # at the console's exit too
    result = run([MPISH, "-n", "1", "-C", "-"], home, tmp_path,
                 input=f'trap "touch {mark}.console" EXIT\necho y\nexit\n'.encode())
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / "cleaned.console").exists()


def test_ulimit_n_below_the_shells_own_descriptors_is_refused_in_one_line_not_a_hang(
        home: Path, tmp_path: Path) -> None:
    """`ulimit -n 5` in the session's bash cut it off from its status descriptor (200): the
    command never ended (and Ctrl-C at the console printed "200: Bad file descriptor")."""
    result = run([MPISH, "-n", "1", "-c", "ulimit -n 5; echo next; (ulimit -n 5 && ulimit -n); "
                  "ulimit -n 100 -n 500; ulimit -Sn 1000 && ulimit -Sn"], home, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode().splitlines()[-3:] == ["next", "5", "1000"], result.stdout
    err = result.stderr.decode()  # the second: -n 100 applied, then -n 500 failed, leaving 100
    assert err.count("\n") == 2 and err.count("bash: ulimit: an open-files limit below 203") == 2, err


def test_reconnect_is_refused_in_one_line_over_mpi(home: Path, tmp_path: Path) -> None:
    done = run([MPISH, "-n", "1", "-C", "-"], home, tmp_path, input=b":reconnect\n")
    assert done.returncode == 1
    assert done.stderr.decode() == ("mpish: :reconnect is for mpish ssh: an MPI rank that was lost cannot be "
                                    "started again in its job (start a new session)\n")
