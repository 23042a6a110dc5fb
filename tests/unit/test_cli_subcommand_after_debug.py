"""``mpish --debug ssh HOST -c true`` runs the ssh subcommand with --debug; it used to start an
MPI session running ``ssh HOST -c true`` on the ranks."""

from __future__ import annotations

import pytest

from mpish.cli import subcommand_first


@pytest.mark.parametrize("argv, expected", [
    (["--debug", "ssh", "h", "-c", "true"], ["ssh", "--debug", "h", "-c", "true"]),
    (["--debug", "--debug", "ssh", "h"], ["ssh", "--debug", "--debug", "h"]),
    (["ssh", "--debug", "h"], ["ssh", "--debug", "h"]),
])
def test_debug_before_the_ssh_subcommand_is_an_option_of_the_subcommand(
        argv: list[str], expected: list[str]) -> None:
    assert subcommand_first(argv) == expected


@pytest.mark.parametrize("argv", [
    ["-n", "2", "ssh", "h"],  # run `ssh h` on two ranks, as clush reads its words
    ["--debug", "-n", "2", "ssh", "h"],
    ["--debug"],
    ["--debug", "ls", "ssh"],
])
def test_words_after_other_options_stay_a_command_for_the_ranks(argv: list[str]) -> None:
    assert subcommand_first(argv) == argv
