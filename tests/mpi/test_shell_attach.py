"""The pty mode (:attach), escape-sequence filtering and Tab completion, through a real pty."""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path

import pexpect
import pytest

from shell_util import MPISH, make_home, run, shell_env
from terminal import Person

pytestmark = [pytest.mark.mpi, pytest.mark.console]

RAW_KEYS = Path(__file__).with_name("raw_keys.py")


def _leave(person: Person) -> None:
    """End the session with exit (a console killed by the fixture leaves its singleton mpiexec)."""
    person.type("exit")
    person.child.expect(pexpect.EOF)


def test_attach_gives_a_program_the_terminal_keys_window_size_and_exit_status(
    person: Person, tmp_path: Path
) -> None:
    person.prompt()
    person.run(f"cd {tmp_path} && export MARK=from-the-rank", cwd=str(tmp_path))
    screen = io.StringIO()
    person.child.logfile_read = screen
    person.type(f":attach @1 {sys.executable} {RAW_KEYS}")
    person.child.expect(f"tty=True term=xterm cwd={tmp_path} mark=from-the-rank")
    person.child.expect("size=50x250")  # the console's window
    person.child.send("a")
    person.child.expect("key=61")
    person.child.sendcontrol("c")  # raw on both ends: a key for the program, not a signal
    person.child.expect("key=03")
    person.child.send("\x1b[A")  # an arrow key, byte by byte
    person.child.expect("key=1b\r\nkey=5b\r\nkey=41")
    person.child.setwinsize(30, 100)  # SIGWINCH -> PtyResize -> TIOCSWINSZ -> SIGWINCH
    person.child.expect("size=30x100")
    person.child.send("q")
    after = person.prompt()
    assert "mpish: @1: exit code 3" in after, after
    # the program's own escape sequences reached the terminal unchanged
    assert "\x1b[1;24r" in screen.getvalue()
    shown = person.run("echo back-$MPISH_RANK", cwd=str(tmp_path))
    assert "back-1\r\n" in shown and "back-2\r\n" in shown, shown
    _leave(person)


def test_attach_escape_hangs_up_a_program_that_does_not_end_and_kills_one_that_ignores_sighup(
    person: Person, tmp_path: Path,
) -> None:
    person.prompt()
    person.type(":attach 2 sleep 300")  # a bare rank, as the help's [[@]TARGET] (it said "ONE target")
    time.sleep(1)
    person.child.send("\r~?")
    person.child.expect("~. +hang up")
    person.child.send("~.")
    screen = person.prompt()
    assert "mpish: @2: hung up: SIGHUP sent; killed by SIGHUP" in screen, screen
    shown = person.run("@2 echo still-here")
    assert "still-here" in shown
    # the user trial's program ignores SIGHUP: it was said "killed by SIGHUP" and ran on
    pid = tmp_path / "pid"
    program = f"trap '' INT TERM HUP; echo \\$\\$ > {pid}; while :; do sleep 1; done"
    person.type(f':attach @1 bash -c "{program}"')
    time.sleep(1)
    person.child.send("\r~.")
    screen = person.prompt()
    said = "mpish: @1: hung up: SIGHUP sent; still running a second later: killed by SIGKILL"
    assert said in screen, screen
    state = f"$(cut -d' ' -f3 /proc/$(cat {pid})/stat 2>/dev/null)"  # a zombie no one reaps is gone too
    shown = person.run(f'@1 case "{state}" in ""|Z) echo gone;; *) echo alive;; esac')
    assert "gone" in shown, shown
    _leave(person)


def test_attach_without_a_command_is_the_users_shell_and_needs_one_target(
    person: Person, tmp_path: Path
) -> None:
    person.prompt()
    screen = person.run(":attach")
    assert ":attach runs a program on ONE target" in screen, screen
    # the rank's HOME and SHELL: an interactive bash reading this .bashrc (not the tester's)
    (tmp_path / ".bashrc").write_text("PS1='rank-shell\\$ '\n")
    person.run(f"export HOME={tmp_path} SHELL=$BASH")
    person.type(":attach @1")
    person.child.expect("rank-shell")
    person.child.sendline("echo in-a-tty-$(tty | cut -c1-8)")
    person.child.expect("in-a-tty-/dev/pts")
    person.child.sendline("exit 4")
    screen = person.prompt()
    assert "mpish: @1: exit code 4" in screen, screen
    _leave(person)


# what vim and friends print: scroll region, clear, home, window title, alternate screen;
# the text is spelled with octal escapes so that the typed line does not match the output
SCREEN_GRAB = r"printf '\033[1;24r\033[2J\033[H\033]0;grabbed\007\033[?1049h\033[31mr\145d\033[0m-\157k\n'"
TAKEN = ("\x1b[1;24r", "\x1b[2J", "\x1b]0;grabbed", "\x1b[?1049h")


def _output_of(person: Person, line: str) -> str:
    """What the screen got from ``line`` up to the next prompt, escape sequences included."""
    person.child.sendline(line)
    person.child.expect("\r\n")
    person.child.expect("#>")
    time.sleep(0.2)
    return person.child.before or ""


def test_remote_output_cannot_take_over_the_consoles_screen_unless_raw(person: Person) -> None:
    person.prompt()
    for line in (SCREEN_GRAB, f"@1 {SCREEN_GRAB}"):  # grouped, and one target streamed
        screen = _output_of(person, line)
        assert "\x1b[31mred\x1b[0m-ok" in screen, screen  # colours are kept
        assert not [taken for taken in TAKEN if taken in screen], screen
    person.run(":mode live")
    screen = _output_of(person, SCREEN_GRAB)
    assert "red" in screen and not [taken for taken in TAKEN if taken in screen], screen
    person.run(":raw on")
    screen = _output_of(person, SCREEN_GRAB)
    assert all(taken in screen for taken in TAKEN), screen
    _leave(person)


