"""Bytes that are not UTF-8 (a file named by the byte 0xFF, a command holding it) go through
the shell's protocol and the console's completion as those bytes, as with ssh and clush: a
Tab on such a directory ended the target's server, a command of such a byte ended in a
traceback (a clush user's trial, helper-141)."""

from __future__ import annotations

import os

from mpish.shell import protocol as p
from mpish.shell.completion import complete_path, shell_escaped
from mpish.shell.console_put_get import parse_words

NAME = os.fsdecode(b"caf\xe9-\xff")  # Latin-1 and a lone byte, as os.listdir gives them


def test_a_message_carries_a_str_of_any_bytes_and_gives_it_back() -> None:
    for message in (p.Completions(7, f"{NAME}\0ok"), p.Complete(8, NAME)):
        encoded = p.CODEC.encode(message)
        assert os.fsencode(NAME) in encoded  # the name's own bytes on the wire
        assert p.CODEC.decode(encoded) == message


def test_completion_offers_such_a_name_as_bashs_dollar_quote(tmp_path: os.PathLike[str]) -> None:
    os.mkdir(os.path.join(os.fsencode(tmp_path), os.fsencode(NAME)))
    assert complete_path("caf", os.fspath(tmp_path)) == [NAME + "/"]
    assert shell_escaped(NAME) == r"$'caf\xe9-\xff'"
    assert shell_escaped("it's a\x1b") == r"$'it\'s a\x1b'"
    assert shell_escaped("a b*") == r"a\ b\*"
    assert complete_path("a\0b/", os.fspath(tmp_path)) == []  # (a NUL raised ValueError in the server)


def test_completion_of_a_builtins_argument_is_read_back_by_its_parser() -> None:
    """:put and :get read their words with shlex, which has no $'...' (helper-142): their names
    are escaped with backslashes, which it reads back to the name."""
    for name in (NAME, "a\tb", "it's here"):
        assert parse_words(f"{shell_escaped(name, bash=False)} dest", "usage") == [name, "dest"]
