"""``mpish ssh -c`` interrupted: the hosts are named as the console names them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
from ssh_util import SRC
from sshd_server import SshServer

from terminal import at_terminal


def _await_running(command: str, count: int) -> None:
    """Until ``count`` processes run ``command`` (the hosts' commands have started), at most 60 s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-fx", command], capture_output=True, text=True, check=False)
        if len(found.stdout.split()) == count:
            return
        time.sleep(0.2)


def test_sigint_during_c_names_the_hosts_being_interrupted(sshd: SshServer) -> None:
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python",
            sys.executable, "host[1-2]", "-c", "echo started; sleep 100.25"]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          stdin=subprocess.DEVNULL) as child:
        assert child.stdout is not None
        _await_running("sleep 100.25", 2)  # grouped: nothing shows before the end
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    assert "mpish: interrupting host[1-2] " in err, err
    assert "@1-2" not in err, err
    assert child.returncode == 130, err


def test_stdout_closed_by_head_ends_the_command_quietly_with_the_sigpipe_status(sshd: SshServer) -> None:
    ssh = f'"{sys.executable}" -m mpish ssh -o "{" ".join(sshd.ssh_options)}" --python "{sys.executable}"'
    script = f'{ssh} host1 -c "yes flood-ssh-{os.getpid()}" | head -2; echo "status=${{PIPESTATUS[0]}}"'
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120,
                          check=False)
    assert done.stdout == f"flood-ssh-{os.getpid()}\n" * 2 + "status=141\n", (done.stdout[-500:], done.stderr)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    leftover = subprocess.run(["pgrep", "-f", f"yes flood-ssh-{os.getpid()}"], capture_output=True, text=True,
                              check=False).stdout
    assert not leftover, leftover


def test_a_full_or_closed_stdout_gives_one_line_or_nothing_never_a_traceback(sshd: SshServer) -> None:
    """``> /dev/full`` ended in OSError (No space left on device) and ``>&-`` in AttributeError,
    each with a traceback: now one line and status 1, as cat's write error; and, for a closed
    stdout, the output dropped as ``ssh host CMD >&-`` drops it."""
    ssh = f'"{sys.executable}" -m mpish ssh -o "{" ".join(sshd.ssh_options)}" --python "{sys.executable}"'
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    full = subprocess.run(["bash", "-c", f"{ssh} 'host[1-2]' -c 'echo hi' > /dev/full"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert full.returncode == 1, full.stderr
    assert full.stderr == "mpish ssh: cannot write the output: No space left on device\n"
    closed = subprocess.run(["bash", "-c", f"{ssh} host1 -c 'echo hi; echo err >&2; exit 3' >&-"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert closed.returncode == 3, closed.stderr
    assert "Traceback" not in closed.stderr and "err" in closed.stderr, closed.stderr


def test_ctrl_c_while_the_console_connects_gives_up_the_host_still_connecting_and_opens_with_the_others(
    sshd: SshServer, silent_config: Path, tmp_path: Path
) -> None:
    """At a terminal, `mpish ssh 'silent,node[1-2]'` and Ctrl-C while silent's login hangs: the
    key did nothing until ssh's connect timeout, then ended the whole session (a clush user's
    review). Now silent is given up at once (and named), and the console opens on the others.
    Before that the screen said which host it waited for (it was blank: helper-138)."""
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1", TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    argv = ["-m", "mpish", "ssh", "-o", f"-F {silent_config}", "-t", "120", "--python", sys.executable,
            "silent1,host[1-2]"]
    with at_terminal(sys.executable, argv, env, str(tmp_path)) as person:
        time.sleep(5)  # host1 and host2 have greeted; silent1's login hangs for 120 s
        person.child.expect(r"still connecting to silent1 \(Ctrl-C goes on without them\)", timeout=20)
        person.child.sendcontrol("c")
        person.child.expect("silent1: interrupted while connecting", timeout=20)
        person.prompt()
        shown = person.run("echo hi there")
        assert "host[1-2] (2)" in shown and "hi there" in shown, shown
        person.type("exit")
        person.child.expect(pexpect.EOF, timeout=30)


def test_sigterm_during_c_interrupts_the_command_shows_what_was_gathered_and_exits_143(
    sshd: SshServer,
) -> None:
    """`timeout 60 mpish ssh HOSTS -c ...`: mpish died of the SIGTERM (status -15, nothing
    printed, a clush user's review); now it interrupts the command as a Ctrl-C does."""
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python",
            sys.executable, "host[1-2]", "-c", "echo started; sleep 100.75"]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          stdin=subprocess.DEVNULL) as child:
        _await_running("sleep 100.75", 2)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    assert child.returncode == 143, err
    assert "started" in out, (out, err)
    assert "mpish got SIGTERM" in err and "Ctrl-C again" not in err, err  # no Ctrl-C was typed (helper-111)


def test_ctrl_c_while_a_host_connects_ends_the_proxy_command_its_ssh_started_too(
    sshd: SshServer, tmp_path: Path
) -> None:
    """A host behind `ProxyCommand sleep 1000` and a Ctrl-C while it connects: it was given up
    ("interrupted while connecting") but the sleep ran on, reparented to init (a clush user's
    finding): ssh, terminated while it connects, dies without ending its ProxyCommand. Now the
    signal goes to ssh's process group (its own session): ssh and what it started end, under
    -c and at the console's start alike."""
    proxy = f"sleep 1000.{os.getpid()}"
    config = tmp_path / "ssh_config"
    config.write_text(f"Include {sshd.ssh_options[1]}\n\nHost hang1\n  ProxyCommand {proxy}\n")
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", f"-F {config}", "-t", "120", "--python",
            sys.executable, "host1,hang1"]  # -t 120: ssh does not give up (and end its proxy) by itself
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    try:
        for args, running in ((["-c", f"sleep 30.{os.getpid()}"], f"sleep 30.{os.getpid()}"), ([], proxy)):
            with subprocess.Popen([*argv, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) as child:
                _await_running(proxy, 1)
                _await_running(running, 1)  # -c: host1's command runs
                time.sleep(2)  # the console's start: host1 has greeted
                child.send_signal(signal.SIGINT)
                out, err = child.communicate(input="echo console-$MPISH_RANK\n", timeout=60)
            assert "hang1: interrupted while connecting" in err, (args, out, err)
            assert args or "console-2" in out, (out, err)  # the console opened with host1 (rank 2)
            deadline = time.monotonic() + 5
            while _running(proxy) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _running(proxy), f"{args}: the ProxyCommand outlived mpish ({err})"
    finally:
        subprocess.run(["pkill", "-fx", proxy], check=False)


def _running(command: str) -> list[str]:
    found = subprocess.run(["pgrep", "-fx", command], capture_output=True, text=True, check=False)
    return found.stdout.split()
