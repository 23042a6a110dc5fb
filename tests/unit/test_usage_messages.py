"""Usage mistakes of a user trial, each said before anything runs: ``mpish ssh`` options given to
the MPI shell, an empty path to :get or :put, an empty target."""

from __future__ import annotations

import pytest

from mpish.cli import SSH_ONLY, _add_ssh, _main_parser, _parse_main
from mpish.shell.console_put_get import GET_USAGE, PUT_USAGE, parse
from mpish.shell.ranks import TargetError, resolve_targets


@pytest.mark.parametrize(("argv", "said"), [
    (["-n", "2", "-o", "-F x", "uptime"], "-o is an option of mpish ssh (the MPI shell's servers are MPI "
     "ranks, not ssh logins): did you mean `mpish ssh HOSTS -o '-F x' uptime`?"),
    (["-n2", "-l", "root", "ls", "-n"], "-l is an option of mpish ssh (the MPI shell's servers are MPI "
     "ranks, not ssh logins): did you mean `mpish ssh HOSTS -l root ls -n`?"),
    (["-w", "node[1-4]", "--python=python3.12", "-c", "uptime"], "did you mean "
     "`mpish ssh -w 'node[1-4]' --python=python3.12 -c uptime`?"),
])
def test_ssh_options_given_to_the_mpi_shell_name_the_mpish_ssh_line_meant_not_glued_words(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str],
) -> None:
    """It said "unrecognized arguments: -o -F xuptime" (the option's value glued to the command)."""
    with pytest.raises(SystemExit) as ended:
        _parse_main(_main_parser(), argv)
    assert ended.value.code == 2
    assert said in capsys.readouterr().err


def test_the_ssh_only_options_are_those_mpish_ssh_has_and_the_mpi_shell_lacks() -> None:
    import argparse

    ssh = argparse.ArgumentParser()
    _add_ssh(ssh)
    main = _main_parser()
    lacking = {name for name in ssh._option_string_actions if name not in main._option_string_actions}
    assert set(SSH_ONLY) == lacking - {"-h", "--help"}


@pytest.mark.parametrize(("line", "usage"), [
    ("''", GET_USAGE), ('remote ""', GET_USAGE), ("-r ''", PUT_USAGE),
])
def test_an_empty_path_to_get_or_put_is_refused_as_empty(line: str, usage: str) -> None:
    """:get '' read the cwd and said "/tmp/h5 is a directory (use :get -r)"."""
    with pytest.raises(ValueError, match=r"^an empty path \(''\) names no file"):
        parse(line, usage)


@pytest.mark.parametrize("spec", ['@""', "@''", "@", '""'])
def test_an_empty_target_is_refused_as_empty_not_looked_up_as_a_host(spec: str) -> None:
    """:targets "" was looked up as @"" ("no group ... and no host of a shell server")."""
    from mpish.shell.interactive import target_words  # as :targets reads its words

    with pytest.raises(TargetError, match="an empty target names no server"):
        resolve_targets(target_words(spec), {1: "vm", 2: "vm"})
