"""--label host: servers named by host, a host's ranks told apart when only some are meant."""

from __future__ import annotations

from mpish.shell.names import RankHostNames

HOSTS = {1: "vm", 2: "vm", 3: "vm", 4: "n1", 5: "n2", 6: "n3", 7: "n3"}


def test_a_group_holding_every_rank_of_its_hosts_is_named_by_the_hosts_folded() -> None:
    names = RankHostNames(HOSTS)
    assert names.label([1, 2, 3]) == "vm"
    assert names.label([4, 5, 6, 7]) == "n[1-3]"


def test_some_ranks_of_a_host_are_named_with_their_ranks() -> None:
    names = RankHostNames(HOSTS)
    assert names.label([2]) == "vm@2"
    assert names.label([1, 3]) == "vm@[1,3]"
    assert names.label([4, 5, 6, 1]) == "n[1-2],n3@6,vm@1"


def test_a_line_prefix_names_the_rank_only_where_its_host_runs_several() -> None:
    names = RankHostNames(HOSTS)
    assert [names.prefix(rank) for rank in (1, 4, 6, 8)] == ["vm@1", "n1", "n3@6", "rank8"]
