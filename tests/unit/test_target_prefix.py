"""`@TARGETS` before a console built-in: only :put, :get and :attach act on targets; before
any other it is refused with what it applies to (helper-138: `@1 :timeout 3` set the timeout
of every rank, `@2 :targets @1` printed the new targets and left them unchanged)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mpish.shell.interactive import Repl
from mpish.shell.ranks import TargetError


@pytest.mark.parametrize("line", ["@1 :timeout 3", "@2 :targets @1", "@1 :lcd /tmp", "@1,2 :help",
                                  "@2 :mode -L"])
def test_a_target_prefix_before_a_builtin_that_takes_none_is_refused_and_changes_nothing(line: str) -> None:
    console = SimpleNamespace(hosts={1: "node1", 2: "node2"}, lost={}, peers={})
    repl = Repl(console)  # type: ignore[arg-type]
    before = (repl.targets, repl.output)
    with pytest.raises(TargetError, match=r"@TARGETS goes before a command, :put, :get or :attach, not :\w+"):
        repl.handle(line)
    assert (repl.targets, repl.output) == before


def test_attach_to_several_targets_names_them_and_their_number() -> None:
    from mpish.shell.attach import AttachError, parse

    hosts = {1: "node1", 2: "node2"}
    with pytest.raises(AttachError, match=r"ONE target, not 2 \(@1-2\): say which, e.g. :attach @1 top"):
        parse("@1,2 top", frozenset(hosts), hosts)  # it said "(@all is 2)" of the @1,2 typed
    assert parse("@2 top", frozenset(hosts), hosts) == (2, "top")


@pytest.mark.parametrize(("line", "kind"), [(":mode -L", "lines"), (":mode -v", "live"),
                                            (":mode --json", "json"), (":mode -b", "grouped"),
                                            (":mode lines", "lines")])
def test_mode_takes_the_command_line_option_as_well_as_the_name(
        line: str, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    # helper-141: `:mode -L` was refused ("usage: :mode grouped|lines|live|json")
    repl = Repl(SimpleNamespace(hosts={1: "node1"}, lost={}, peers={}))  # type: ignore[arg-type]
    repl.handle(":mode live" if kind != "live" else ":mode grouped")
    repl.handle(line)
    assert repl.output.kind == kind
    assert capsys.readouterr().out.endswith(f"mode: {kind}\n")
    with pytest.raises(ValueError, match=r"usage: :mode grouped\|lines\|live\|json \(or the option: -b, -L"):
        repl.handle(":mode -x")