def test_tab_completes_built_ins_and_the_first_targets_paths(person: Person, tmp_path: Path) -> None:
    person.prompt()
    remote = tmp_path / "remote-dir"
    (remote / "unique-subdir").mkdir(parents=True)
    (remote / "unique-subdir" / "inside-file").write_text("")
    person.run(f"cd {remote}", cwd=str(remote))
    person.run("false")
    for typed in (":tim\t", "@2 ls uniq\t"):
        person.child.send(typed)
        time.sleep(1)  # the completion is shown (a remote one waits for its answer)
        screen = person.run("")
        assert "timeout: none" in screen or "inside-file" in screen, screen
    for typed in (f"echo status=$? && cat {tmp_path}/remote-d\t", "uni\t", "insi\t"):
        person.child.send(typed)  # an absolute path, completed part by part
        time.sleep(1)
    screen = person.run(" && echo cat-ok")
    # rank 1's $? is still its `false`: completing ran nothing in the shells (rank 2 ran ls)
    assert "status=1\r\ncat-ok\r\n" in screen and "status=0\r\ncat-ok\r\n" in screen, screen
    _leave(person)


def test_tab_then_enter_in_one_burst_runs_the_line_as_completed(person: Person, tmp_path: Path) -> None:
    """A user trial (helper-130): Tab and Enter arriving together (a paste, a slow link) showed
    the completed line and ran the line as typed before the Tab: ``ls: cannot access .../uniq``."""
    person.prompt()
    (tmp_path / "burst-dir" / "unique-subdir").mkdir(parents=True)
    person.child.send(f"@1 ls -d {tmp_path}/burst-dir/uniq\t\r")  # one write: Tab, then Enter
    person.child.expect("\r\n")  # the accepted line, redrawn
    screen = person.prompt()
    assert "cannot access" not in screen, screen
    assert f"{tmp_path}/burst-dir/unique-subdir/\r\n" in screen, screen
    _leave(person)


def test_ctrl_c_says_what_the_next_one_does_for_a_program_that_ignores_it(person: Person) -> None:
    person.prompt()
    person.type("@1 sh -c \"trap '' INT; sleep 30\"")  # as vim without a terminal: SIGINT ignored
    time.sleep(1)
    person.child.sendcontrol("c")
    person.child.expect(r"interrupting @1 \(SIGINT; Ctrl-C again: SIGTERM, then SIGKILL\)")
    person.child.sendcontrol("c")
    person.child.expect(r"interrupting @1 \(SIGTERM; Ctrl-C again: SIGKILL\)")
    screen = person.prompt()
    assert "killed by SIGTERM" in screen, screen
    _leave(person)


@pytest.mark.skipif(shutil.which("vim") is None, reason="vim is not installed")
def test_vim_edits_a_file_on_a_target_and_the_console_is_usable_after(person: Person, tmp_path: Path) -> None:
    person.prompt()
    person.run(f"cd {tmp_path}", cwd=str(tmp_path))
    person.type(":attach @2 vim -u NONE -N -n edited.txt")
    person.child.expect("edited.txt")
    time.sleep(0.5)
    person.child.send("ihello from vim\x1b")
    time.sleep(0.3)
    person.child.send(":wq\r")
    person.prompt(str(tmp_path))
    assert (tmp_path / "edited.txt").read_text() == "hello from vim\n"
    screen = person.run("@2 cat edited.txt", cwd=str(tmp_path))
    assert "hello from vim\r\n" in screen, screen
    _leave(person)


def test_c_with_tty_is_a_one_shot_attach_like_ssh_t_and_its_errors_read_as_there(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    env = shell_env(home, TERM="xterm")
    child = pexpect.spawn(MPISH, ["-n", "2", "-w", "@2", "--tty", "-c", f"{sys.executable} {RAW_KEYS}"],
                          env=env, cwd=str(tmp_path), timeout=30, encoding="utf-8", dimensions=(33, 111))
    try:
        child.expect("tty=True term=xterm")
        child.expect("size=33x111")
        child.send("k")
        child.expect("key=6b")
        child.send("q")
        child.expect("mpish: @2: exit code 3")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 3
    finally:
        if child.isalive():
            child.terminate(force=True)
    # bash's message about the command as under `ssh -t host CMD`: line 1 of the command, not a
    # line of mpish's launch script (it said `bash: line 6:`)
    child = pexpect.spawn(MPISH, ["-n", "2", "-w", "@2", "--tty", "-c", "true; nosuchprog-x"],
                          env=env, cwd=str(tmp_path), timeout=30, encoding="utf-8")
    try:
        child.expect(pexpect.EOF)
        child.close()
        assert "bash: line 1: nosuchprog-x: command not found" in child.before, child.before
        assert child.exitstatus == 127, child.before
    finally:
        if child.isalive():
            child.terminate(force=True)
    done = run([MPISH, "-n", "2", "--tty", "-c", "true"], home, tmp_path)
    assert done.returncode == 2 and b"--tty runs the command on ONE target, not 2" in done.stderr, done
    done = run([MPISH, "-n", "2", "-w", "@1", "--tty", "-c", "true"], home, tmp_path)
    assert done.returncode == 2 and b"--tty needs the console on a terminal" in done.stderr, done
