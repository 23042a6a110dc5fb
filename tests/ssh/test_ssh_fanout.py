"""``mpish ssh -f N -c``: at most N ssh connections open at once, as clush's fan-out
(shell/turns.py): each host beyond the first N is connected in its turn and hung up when done.
Before, -f bounded the commands running, and every host stayed connected: 2,000 hosts were
2,000 local ssh processes and 2,000 remote Pythons at once."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_server import SshServer

SRC = Path(__file__).resolve().parents[2] / "src"


def start_mpish_ssh(ssh_options: str, *args: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", ssh_options, "--python", sys.executable, *args]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def ssh_children(pid: int) -> int:
    """The ssh client processes ``pid`` has now."""
    found = subprocess.run(["pgrep", "-P", str(pid), "-x", "ssh"], capture_output=True, text=True,
                           check=False)
    return len(found.stdout.split())


def most_ssh_children(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    """Sample the ssh children every 10 ms until ``process`` ends: the most seen, its output."""
    most = 0
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        most = max(most, ssh_children(process.pid))
        time.sleep(0.01)
    if process.poll() is None:  # hung: ended here, not left running past the test
        process.kill()
    out, err = process.communicate(timeout=10)
    return most, out, err


def test_f_bounds_the_ssh_connections_open_at_once_not_only_the_commands_running(sshd: SshServer) -> None:
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-6]", "-f", "2", "-c",
                              "sleep 0.3; echo ran on $MPISH_RANK")
    most, out, err = most_ssh_children(process)
    assert process.returncode == 0, err
    assert sorted(line for line in out.splitlines() if line.startswith("ran on")) == [
        f"ran on {rank}" for rank in range(1, 7)]
    assert most == 2, f"{most} ssh processes at once with -f 2 (each host stayed connected?)"


def test_stdin_from_a_pipe_reaches_every_host_in_its_turn_and_f_still_bounds_the_connections(
    sshd: SshServer,
) -> None:
    """Data on stdin made every host connect at once (one stream for all), so -f was ignored
    whenever stdin was a pipe (`true |`, cron, CI: 200 ssh processes at -f 8, a clush user).
    stdin is now spooled and each host gets it from its first byte in its turn (shell/spool.py)."""
    data = b"".join(b"line %d of the piped input\n" % i for i in range(20_000))  # 0.5 MB: several chunks
    reader, writer = os.pipe()
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-5]", "-f", "2", "-c", "sha256sum",
                              stdin=reader)
    os.close(reader)

    def write() -> None:
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(data)

    feeder = threading.Thread(target=write)
    feeder.start()
    most, out, err = most_ssh_children(process)
    feeder.join(timeout=10)
    assert process.returncode == 0, err
    digest = hashlib.sha256(data).hexdigest()
    assert out.count(f"{digest}  -") == 1 and "host[1-5] (5)" in out, out  # every host, every byte
    assert most == 2, f"{most} ssh processes at once with -f 2 and a pipe on stdin"


def test_a_stdin_pipe_that_never_closes_holds_back_no_command_that_does_not_read_it(sshd: SshServer) -> None:
    """ssh without -n in a script: stdin stays open for ever. The hosts' commands that do not
    read it end, and each host's turn comes (nothing waits for stdin's end before starting)."""
    reader, writer = os.pipe()
    try:
        process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-4]", "-f", "2", "-c",
                                  "echo ran on $MPISH_RANK", stdin=reader)
        os.close(reader)
        most, out, err = most_ssh_children(process)
    finally:
        os.close(writer)
    assert process.returncode == 0, err
    assert sorted(line for line in out.splitlines() if line.startswith("ran on")) == [
        f"ran on {rank}" for rank in range(1, 5)], (out, err)
    assert most == 2


def test_copy_failures_of_later_batches_are_folded_under_one_node_set(
    silent_config: Path, tmp_path: Path
) -> None:
    """--copy in batches of -f: hosts unreachable in later batches were reported one by one, three
    lines each (ssh's words name the host, so no two were equal; a clush user): folded now, as
    -c folds them, ssh's own words given once for the first host."""
    data = tmp_path / "data.txt"
    data.write_text("copied\n")
    (tmp_path / "into").mkdir()
    process = start_mpish_ssh(f"-F{silent_config}", "host[1-2],silent[1-3]", "-f", "2", "-t", "1",
                              "--copy", str(data), "--dest", str(tmp_path / "into"))
    _, out, err = most_ssh_children(process)
    assert process.returncode == 1, err
    assert f"mpish: put {data} to host[1-2]: ok" in out, out
    failed = [line for line in err.splitlines() if line.startswith("mpish: put")]
    assert len(failed) == 1 and failed[0].startswith(f"mpish: put {data} to silent[1-3]: "), err


def test_under_v_a_host_that_fails_in_its_turn_is_reported_as_it_fails(
    sshd: SshServer, tmp_path: Path
) -> None:
    """-v shows everything as it comes (clush's -v): a host unreachable in its turn was told
    only at the end, folded, after every later host's output (a clush user)."""
    included = Path(sshd.ssh_options[1]).read_text()
    host1 = included.split("Host host1\n", 1)[1].split("\nHost ", 1)[0]
    config = tmp_path / "ssh_config"  # turns in node set order: host1, iota1 (unreachable), kappa1
    config.write_text(f"Include {sshd.ssh_options[1]}\n\nHost kappa1\n{host1}\n\nHost iota*\n"
                      "  HostName 127.0.0.1\n  Port 9\n  LogLevel ERROR\n")
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", f"-F{config}", "--python", sys.executable,
            "host1,iota1,kappa1", "-f", "1", "-v", "-c", "sleep 0.5; echo done"]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env, timeout=120, check=False)
    lines = done.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("iota1: host unreachable")]
    assert done.returncode == 255 and failed and "kappa1: done" in lines, done.stdout
    assert failed[0] < lines.index("kappa1: done"), done.stdout  # told when it failed, not at the end


