"""mpish ssh's -w/-x with rank lists (nodes.select_hosts): ``-x @2`` leaves out the second
host, as the console's ``@2`` names it (it was read as a group: "no group configuration")."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpish.shell.nodes import HostsError, Selection, number_hosts, select_hosts


@pytest.mark.parametrize(("selection", "hosts"), [
    (Selection(nodes=("host[1-4]",), exclude=("@2",)), ["host1", "host3", "host4"]),
    (Selection(nodes=("host[1-4]", "@1,@3")), ["host1", "host3"]),
    (Selection(nodes=("host[1-4]", "@2-4")), ["host2", "host3", "host4"]),
    (Selection(nodes=("host[1-4]",), exclude=("@1,@2", "host4")), ["host3"]),  # numbers before -x names
    (Selection(nodes=("b1,a1,a2",), exclude=("@1",)), ["a2", "b1"]),  # numbered in node-set order: a1 is @1
])
def test_rank_words_pick_or_leave_out_hosts_by_their_number_among_the_hosts_named(
        selection: Selection, hosts: list[str]) -> None:
    assert select_hosts(selection) == hosts


@pytest.mark.parametrize(("selection", "said"), [
    (Selection(nodes=("@1",)), "@1: a host's number among the hosts given; give the hosts too"),
    (Selection(nodes=("host[1-2]",), exclude=("@5",)), "@5: there is no host @5: the hosts given are @1-2"),
    (Selection(nodes=("host[1-2]",), exclude=("@1,@2",)), "no host left to run on"),
    (Selection(nodes=("host[1-2]",), exclude=("@2-1",)), "@2-1: bad rank range"),
    (Selection(nodes=("",)), "the hosts given name no host (an empty node set): nothing was run"),  # -w ''
    (Selection(nodes=("host[1-2]",), exclude=("host[1-2]",)), "no host left to run on"),
])
def test_a_rank_word_that_names_no_host_says_why(selection: Selection, said: str) -> None:
    with pytest.raises(HostsError) as info:
        select_hosts(selection)
    assert said in str(info.value)


@pytest.mark.parametrize(("selection", "numbered", "named"), [
    (Selection(nodes=("node[1-3]",), exclude=("@2",)), {1: "node1", 3: "node3"}, 3),
    (Selection(nodes=("node[1-3]",), exclude=("node1",)), {2: "node2", 3: "node3"}, 3),
    (Selection(nodes=("node[1-4]", "@3-4"), exclude=("node4",)), {3: "node3"}, 4),
])
def test_left_out_hosts_leave_their_numbers_vacant_so_at_n_keeps_meaning_the_host_given_as_n(
        selection: Selection, numbered: dict[int, str], named: int) -> None:
    """A new user: ``node[1-3] -x @2`` made node3 ``@2`` (its $MPISH_RANK, JSON rank and the
    console's ``@2``), right after ``@2`` was left out; over MPI the ranks keep their numbers."""
    assert number_hosts(selection) == (numbered, named)


@pytest.mark.parametrize("exclude", [("nod2",), ("node[7-9]",), ("other",)])
def test_an_exclusion_that_names_none_of_the_hosts_given_runs_nothing(exclude: tuple[str, ...]) -> None:
    """A misspelt ``-x`` (clush ignores it and runs everywhere) is refused before any host is reached."""
    with pytest.raises(HostsError) as info:
        number_hosts(Selection(nodes=("node[1-3]",), exclude=exclude))
    assert f"-x {exclude[0]}: none of the hosts given is there (they are node[1-3]): nothing was run" in str(
        info.value)
    partly = Selection(nodes=("node[1-3]",), exclude=("node[3-9]",))  # leaves out node3: fine
    assert number_hosts(partly)[0] == {1: "node1", 2: "node2"}


def test_each_name_of_an_exclusion_list_must_name_a_host_given() -> None:
    """A clush user: ``-x host2,hots3`` left out host2 and ran on host3 (the guard looked at the
    list, one of whose names hit); ``-x @1,@3`` by number and an operator expression stay whole."""
    with pytest.raises(HostsError, match=r"-x nod3: none of the hosts given is there"):
        number_hosts(Selection(nodes=("node[1-4]",), exclude=("node2,nod3",)))
    both = Selection(nodes=("node[1-4]",), exclude=("node2,node3",))
    assert number_hosts(both)[0] == {1: "node1", 4: "node4"}
    assert number_hosts(Selection(nodes=("node[1-4]",), exclude=("node[1-3],node9!node1",)))[0] == {
        1: "node1", 4: "node4"}  # (NodeSet reads it left to right: node[2-3,9])
    with pytest.raises(HostsError, match="empty item"):
        number_hosts(Selection(nodes=("node[1-4]",), exclude=("node2,",)))


def test_a_host_file_that_names_no_host_says_so(tmp_path: Path) -> None:
    """A clush user: ``--hostfile /dev/null`` said "no host left to run on", as if -x had left
    every host out."""
    empty = tmp_path / "hosts"
    empty.write_text("# none yet\n\n")
    with pytest.raises(HostsError, match=rf"the host file {empty} names no host"):
        number_hosts(Selection(hostfiles=(str(empty),)))


def test_a_host_number_inside_a_list_of_hosts_says_to_give_it_alone() -> None:
    """A clush user: ``-w host[1-3],@2`` said "group @2 is unknown"."""
    with pytest.raises(HostsError, match=r"host\[1-3\],@2: @2 is a host's number: give it as a word"):
        number_hosts(Selection(nodes=("host[1-3],@2",)))


def test_pick_runs_on_that_many_hosts_left_after_exclusion_each_keeping_its_number() -> None:
    """clush's ``--pick N``: N of the hosts selected, at random; -x applies first."""
    seen: set[str] = set()
    for _ in range(200):
        chosen, named = number_hosts(Selection(nodes=("host[1-6]",), exclude=("host2",), pick=2))
        assert named == 6 and len(chosen) == 2 and "host2" not in chosen.values()
        assert all(host == f"host{number}" for number, host in chosen.items()), chosen
        seen |= set(chosen.values())
    assert seen == {"host1", "host3", "host4", "host5", "host6"}  # every host left can be picked
    assert select_hosts(Selection(nodes=("host[1-3]",), pick=9)) == ["host1", "host2", "host3"]
