"""shell/continuation.py: the console reads on where bash would (PS2), and only there."""

from __future__ import annotations

import pytest

from mpish.shell.continuation import needs_more

OPEN = [
    "if [ -e /x ]; then", "if [ -e /x ]; then\n  rmdir d", "for f in *; do", "while true", "f() {",
    "case x in", "(", "echo 'abc", 'echo "abc', "x=$(date", "echo `date", "echo a \\", "echo a &&",
    "ls |", "cat <<EOF", "cat <<EOF\nbody", "cat <<-END\n\tbody",
]
WHOLE = [
    "hostname", "ls -l /tmp", "echo $X", "if [ -e /x ]; then\n  rmdir d\nfi", "cat <<EOF\nbody\nEOF",
    "case x in a) echo a;; esac", "echo a \\\\", "echo if then", "[[ a == b ]] && echo y", "echo {a,b}",
    "time", "f() { echo in f; }",
    # syntax errors are not incomplete: they go to the server, which says what is wrong
    "done", "fi", "echo )", "if; then fi",
]


@pytest.mark.parametrize("text", OPEN)
def test_a_command_bash_would_read_on_after_needs_more(text: str) -> None:
    assert needs_more(text)


@pytest.mark.parametrize("text", WHOLE)
def test_a_whole_command_or_a_syntax_error_needs_no_more(text: str) -> None:
    assert not needs_more(text)


def test_without_bash_on_the_console_host_the_line_is_sent_as_it_is() -> None:
    assert not needs_more("if true; then", bash="/nonexistent/bash")