def test_hosts_that_fail_in_their_turn_are_reported_folded_and_do_not_hold_the_others(
    silent_config: Path,
) -> None:
    # node set order: host1, host2, then the silent ones, each reached only in its turn (-f 1)
    process = start_mpish_ssh(f"-F{silent_config}", "silent[1-2],host[1-2]", "-f", "1", "-t", "1",
                              "-c", "echo ok")
    most, out, err = most_ssh_children(process)
    assert process.returncode == 255, err
    assert most == 1
    assert out.splitlines()[1] == "host[1-2] (2)" and out.splitlines()[-1] == "ok", out
    failures = [line for line in err.splitlines() if line.startswith("silent")]
    assert len(failures) == 1 and failures[0].startswith("silent[1-2] (2): host unreachable"), err


def test_ctrl_c_leaves_the_hosts_whose_turn_had_not_come_unreached_and_says_so(
    sshd: SshServer, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-3]", "-f", "1", "-c",
                              f"echo $MPISH_RANK >> {marker}; sleep 30")
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the first host's command did not start"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert marker.read_text().split() == ["1"]  # host2 and host3 never ran it
    assert "host[2-3] (2): not run: interrupted before its turn (-f)" in err, err
    assert process.returncode == 130, err  # a Ctrl-C, as clush says it (was 255: the hosts not run)


@pytest.fixture
def stuck_config(sshd: SshServer, tmp_path: Path) -> Iterator[Path]:
    """An ssh_config with the test hosts and ``hang*``: hosts whose login never runs Python
    (their key's forced command sleeps), so they never greet."""
    key = tmp_path / "stuck_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with sshd.authorized_keys.open("a") as keys:  # a key of its own, whose login only sleeps
        keys.write(f'command="sleep 300.25" {key.with_suffix(".pub").read_text()}')
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {sshd.ssh_options[1]}\n\nHost hang*\n  HostName 127.0.0.1\n"
                      f"  Port {sshd.port}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                      "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    try:
        yield config
    finally:  # the forced command outlives its connection (no terminal, no SIGHUP), as any would
        subprocess.run(["pkill", "-f", "^sleep 300.25$"], check=False)


