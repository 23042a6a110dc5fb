"""console_transfer.Clock: a copy's timeout and what it says of each target."""

from __future__ import annotations

from types import SimpleNamespace

from mpish.shell.console_transfer import Clock


def test_a_timeout_relabels_only_the_targets_it_cut_and_only_once() -> None:
    """helper-136: every non-empty verdict of the dict was relabelled, the --copy's shared one:
    hosts of earlier groups, hosts never reached, again at each group that timed out."""
    verdicts = {1: "authentication refused", 2: "", 3: "the transfer was stopped; nothing was written"}
    for group in ([3], [4]):  # two groups of a --copy, each timing out in its turn
        clock = Clock(SimpleNamespace(timeout=2.0))  # type: ignore[arg-type]
        clock.cut = set(group)
        verdicts.setdefault(group[0], "the transfer was stopped; nothing was written")
        clock.said(verdicts)
    assert verdicts == {1: "authentication refused", 2: "",
                        3: "timed out after 2 s: the transfer was stopped; nothing was written",
                        4: "timed out after 2 s: the transfer was stopped; nothing was written"}
