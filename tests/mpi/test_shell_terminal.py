"""The console as a terminal user expects it (issue: the shell as clush and ssh users expect it)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pexpect
import pytest

from terminal import ANSI, Person

pytestmark = [pytest.mark.mpi, pytest.mark.console]


def test_output_without_a_final_newline_is_shown_and_its_line_ended(person: Person) -> None:
    person.prompt()
    screen = person.run("printf nonl-$MPISH_RANK")  # grouped: one group per rank
    assert "nonl-1\r\n" in screen and "nonl-2\r\n" in screen, screen
    screen = person.run("@1 printf 'a\\nb'")  # one target: streamed raw, then the line ended
    assert "a\r\nb\r\n" in screen, screen
    screen = person.run("printf same; printf err >&2")
    assert "same\r\n" in screen and "err\r\n" in screen, screen


def test_dollar_question_mark_is_the_previous_commands_status(person: Person) -> None:
    person.prompt()
    person.run("false")
    screen = person.run("echo status=$?")
    assert "status=1\r\n" in screen, screen
    person.run("(exit 7)")
    screen = person.run("echo status=$?; echo again=$?")
    assert "status=7\r\n" in screen and "again=0\r\n" in screen, screen


def test_bash_errors_read_as_interactive_and_group_across_ranks(person: Person) -> None:
    person.prompt()
    person.run("@1 true")  # rank 1's bash has now read more lines than rank 2's
    person.run("@1 true")
    screen = person.run("nosuchcmd")
    assert screen.count("@1-2: bash: nosuchcmd: command not found\r\n") == 1, screen  # grouped, labelled
    assert "line " not in screen and "/bash" not in screen, screen


def test_ctrl_c_interrupts_the_foreground_command_and_keeps_what_ran_before_it(person: Person) -> None:
    person.prompt()
    person.run(":mode live")
    person.type("export X=1; cd /; echo started-$MPISH_RANK; sleep 30; echo not-reached")
    person.child.expect(["started-1", "started-2"])
    person.child.expect(["started-1", "started-2"])
    person.child.sendcontrol("c")
    screen = person.prompt("/")
    assert "killed by SIGINT" in screen and "not-reached" not in screen and "restarted" not in screen
    screen = person.run("echo X=$X; pwd; echo status=$?", cwd="/")
    assert screen.count("X=1\r\n") == 2 and screen.count(": /\r\n") == 2, screen


def test_a_command_ignoring_sigint_is_ended_by_the_second_ctrl_c_and_the_restart_is_said(
    person: Person,
) -> None:
    person.prompt()
    person.run(":mode live")
    person.run("export KEPT=yes")
    person.type("echo started-$MPISH_RANK; sh -c \"trap '' INT; sleep 30\"; echo not-reached")
    person.child.expect(["started-1", "started-2"])
    person.child.expect(["started-1", "started-2"])
    person.child.sendcontrol("c")
    person.child.expect("interrupting")
    person.child.sendcontrol("c")
    screen = person.prompt()
    assert "killed by SIGTERM (the command ignored SIGINT: the shell was restarted" in screen, screen
    assert "not-reached" not in screen
    screen = person.run("echo KEPT=$KEPT")
    assert screen.count("KEPT=yes\r\n") == 2, screen


def test_lines_typed_while_a_command_runs_are_kept_and_run_in_order(person: Person) -> None:
    person.prompt()
    screen = io.StringIO()
    person.child.logfile_read = screen
    person.type("sleep 1; echo first")
    person.child.send("echo second\r")  # typed while the first command runs
    person.child.send("echo third\r")
    person.child.expect("-\r\nthird\r\n")
    outputs = re.findall(r"-\r\n(first|second|third)\r\n", ANSI.sub("", screen.getvalue()))
    assert outputs == ["first", "second", "third"], screen.getvalue()


def test_a_pasted_block_is_read_to_its_end_as_bash_does_and_its_guarded_line_does_not_run(
        person: Person, tmp_path: Path) -> None:
    """A pasted if-block ran line by line: a syntax error, then the guarded rmdir ran, then
    another syntax error; a here-document's body ran as commands."""
    keep = tmp_path / "keepme"
    keep.mkdir()
    person.prompt()
    screen = io.StringIO()
    person.child.logfile_read = screen
    person.child.send(f"if [ -e /nonexistent ]; then\r  rmdir {keep}\rfi\recho after-$?\r")  # one paste
    person.child.expect("-\r\nafter-0\r\n")
    person.prompt()
    person.child.send("cat <<EOF\r  indented\rrmdir " + str(keep) + "\rEOF\r")
    person.child.expect(f"-\r\n  indented\r\nrmdir {keep}\r\n")
    person.prompt()
    shown = ANSI.sub("", screen.getvalue())
    assert keep.is_dir(), shown
    assert "syntax error" not in shown, shown
    assert "\r\n> " in shown, shown  # bash's continuation prompt, PS2


def test_typed_ahead_lines_are_dropped_by_ctrl_c_as_at_a_terminal(person: Person) -> None:
    person.prompt()
    person.type("sleep 30; echo not-reached")
    person.child.send("echo typed-ahead\r")
    time.sleep(1)
    person.child.sendcontrol("c")
    screen = person.prompt()
    screen += person.run("echo after")
    assert "after\r\n" in screen
    assert "typed-ahead" not in screen


def _running(pattern: str) -> bool:
    import subprocess

    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, check=False).returncode == 0


def test_background_jobs_end_with_the_session(person: Person) -> None:
    person.prompt()
    person.run("sleep 100.125 &")
    assert _running("sleep 100.125")
    person.type("exit")
    person.child.expect(pexpect.EOF)
    deadline = time.monotonic() + 10
    while _running("sleep 100.125") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running("sleep 100.125")


def test_ctrl_z_at_the_prompt_inserts_nothing_and_says_why(person: Person) -> None:
    person.prompt()
    person.child.send("echo a")
    person.child.sendcontrol("z")
    person.child.send("b\r")
    person.child.expect("job control is not available at the console; use Ctrl-C")
    person.child.expect("\r\nab\r\n")  # the command ran as typed, without a ^Z in it (a\x1ab)
    person.prompt()
