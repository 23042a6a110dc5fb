"""The console's Tab completion reads the line as bash does (quotes, backslashes) and puts a
completed name back in the quoting it was begun with (helper-141: nothing completed after
``a\\ `` or inside quotes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from mpish.shell.completion import make_completer, shell_words, split_line
from mpish.shell.console_put_get import parse_words

NAMES = {"": ["my file.txt", "my dir/", "plain"], "my dir/": ["inner $x.txt", "deeper/"]}


def complete(line: str) -> tuple[list[str], list[str]]:
    """(what the remote was asked, each completion applied to the line)."""
    asked: list[str] = []

    def remote(target: str, prefix: str) -> list[str]:
        asked.append(prefix)
        directory, _, tail = prefix.rpartition("/")
        return [name for name in NAMES.get(directory + "/" if directory else "", []) if name.startswith(tail)]

    completer = make_completer([":put", ":get"], remote)
    document = Document(line)
    applied = []
    for found in completer.get_completions(document, CompleteEvent(completion_requested=True)):
        applied.append(line[: len(line) + found.start_position] + found.text)
    return asked, applied


@pytest.mark.parametrize(("line", "asked", "applied", "name"), [
    ("cat my\\ f", "my f", "cat my\\ file.txt ", "my file.txt"),
    ('cat "my f', "my f", 'cat "my file.txt" ', "my file.txt"),
    ("cat 'my f", "my f", "cat 'my file.txt' ", "my file.txt"),
    ('cat "my d', "my d", 'cat "my dir/', ""),  # a directory: the quote stays open, as bash leaves it
    ("cat my\\ dir/in", "my dir/in", "cat my\\ dir/inner\\ \\$x.txt ", "my dir/inner $x.txt"),
    ('cat "my dir/in', "my dir/in", 'cat "my dir/inner \\$x.txt" ', "my dir/inner $x.txt"),
    ("cat pl", "pl", "cat plain ", "plain"),
    ("X=pl", "pl", "X=plain ", "X=plain"),
    ("@2 cat my\\ f", "my f", "@2 cat my\\ file.txt ", "my file.txt"),
])
def test_a_name_is_completed_inside_quotes_and_after_backslashes_and_bash_reads_it_as_that_name(
        line: str, asked: str, applied: str, name: str) -> None:
    got_asked, got = complete(line)
    assert (got_asked, got) == ([asked], [applied])
    if name:  # bash itself reads the completed line's last word back
        script = f"set -- {applied.removeprefix('@2 ')}; printf '%s\\n' \"${{@: -1}}\""
        said = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10, check=True)
        assert said.stdout == name + "\n", (applied, said)


def test_a_builtins_argument_completed_inside_double_quotes_is_read_back_by_its_parser() -> None:
    _, got = complete(':get "my dir/in')
    assert got == [":get my\\ dir/inner\\ \\$x.txt "]  # shlex keeps \$ inside "...": escaped instead
    assert parse_words(got[0].removeprefix(":get "), "usage") == ["my dir/inner $x.txt"]
    _, got = complete(':get "my f')
    assert got == [':get "my file.txt" '] and parse_words(got[0][5:], "usage") == ["my file.txt"]


def test_a_local_path_of_put_is_completed_the_same_way(tmp_path: Path) -> None:
    (tmp_path / "a file.bin").write_bytes(b"")
    for typed, expected in ((f"{tmp_path}/a\\ f", f"{tmp_path}/a\\ file.bin "),
                            (f'"{tmp_path}/a f', f'"{tmp_path}/a file.bin" ')):
        _, got = complete(f":put {typed}")
        assert got == [f":put {expected}"]
        assert parse_words(got[0][5:], "usage") == [f"{tmp_path}/a file.bin"]
    (tmp_path / "dir one").mkdir()  # helper-144: no / after a local directory, its quote closed
    for typed, expected in ((f'"{tmp_path}/dir o', f'"{tmp_path}/dir one/'), (f"{tmp_path}/dir\\ o",
                                                                            f"{tmp_path}/dir\\ one/")):
        assert complete(f":put {typed}")[1] == [f":put {expected}"]  # Tab may go on into it


def test_words_are_split_as_bash_splits_them() -> None:
    assert [w.text for w in shell_words("a 'b c' d\\ e \"f\\\"g\\h\" ")] == ["a", "b c", "d e", 'f"g\\h', ""]
    assert shell_words('ls "x y')[-1] == (3, "x y", '"')
    assert split_line("@2 ls -l 'my sr") == ("@2", ["ls", "-l"], "my sr")


def test_a_target_word_completes_to_all_and_the_hosts() -> None:
    # helper-141: `@no` Tab completed nothing; host names are target words (ranks.resolve_targets)
    completer = make_completer([":targets", ":attach"], lambda target, prefix: ["not-a-target"],
                               lambda: ["@all", "@node1", "@node2", "@other"])

    def offered(line: str) -> list[str]:
        found = completer.get_completions(Document(line), CompleteEvent(completion_requested=True))
        return [line[: len(line) + item.start_position] + item.text for item in found]

    assert offered("@no") == ["@node1", "@node2"]
    assert offered(":targets @a") == [":targets @all"]
    assert offered("@1 :attach @ot") == ["@1 :attach @other"]
    assert offered("ls @no") == ["ls not-a-target "]  # an argument of a command is a path
