"""The console as a terminal user expects it (issue: the shell as clush and ssh users expect it)."""

from __future__ import annotations

import pytest
from test_shell_console import Person, person

pytestmark = pytest.mark.mpi

__all__ = ["person"]  # the fixture, imported for this module's tests


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