def test_a_host_without_a_hello_by_its_deadline_in_its_turn_is_given_up_and_frees_its_place(
    stuck_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host reached in its turn whose remote side never greets is given up at ssh's
    ConnectTimeout plus the slack for Python's start, as at the start of a session, and the
    next host runs in its place."""
    from mpish.shell import ssh_cli, ssh_session
    from mpish.shell.nodes import Selection

    monkeypatch.setattr(ssh_session, "HELLO_TIMEOUT_SLACK", 3.0)  # 30 s by default
    options = ssh_cli.SshShellOptions(selection=Selection(nodes=("hang1,host[1-2]",)), command="echo ok",
                                      fanout=1, connect_timeout=5.0, ssh_options=("-F", str(stuck_config)),
                                      python=(sys.executable,), nostdin=True)
    out, err = io.BytesIO(), io.BytesIO()
    started = time.monotonic()
    assert ssh_cli.run_command(options, out, err) == 255
    assert time.monotonic() - started < 60  # the deadline (5 + 3 s), not the forced command's 300 s
    assert out.getvalue().decode().splitlines()[1:] == ["host[1-2] (2)", "-" * 15, "ok"], err.getvalue()
    assert f"hang1: {ssh_session.NO_HELLO}" in err.getvalue().decode()


def test_u_gives_up_a_host_whose_login_has_not_ended_at_the_timeout_not_10_s_later(
        stuck_config: Path) -> None:
    """helper-144: `-u 3` with a host whose login hangs took 13.4 s ("no answer 10 s after its
    3 s timeout ... a frozen host?"; clush: 3.1 s, "command timeout"): no server ran there to
    answer, so the grace a silent server gets does not apply."""
    from mpish.shell import ssh_cli
    from mpish.shell.nodes import Selection

    options = ssh_cli.SshShellOptions(selection=Selection(nodes=("hang1,host1",)), command="echo ok",
                                      ssh_options=("-F", str(stuck_config)), python=(sys.executable,),
                                      nostdin=True, timeout=2.0)
    out, err = io.BytesIO(), io.BytesIO()
    assert ssh_cli.run_command(options, out, err) == 255
    assert out.getvalue().decode().splitlines()[1:] == ["host1 (1)", "-" * 15, "ok"], err.getvalue()
    said = err.getvalue().decode()
    assert "hang1: timed out after 2 s while logging in (its login had not ended: no mpish had started " \
           "there); given up" in said, said
    assert "no answer" not in said, said


@pytest.mark.parametrize("fanout", [["-f", "3"], []], ids=["more_hosts_than_f", "hosts_within_f"])
def test_a_ctrl_c_while_a_host_of_the_first_wave_never_greets_keeps_the_others_results(
    stuck_config: Path, tmp_path: Path, fanout: list[str]
) -> None:
    """The first -f hosts were connected as a barrier (every Hello awaited before any result): a
    host whose login hung held the others' results back, and a Ctrl-C then lost them all ("mpish:
    interrupted", a clush user). Every host now joins in its turn; the others' results stand,
    also when every host is in the first wave (5 hosts, the default -f 64: still a barrier
    until the Hellos of a -c with hosts within -f were left to the console as well)."""
    marker = tmp_path / "ran"
    # hang1 comes first in the node set: it is in the first wave (-f 3) with host1 and host2
    process = start_mpish_ssh(f"-F{stuck_config}", "hang1,host[1-4]", *fanout, "-c",
                              f"echo did-it; echo $MPISH_RANK >> {marker}")
    deadline = time.monotonic() + 30
    while (not marker.exists() or len(marker.read_text().split()) < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # their results are read
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert "host[1-4] (4)" in out and "did-it" in out, (out, err)
    assert "hang1" in err, err
    assert process.returncode == 130, err  # a Ctrl-C, as clush says it (255 before: hang1's failure)


def test_copy_and_rcopy_keep_at_most_f_connections_open(sshd: SshServer, tmp_path: Path) -> None:
    """--copy/--rcopy to more hosts than -f: a batch of -f hosts at a time is connected, gets
    every source, and is hung up before the next (they kept every host connected)."""
    data, tree = tmp_path / "data.bin", tmp_path / "d"
    data.write_bytes(os.urandom(200_000))
    tree.mkdir()
    (tree / "f").write_text("in a tree\n")
    remote, back = tmp_path / "remote", tmp_path / "back"
    remote.mkdir()
    back.mkdir()
    options = " ".join(sshd.ssh_options)
    process = start_mpish_ssh(options, "host[1-5]", "-f", "2", "--copy", str(data), str(tree),
                              "--dest", str(remote))
    most, out, err = most_ssh_children(process)
    assert process.returncode == 0, err
    assert most == 2
    assert f"mpish: put {data} to host[1-5]: ok" in out and f"mpish: put {tree} to host[1-5]: ok" in out, out
    assert (remote / "data.bin").read_bytes() == data.read_bytes()
    process = start_mpish_ssh(options, "host[1-5]", "-f", "2", "--rcopy", str(remote / "data.bin"),
                              "--dest", str(back))
    most, out, err = most_ssh_children(process)
    assert process.returncode == 0, err
    assert most == 2
    assert out.count(f"mpish: get {remote}/data.bin from host[1-5]: ok") == 1, out
    assert all((back / f"data.bin.host{i}").read_bytes() == data.read_bytes() for i in range(1, 6))


@pytest.mark.parametrize("fanout", ["2", "8"])  # 8: every host within -f (clush's default case)
def test_copy_f_is_a_sliding_window_a_host_whose_login_hangs_holds_one_place_not_its_batch(
    sshd: SshServer, silent_port: int, tmp_path: Path, fanout: str
) -> None:
    """--copy/--rcopy over ssh went in fixed batches of -f, each waiting for its slowest login:
    with -f 2, host1 shared a batch with a host that never answers, and host2..4 waited for its
    connect timeout (40 hosts, 9 silent, -f 8: 16 s where clush took 7 s). Now the silent host
    holds one place while the others are copied through the other; a Ctrl-C then ends the copy
    (130), the silent host named as given up. Within -f, every login was awaited before any
    copy, and a Ctrl-C waited for the connect timeout, then said only "interrupted"."""
    config = tmp_path / "ssh_config"  # alpha1 comes first in node set order: rank 1
    config.write_text(f"Include {sshd.ssh_options[1]}\n\nHost alpha1\n  HostName 127.0.0.1\n"
                      f"  Port {silent_port}\n  LogLevel ERROR\n  StrictHostKeyChecking no\n"
                      "  UserKnownHostsFile /dev/null\n")
    data, into = tmp_path / "data.txt", tmp_path / "into"
    data.write_text("copied\n")
    into.mkdir()
    copies = [into / f"data.txt.host{i}" for i in range(1, 5)]  # --rcopy: NAME.<host>, once verified
    process = start_mpish_ssh(f"-F{config}", "alpha1,host[1-4]", "-f", fanout, "-t", "120", "--rcopy",
                              str(data), "--dest", str(into))
    try:  # every host's copy lands while alpha1's login still hangs (-t 120: it cannot have failed)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and not all(c.exists() for c in copies):
            time.sleep(0.02)
        assert process.poll() is None, process.communicate(timeout=10)
        assert all(c.exists() for c in copies), f"copied while alpha1 hung: {sorted(into.iterdir())}"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 130, err
    assert f"mpish: get {data} from host[1-4]: ok" in out, (out, err)
    assert f"mpish: get {data} from alpha1: interrupted while connecting" in err, err
    assert all(c.read_text() == "copied\n" for c in copies)


def test_a_copy_to_hosts_logging_in_together_goes_to_all_of_them_at_once(
        sshd: SshServer, tmp_path: Path) -> None:
    """A clush user's trial: of 4 alike hosts, the first to greet got the whole 1 GiB alone and
    the 3 others only after it (a group started with the first greeting; the ones greeting
    during its transfer wait for its end). Now greeted hosts wait (up to 1 s) for those that
    began to log in before them: here the 4 part files are written at the same time."""
    data, into = tmp_path / "data.bin", tmp_path / "into"
    with data.open("wb") as out:
        out.truncate(64 << 20)  # sparse: cheap to make, 64 MiB to send to each host
    into.mkdir()
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-4]", "--copy", str(data),
                              "--dest", str(into))
    most = 0
    try:
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            most = max(most, len(list(into.glob(".data.bin.*.mpish-part"))))
            time.sleep(0.005)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert f"mpish: put {data} to host[1-4]: ok" in out, out
    assert most == 4, f"at most {most} of the 4 hosts' copies were being written at once"


def signal_mid_copy(process: subprocess.Popen[str], into: Path, signum: int) -> tuple[str, str]:
    """Send ``signum`` to a copy once its first part file is in ``into``; its (stdout, stderr)."""
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and not list(into.glob(".*.mpish-part")):
            time.sleep(0.01)
        assert process.poll() is None, process.communicate(timeout=10)
        process.send_signal(signum)
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_a_sigint_during_a_copy_ends_it_there_with_130_not_only_the_file_being_sent(
    sshd: SshServer, tmp_path: Path
) -> None:
    """SIGINT (no terminal: kill -INT, a script's timeout) during --copy aborted the file being
    sent and the copy went on to the next hosts, ending with 1 (the interrupt was taken by the
    transfer); a Ctrl-C typed at a terminal did end it. Now both end it (130, as cp)."""
    big, into = tmp_path / "big.bin", tmp_path / "into"
    with big.open("wb") as f:
        f.truncate(400 * 2**20)  # long enough to be interrupted in the middle
    into.mkdir()
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-4]", "-f", "1", "--copy", str(big),
                              "--dest", str(into))
    out, err = signal_mid_copy(process, into, signal.SIGINT)  # host1's copy is under way
    assert process.returncode == 130, (out, err)
    assert f"mpish: interrupted: {big} was not sent to host[2-4]" in err, err
    assert not (into / "big.bin").exists() or f"put {big} to host1: ok" in out  # (unless host1 just made it)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_sigterm_or_sighup_during_an_rcopy_ends_it_as_a_ctrl_c_does_and_leaves_no_part_file(
    sshd: SshServer, tmp_path: Path, signum: int
) -> None:
    """`kill -TERM` during --rcopy: mpish died of the signal and left the copy being received
    as its hidden part file (.big.bin.node1.<hex>.mpish-part, 82 MB in a clush user's trial),
    where a Ctrl-C removes it. Now SIGTERM and SIGHUP end the copy as a Ctrl-C does: what was
    not got is named, no part file stays, and the status is 128+N."""
    big, into = tmp_path / "big.bin", tmp_path / "into"
    with big.open("wb") as f:
        f.truncate(400 * 2**20)  # long enough to be interrupted in the middle
    into.mkdir()
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-2]", "--rcopy", str(big),
                              "--dest", str(into))
    out, err = signal_mid_copy(process, into, signum)  # the copies are under way
    assert process.returncode == 128 + signum, (out, err)
    assert not list(into.glob(".*.mpish-part")), sorted(into.iterdir())
    assert f"mpish: get {big} from host" in err, err  # each copy's outcome, as after a Ctrl-C


def test_nohup_jobs_started_by_a_command_outlive_its_hosts_hang_up(sshd: SshServer) -> None:
    """Each host is hung up as soon as its command is done under -f: a ``nohup`` job the command
    had just started could get the session's SIGHUP before nohup ignored it (7 of 32 died under
    load, a clush user); it now has JOB_SETTLE to get there, and lives on as after ssh."""
    word = f"6{os.getpid() % 1000}.125"
    # the job reaches nohup a moment after the command's end (a wrapper that prepares first)
    command = f"{{ sleep 0.1; exec nohup sleep {word}$MPISH_RANK >/dev/null 2>&1; }} & echo ok"
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host[1-4]", "-f", "1", "-c", command)
    _, _, err = most_ssh_children(process)
    try:
        assert process.returncode == 0, err
        time.sleep(0.5)
        alive = subprocess.run(["pgrep", "-f", f"^sleep {word}[1-4]$"], capture_output=True, text=True,
                               check=False).stdout.split()
        assert len(alive) == 4, alive
    finally:
        subprocess.run(["pkill", "-f", f"^sleep {word}[1-4]$"], check=False)


def test_a_job_whose_output_went_elsewhere_outlives_the_command_as_over_ssh_and_clush(
    sshd: SshServer, tmp_path: Path
) -> None:
    """`-c 'server > log 2>&1 < /dev/null &'` starts a service with ssh and clush (no terminal:
    nothing hangs it up); mpish's hang-up killed it (a clush user's review). A job that still
    writes to the session's output (`sleep &`) is hung up at the end, as before."""
    word = f"7{os.getpid() % 1000}.25"
    command = (f"sleep {word}1 >/dev/null 2>&1 </dev/null & echo $! > {tmp_path}/detached; "
               f"sleep {word}2 & echo $! > {tmp_path}/attached; echo launched")
    process = start_mpish_ssh(" ".join(sshd.ssh_options), "host1", "-c", command)
    try:
        out, err = process.communicate(timeout=60)
        assert (process.returncode, out) == (0, "launched\n"), err
        detached, attached = (int((tmp_path / name).read_text()) for name in ("detached", "attached"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.path.exists(f"/proc/{attached}"):
            time.sleep(0.05)
        assert not os.path.exists(f"/proc/{attached}")  # hung up with the session
        assert Path(f"/proc/{detached}/cmdline").read_bytes().startswith(b"sleep\0")  # lives on
    finally:
        subprocess.run(["pkill", "-f", f"^sleep {word}[12]$"], check=False)
