"""``mpish ssh``'s console: :attach, the screen filter and Tab completion over ssh pipes."""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import pexpect
from ssh_util import SRC, mpish_ssh
from sshd_server import SshServer

from terminal import Person

RAW_KEYS = Path(__file__).parents[1] / "mpi" / "raw_keys.py"


def test_attach_over_ssh_gives_keys_window_size_and_exit_status(person: Person, tmp_path: Path) -> None:
    person.prompt()
    person.run(f"cd {tmp_path} && export MARK=over-ssh", f"{tmp_path}")
    person.child.sendline(f":attach @host2 {sys.executable} {RAW_KEYS}")
    person.child.expect(f"tty=True term=xterm cwd={tmp_path} mark=over-ssh")
    person.child.expect("size=50x250")
    person.child.send("z")
    person.child.expect("key=7a")
    person.child.sendcontrol("z")
    person.child.expect("key=1a")
    person.child.setwinsize(40, 90)
    person.child.expect("size=40x90")
    person.child.send("q")
    screen = person.prompt()
    assert "mpish: host2: exit code 3" in screen, screen
    person.child.setwinsize(50, 250)  # the prompt on one line again
    person.child.sendline(":attach @host1 sleep 300")
    person.child.expect("\r\n")
    time.sleep(1)
    person.child.send("\r~.")
    screen = person.prompt()
    assert "mpish: host1: hung up: SIGHUP sent; killed by SIGHUP" in screen, screen


def test_escape_sequences_filtered_and_paths_completed_over_ssh(person: Person, tmp_path: Path) -> None:
    person.prompt()
    (tmp_path / "over-ssh-dir").mkdir()
    (tmp_path / "over-ssh-dir" / "the-file").write_text("")
    person.run(f"cd {tmp_path}", f"{tmp_path}")
    grab = r"printf '\033[2J\033[1;24r\033]0;t\007\033[31mr\145d\033[0m\n'"
    for line in (grab, f"@host1 {grab}"):  # grouped, and one host streamed
        screen = io.StringIO()
        person.child.logfile_read = screen
        person.child.sendline(line)
        person.child.expect("\r\n")
        person.prompt()
        person.child.logfile_read = None
        grabbed = screen.getvalue()
        assert "\x1b[31mred\x1b[0m" in grabbed, grabbed
        assert "\x1b[2J" not in grabbed and "\x1b[1;24r" not in grabbed and "\x1b]0;t" not in grabbed
    person.child.send("ls over-ss\t")
    time.sleep(1)
    screen = person.run("")
    assert screen.count("the-file") == 1, screen  # grouped: both hosts listed the directory
    (tmp_path / "with space.txt").write_text("spaced-content\n")  # inside quotes (helper-141: nothing)
    person.child.send('cat "with sp\t')
    time.sleep(1)
    screen = person.run("")
    assert screen.count("spaced-content") == 1 and "No such file" not in screen, screen


def test_ssh_c_with_tty_runs_the_command_in_a_terminal_like_ssh_t(sshd: SshServer, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1", TERM="xterm")
    argv = ["-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python", sys.executable,
            "host3", "--tty", "-c", f"{sys.executable} {RAW_KEYS}"]
    child = pexpect.spawn(sys.executable, argv, env=env, cwd=str(tmp_path), timeout=30,
                          encoding="utf-8", dimensions=(33, 111))
    try:
        child.expect("tty=True term=xterm")
        child.expect("size=33x111")
        child.send("q")
        child.expect("mpish: host3: exit code 3")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 3
    finally:
        if child.isalive():
            child.terminate(force=True)
    done = mpish_ssh(sshd, "host[1-2]", "--tty", "-c", "true")
    assert done.returncode == 2 and "--tty runs the command on ONE host, not 2" in done.stderr, done


def test_attach_takes_a_host_name_without_its_at(person: Person) -> None:
    person.prompt()
    person.child.sendline(":attach host2 sh -c 'echo on-$MPISH_RANK; exit 4'")
    person.child.expect("on-2")
    screen = person.prompt()
    assert "mpish: host2: exit code 4" in screen, screen
