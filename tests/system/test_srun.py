"""mpish launched by a real Slurm's srun (PMI2), with and without a pseudo-terminal."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from slurm_cluster import SlurmCluster

from shell_util import MPISH, make_home, shell_env


def srun(slurm: SlurmCluster, home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = shell_env(home, PWD=str(cwd), **slurm.env)
    return subprocess.run(
        [shutil.which("srun") or "srun", "--mpi=pmi2", *args],
        env=env, cwd=cwd, capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL,
    )


def test_srun_c_groups_the_servers_output_and_exits_with_the_largest_status(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    home = make_home(tmp_path / "home")
    proc = srun(slurm, home, tmp_path, "-n", "3", MPISH, "-c", 'echo "same on every server"; exit 3')
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 3, (out, err)
    assert out.count("same on every server") == 1, (out, err)  # two servers, one group
    assert "@1-2 (2)" in out, (out, err)
    assert "mpish: @1-2: exit code 3" in err, (out, err)


@contextlib.contextmanager
def srun_pty(slurm: SlurmCluster, home: Path, cwd: Path) -> Iterator[pexpect.spawn]:
    """`srun --mpi=pmi2 -n 3 --pty mpish` on a pseudo-terminal of its own, closed at the end."""
    env = shell_env(home, TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1", PWD=str(cwd), **slurm.env)
    child = pexpect.spawn(
        shutil.which("srun") or "srun", ["--mpi=pmi2", "-n", "3", "--pty", MPISH],
        env=env, cwd=str(cwd), timeout=60, encoding="utf-8", codec_errors="replace",
    )
    try:
        yield child
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close()


def test_srun_pty_runs_the_console_on_a_real_terminal(slurm: SlurmCluster, tmp_path: Path) -> None:
    with srun_pty(slurm, make_home(tmp_path / "home"), tmp_path) as child:
        child.expect(r"#>")
        child.sendline("echo answer-$((6 * 7))")
        child.expect(r"@1-2 \(2\)")  # both servers' output, grouped once
        child.expect("answer-42")  # the typed line shows answer-$((6 * 7)): this is the output
        child.expect(r"#>")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    assert child.exitstatus == 0, child.before


def test_srun_input_0_feeds_the_console_commands_on_stdin(slurm: SlurmCluster, tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    env = shell_env(home, PWD=str(tmp_path), **slurm.env)
    proc = subprocess.run(
        [shutil.which("srun") or "srun", "--mpi=pmi2", "--input=0", "-n", "3", MPISH, "-C", "-"],
        input=b"cd /usr\npwd\n", env=env, cwd=tmp_path, capture_output=True, timeout=90, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"@1-2 (2)" in proc.stdout and b"/usr\n" in proc.stdout, proc.stdout


def test_srun_without_pmi_says_so_instead_of_running_a_session_per_task(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """`srun -n 3 mpish -c ...` with no PMI (--mpi=none, a site's default) ran a whole embedded
    session in every task, each command three times over, with status 0 (a Slurm user's review)."""
    home = make_home(tmp_path / "home")
    env = shell_env(home, PWD=str(tmp_path), **slurm.env)
    proc = subprocess.run(
        [shutil.which("srun") or "srun", "--mpi=none", "-n", "3", MPISH, "-c", f"echo ran >> {tmp_path}/ran"],
        env=env, cwd=tmp_path, capture_output=True, timeout=90, check=False, stdin=subprocess.DEVNULL,
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert err.count("started by srun as 3 tasks, but MPI cannot see them as one job") == 1, err
    assert "srun --mpi=pmi2" in err
    assert not (tmp_path / "ran").exists()



def test_a_corrupt_key_or_a_bad_option_is_said_once_not_by_every_task(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """Under srun -n 3 each task said the same corrupt key (and the console added 'rank N has no
    usable mpish key' per server), and each task printed the same usage error (a Slurm user's
    review): five and three lines for one mistake. A server whose mpish directory is not the
    console's still says its own problem."""
    home = make_home(tmp_path / "home")
    key = home / "id_x25519"
    key.write_text("garbage\n")
    key.chmod(0o600)
    proc = srun(slurm, home, tmp_path, "-n", "3", MPISH, "-c", "true")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, err
    assert err.count("is corrupt") == 1 and "no usable mpish key" not in err, err
    proc = srun(slurm, make_home(tmp_path / "home2"), tmp_path, "-n", "3", MPISH, "-u", "abc", "-c", "true")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert err.count("is not a timeout") == 1 and err.count("usage:") == 1, err
    good = make_home(tmp_path / "good")  # the console's; the servers' own is broken
    script = tmp_path / "own-home"
    script.write_text(f'#!/bin/sh\n[ "$SLURM_PROCID" = 0 ] || export MPISH_HOME={home}\nexec {MPISH} "$@"\n')
    script.chmod(0o755)
    proc = srun(slurm, good, tmp_path, "-n", "3", str(script), "-c", "true")
    err = proc.stderr.decode(errors="replace")
    assert err.count("is corrupt") == 2 and err.count("has no usable mpish key") == 2, err


def _shm_names() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("mpich_shm_")}


def _shm_left(before: set[str], within: float = 10.0) -> set[str]:
    """MPICH's shared memory names made since ``before`` and still there after ``within`` s:
    only MPI's finalize removes them, so a step that ended otherwise left them for good."""
    deadline = time.monotonic() + within
    while (_shm_names() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _shm_names() - before


def _task_0(home: Path) -> int:
    """The pid of the console srun started (task 0) for the session of ``home``."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"MPISH_HOME={home}".encode() in env and b"SLURM_PROCID=0" in env:
                return int(entry.name)
    return 0


def test_a_console_killed_with_sigkill_under_srun_takes_its_servers_and_commands_with_it(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """kill -9 of the console (task 0) left both servers and their `sleep 100` running until the
    step's time limit; an idle console under --pty left a terminal only scancel could free (a
    Slurm user's review). A server on the console's host watches it. MPICH's shared memory,
    which no finalize removed, stayed in /dev/shm: the servers' watchers remove it."""
    before = _shm_names()
    home = make_home(tmp_path / "home")
    env = shell_env(home, PWD=str(tmp_path), **slurm.env)
    proc = subprocess.Popen(
        [shutil.which("srun") or "srun", "--mpi=pmi2", "-n", "3", MPISH, "-c",
         f"echo $$ >> {tmp_path}/shells; sleep 100"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    shells: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            text = (tmp_path / "shells").read_text() if (tmp_path / "shells").exists() else ""
            shells = [int(word) for word in text.split()]
            if len(shells) == 2 and _task_0(home):
                break
            time.sleep(0.1)
        console = _task_0(home)
        assert len(shells) == 2 and console, proc.communicate(timeout=30)
        os.kill(console, signal.SIGKILL)
        proc.communicate(timeout=40)  # the step ends
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in shells) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in shells if Path(f"/proc/{pid}").exists()], "a command outlived the console"
        assert _shm_left(before) == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("delay", [0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2])
def test_ctrl_c_while_srun_pty_starts_the_session_ends_it_without_a_hang(
    slurm: SlurmCluster, tmp_path: Path, delay: float
) -> None:
    """A Ctrl-C 0.6-1.2 s after `srun --pty mpish` hung the console for good (3 times in 4): it
    exited 130 and MPI's finalize waited for servers that waited for it (a Slurm user's
    review). Then, once the session was up but before the prompt read keys (prompt_toolkit
    still loading), the same again (CI; 2 in 2 at 0.6 s). Whether it comes during the start,
    before the prompt or at it, the session ends."""
    home = make_home(tmp_path / "home")
    with srun_pty(slurm, home, tmp_path) as child:
        time.sleep(delay)
        child.sendintr()
        if child.expect([pexpect.EOF, r"#>"]) == 1:  # the start was over: the prompt took it
            child.sendline("exit")
        child.expect(pexpect.EOF, timeout=40)  # no hang
    assert not child.isalive()
    assert not _task_0(home), "the console is still there"


def test_a_stopped_server_under_srun_is_given_up_and_the_step_ends(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """A server stopped (SIGSTOP) during `-u 2`: the console gave it up and aborted, but only an
    embedded server was killed, and srun waited for the stopped task until its own time limit
    (a Slurm user's review). A server on the console's host is now killed when given up; the
    console's MPI_Abort removes MPICH's shared memory first (no finalize does)."""
    before = _shm_names()
    home = make_home(tmp_path / "home")
    command = "if [ $MPISH_RANK = 2 ]; then kill -STOP $PPID; fi; sleep 1; echo done-$MPISH_RANK"
    started = time.monotonic()
    proc = srun(slurm, home, tmp_path, "-n", "3", MPISH, "-u", "2", "-c", command)
    out, err = proc.stdout.decode(), proc.stderr.decode(errors="replace")
    assert time.monotonic() - started < 60, (out, err)
    assert "done-1" in out and "done-2" not in out, (out, err)
    assert "given up" in out + err, (out, err)
    assert "rank 2 was lost" in err, err
    assert _shm_left(before) == set()


def test_scancel_leaves_no_state_directory_or_shared_memory_of_the_servers(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """scancel (SIGTERM to every task) killed the server ranks outright: their state directories
    (a copy of the exported environment) and a :put's part files stayed (a Slurm user's review).
    They end as a session's end ends them. MPICH's shared memory, which only MPI's finalize
    removes, stayed in /dev/shm (37 names after the reviewer's hour): the servers remove it."""
    before = _shm_names()
    home = make_home(tmp_path / "home")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = shell_env(home, PWD=str(tmp_path), TMPDIR=str(scratch), **slurm.env)
    proc = subprocess.Popen(
        [shutil.which("srun") or "srun", "--mpi=pmi2", "-J", "mpish-scancel", "-n", "3", MPISH, "-c",
         f"echo $$ >> {tmp_path}/shells; sleep 100"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (tmp_path / "shells").exists() and len((tmp_path / "shells").read_text().split()) == 2:
                break
            time.sleep(0.1)
        states = [p.name for p in scratch.iterdir() if p.name.startswith("mpish-shell-")]
        assert len(states) == 2, (states, proc.poll())
        assert _shm_names() - before, "MPICH made no shared memory: nothing to check"
        subprocess.run([shutil.which("scancel") or "scancel", "-n", "mpish-scancel"], env=env, check=True)
        proc.communicate(timeout=60)
        assert [p.name for p in scratch.iterdir() if p.name.startswith("mpish-shell-")] == []
        assert _shm_left(before) == set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_mpish_n_in_the_shell_of_a_one_task_step_runs_an_embedded_session(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """`srun -n 1 --pty bash`, then `mpish -n 2`: the step's PMI variables, inherited, made
    mpish a rank of that one-task job, whose spawn asked srun for more processors than the step
    had; it said so after 20 s (a Slurm user's review). They are the task's, not mpish's."""
    home = make_home(tmp_path / "home")
    started = time.monotonic()
    proc = srun(slurm, home, tmp_path, "-n", "1", "bash", "-c", f"{MPISH} -n 2 -c 'echo embedded'; exit $?")
    out, err = proc.stdout.decode(), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, (out, err)
    assert "@1-2 (2)" in out and "embedded" in out, (out, err)
    assert time.monotonic() - started < 60


def test_mpish_n_in_a_salloc_shell_warns_only_off_the_jobs_nodes(slurm: SlurmCluster, tmp_path: Path) -> None:
    """`mpish -n K` in salloc's shell on a login node started its servers there, silently (a
    Slurm user's review): it now says so and how to start them on the job's nodes. On one of
    the job's nodes (this one-node cluster's) nothing is said; the login node is played by
    the job's node list without this host."""
    home = make_home(tmp_path / "home")
    env = shell_env(home, PWD=str(tmp_path), **slurm.env)
    salloc = shutil.which("salloc") or "salloc"
    proc = subprocess.run([salloc, "-n", "1", MPISH, "-n", "1", "-c", "echo in-allocation"], env=env,
                          cwd=tmp_path, capture_output=True, timeout=90, check=False,
                          stdin=subprocess.DEVNULL)
    out, err = proc.stdout.decode(), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "in-allocation" in out, (out, err)
    assert "warning" not in err, err
    elsewhere = "SLURM_JOB_NODELIST=login[1-2] SLURM_NODELIST=login[1-2]"
    proc = subprocess.run([salloc, "-n", "1", "bash", "-c", f"{elsewhere} {MPISH} -n 1 -c 'echo ran'"],
                          env=env, cwd=tmp_path, capture_output=True, timeout=90, check=False,
                          stdin=subprocess.DEVNULL)
    out, err = proc.stdout.decode(), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "ran" in out, (out, err)
    assert "not on one of its nodes (login[1-2])" in err and "srun --mpi=pmi2 -n N --pty mpish" in err, err
