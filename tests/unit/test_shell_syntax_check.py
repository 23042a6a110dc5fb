"""A command that does not parse: a real ShellServer answers with bash's own message and
status 2, names none of its files, runs nothing, and its session goes on untouched. The
check is a child bash (``SyntaxCheck``), never the session's: hostile text cannot run."""

from __future__ import annotations

import re

import test_shell_server_conversation as pair

from mpish.shell import protocol as p
from mpish.shell.receive import Output

Client = pair.Client
client = pair.client  # the fixture: a real ShellServer and its bash, over pipes


def run(client: Client, cmd_id: int, command: str) -> tuple[p.Done, bytes, bytes]:
    """Run one command; its Done, its stdout and its stderr."""
    start = len(client.seen)
    client.send(p.Run(cmd_id, command, 0, False))
    client.until(lambda: client.done(cmd_id) is not None)
    done = client.done(cmd_id)
    assert done is not None
    outputs = [m for _, m in client.seen[start:] if isinstance(m, Output)]
    stdout = b"".join(m.data for m in outputs if m.stream == p.STDOUT)
    stderr = b"".join(m.data for m in outputs if m.stream == p.STDERR)
    return done, stdout, stderr


def test_a_syntax_error_is_bashs_message_and_status_2_and_names_no_file_of_mpish(client: Client) -> None:
    done, out, err = run(client, 1, "echo ran; echo )")
    assert done.exit == 2 and done.error == ""  # bash's status for a syntax error
    assert out == b""  # nothing ran
    # bash's words for a script read on stdin: its line in the text, then the line itself
    assert re.fullmatch(rb"bash: line 1: syntax error near unexpected token `\)'\n"
                        rb"bash: line 1: `echo ran; echo \)'\n", err), err
    assert b"mpish" not in err and b"/tmp" not in err and b"command" not in err, err  # no file of ours
    done, out, _ = run(client, 2, "echo $?")
    assert out == b"2\n"  # $? as bash leaves it after a syntax error
    _, _, again = run(client, 3, "echo ran; echo )")
    assert again == err  # the same text each time (and on every rank): it groups


def test_an_unclosed_quote_says_so_and_a_multiline_text_runs_none_of_its_lines(client: Client) -> None:
    done, out, err = run(client, 1, "echo 'open")
    assert done.exit == 2 and out == b""
    assert err.startswith(b"bash: line 1: unexpected EOF while looking for matching `''\n"), err
    done, out, err = run(client, 2, "echo first\nif true; then echo second\nfi fi")
    assert done.exit == 2 and out == b"", out  # the whole text is checked before any of it runs
    assert err.startswith(b"bash: line 3: syntax error near unexpected token `fi'\n"), err


def test_text_that_closes_a_wrapper_runs_nothing_and_cannot_touch_the_session(client: Client) -> None:
    """The reverted check wrapped the text in a function; this text ran CMD in the session,
    read the next command from bash's stdin and wrote a forged status."""
    done, out, err = run(client, 1, "true; }; echo PW''NED; { true")
    assert done.exit == 2 and b"PWNED" not in out + err and b"syntax error" in err
    forge = "true; }; read -r line; printf 'x 0 /\\0' >&200; echo PW''NED >&2; { true"
    done, out, err = run(client, 2, forge)
    assert done.exit == 2 and b"PWNED" not in out + err and b"syntax error" in err
    done, out, err = run(client, 3, "echo next; exit 7")
    assert (done.exit, out, err) == (7, b"next\n", b"")  # the next command is whole, its status its own
    done, out, _ = run(client, 4, "echo $?")
    assert (done.exit, out) == (0, b"7\n")


def test_the_check_parses_with_the_sessions_aliases_and_extglob(client: Client) -> None:
    """Options set by earlier commands count (a check without them would refuse these)."""
    done, out, err = run(client, 1, "echo @(a|b)")
    assert done.exit == 2 and b"syntax error" in err  # extglob is off, as in bash
    run(client, 2, "shopt -s extglob; alias BEGIN='{'")
    done, out, err = run(client, 3, "echo @(a|b); BEGIN echo in; }")
    assert (done.exit, out, err) == (0, b"@(a|b)\nin\n", b"")
    run(client, 4, "shopt -u extglob")
    done, out, err = run(client, 5, "shopt -s extglob\necho @(e|f)")
    assert (done.exit, out) == (0, b"@(e|f)\n"), err  # text that sets options: bash decides, line by line


def test_plain_words_skip_the_child_but_not_when_the_first_is_an_alias_or_reserved(client: Client) -> None:
    """``hostname``-like commands are known to parse without a child bash; an alias or a
    reserved word in front still goes to the child, which knows what it expands to."""
    done, out, _ = run(client, 1, "echo plain $MPISH_RANK")
    assert (done.exit, out) == (0, b"plain 1\n")
    run(client, 2, "alias oops='echo )'")
    done, out, err = run(client, 3, "oops")
    assert done.exit == 2 and b"syntax error near unexpected token `)'" in err and b"/tmp" not in err, err
    done, out, err = run(client, 4, "fi")
    assert done.exit == 2 and err.startswith(b"bash: line 1: syntax error near unexpected token `fi'"), err
