"""shell/continuation.py: the console reads on where bash would (PS2), and only there."""

from __future__ import annotations

import pytest

from mpish.shell import continuation
from mpish.shell.continuation import Block, needs_more

OPEN = [
    "if [ -e /x ]; then", "if [ -e /x ]; then\n  rmdir d", "for f in *; do", "while true", "f() {",
    "case x in", "(", "echo 'abc", 'echo "abc', "x=$(date", "echo `date", "echo a \\", "echo a &&",
    "ls |", "cat <<EOF", "cat <<EOF\nbody", "cat <<-END\n\tbody",
]
WHOLE = [
    "hostname", "ls -l /tmp", "echo $X", "if [ -e /x ]; then\n  rmdir d\nfi", "cat <<EOF\nbody\nEOF",
    "case x in a) echo a;; esac", "echo a \\\\", "echo if then", "[[ a == b ]] && echo y", "echo {a,b}",
    "time", "f() { echo in f; }", "# a comment about C:\\", ": <<'EOF'\nrm -rf build\nEOF",
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


def _bash_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    calls: list[bytes] = []
    run = continuation.subprocess.run

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(kwargs["input"])  # type: ignore[arg-type]
        return run(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(continuation.subprocess, "run", counted)
    return calls


def test_a_long_here_document_asks_bash_only_at_its_start_and_its_delimiter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bash -n ran on the whole text so far at every line: 1,000 lines took 18.7 s (load 4)."""
    calls = _bash_calls(monkeypatch)
    block = Block()
    assert block.add("cat > notes <<'EOF'")
    for number in range(1000):
        assert block.add(f"line {number} with 'quotes', $(no expansion) and fi done }}")
    assert not block.add("EOF")
    assert len(calls) == 2


def test_plain_lines_inside_an_open_block_ask_bash_nothing_and_the_closing_line_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _bash_calls(monkeypatch)
    block = Block()
    assert block.add("for host in a b c; do")
    for _ in range(200):
        assert block.add("  ping -c 1 $host")
    assert not block.add("done")
    assert len(calls) == 2


def test_a_slow_check_inside_a_block_reads_on_rather_than_sending_half_of_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    block = Block()
    assert block.add("if true; then")

    def slow(*args: object, **kwargs: object) -> object:
        raise continuation.subprocess.TimeoutExpired("bash", continuation.TIMEOUT)

    monkeypatch.setattr(continuation.subprocess, "run", slow)
    assert block.add("  echo 'x'")  # not plain: bash is asked, and is slow
    assert not Block().add("echo 'x")  # a first line: sent as it is, the server says what is wrong
