"""The interactive console driven through a real pseudo-terminal, as a person would type."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pexpect
import pytest

from terminal import Person

pytestmark = pytest.mark.mpi


def test_cd_and_state_persist_and_exit_is_clean(person: Person, tmp_path: Path) -> None:
    person.prompt()
    person.run("cd /usr && export GREETING=hello && f() { echo fn-$1; }", cwd="/usr")
    person.run("alias hi='echo alias-works'")
    screen = person.run("pwd; echo $GREETING; f x; hi", cwd="/usr")
    assert "@1-2 (2)" in screen  # identical outputs grouped once
    assert screen.count("/usr\r\n") == 1 and "hello" in screen and "fn-x" in screen
    assert "alias-works" in screen
    screen = person.run("@2 echo only-$MPISH_RANK")
    assert "only-2" in screen and "only-1" not in screen
    person.type("exit")
    person.child.expect(pexpect.EOF)
    person.child.close()
    assert person.child.exitstatus == 0


def test_ctrl_c_interrupts_every_target_and_session_goes_on(person: Person) -> None:
    person.prompt()
    person.run(":mode live")
    person.type("echo started-$MPISH_RANK; sleep 60; echo not-reached")
    person.child.expect(["started-1", "started-2"])
    person.child.expect(["started-1", "started-2"])
    time.sleep(0.3)
    person.child.sendcontrol("c")
    screen = person.prompt()
    assert "killed by SIGINT" in screen and "@1-2" in screen and "not-reached" not in screen
    assert "restarted" not in screen  # SIGINT was enough: the shell and its state go on
    screen = person.run("echo still-alive-$MPISH_RANK")
    assert "still-alive-1" in screen and "still-alive-2" in screen
    person.child.sendcontrol("d")
    person.child.expect(pexpect.EOF)
    person.child.close()
    assert person.child.exitstatus == 0


def test_timeout_setting_and_garbage_output(person: Person) -> None:
    person.prompt()
    person.run("cd /usr", cwd="/usr")
    person.run(":timeout 1")
    screen = person.run("sleep 30")
    assert "command timeout" in screen
    screen = person.run("cd /; while :; do :; done", cwd="/")  # a loop inside bash: SIGINT stops it
    assert "command timeout" in screen
    screen = person.run("pwd", cwd="/")  # ... and what ran before it in the line is kept
    assert "/\r\n" in screen
    screen = person.run(":timeout 0")
    # random bytes without '#', which could form the '#>' the prompt is recognised by
    screen = person.run("head -c 3000 /dev/urandom | tr -d '#'; echo; echo survived")
    assert "survived" in screen
    person.type(":quit")
    person.child.expect(pexpect.EOF)
    person.child.close()
    assert person.child.exitstatus == 0


def test_put_and_get_verify_checksums(person: Person, tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    remote = tmp_path / "remote"
    remote.mkdir()
    person.prompt()
    person.run(f"cd {remote}")
    screen = person.run(f":put {source} copy.bin")
    assert "put @1-2: ok, SHA-256 verified" in screen
    assert (remote / "copy.bin").read_bytes() == data
    person.run("@1 cp copy.bin rank1.bin")
    screen = person.run(":targets @1")
    screen = person.run(f":get rank1.bin {tmp_path / 'back.bin'}")
    assert "get @1: ok, SHA-256 verified" in screen
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
    screen = person.run(":get does-not-exist")
    assert "cannot read" in screen
    person.type("exit")
    person.child.expect(pexpect.EOF)


def test_idle_server_uses_almost_no_cpu(person: Person) -> None:
    """Over ~3 s at the prompt a server stays far below one core (a sanity bound for busy CI)."""
    person.prompt()
    screen = person.run("@1 echo server-pid=$PPID")
    pid = int(re.search(r"server-pid=(\d+)", screen).group(1))  # type: ignore[union-attr]

    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    before, started = cpu_ticks(), time.monotonic()
    time.sleep(3)
    used = (cpu_ticks() - before) / os.sysconf("SC_CLK_TCK")
    assert used / (time.monotonic() - started) < 0.10, used
    person.type("exit")
    person.child.expect(pexpect.EOF)
