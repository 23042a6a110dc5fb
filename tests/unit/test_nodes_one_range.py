"""``mpish ssh HOST`` and ``mpish ssh 'host[1-8]'`` are read without ClusterShell's NodeSet
(~8 ms of imports before any ssh starts), and give exactly NodeSet's hosts, in its order."""

from __future__ import annotations

from ClusterShell.NodeSet import NodeSet, NodeSetException
from ClusterShell.RangeSet import RangeSetException
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mpish.shell.nodes import Selection, _one_range, select_hosts

# small numbers only: a range of millions of hosts takes as long either way
texts = st.text(alphabet="ab-_.01[],-@:", min_size=1, max_size=8)
numbers = st.builds(lambda width, n: f"{n:0{width}d}", st.integers(0, 3), st.integers(0, 120))
pieces = st.one_of(numbers, st.builds(lambda a, b: f"{a}-{b}", numbers, numbers),
                   st.sampled_from(["", "-", ",", "1-"]))
ranges = st.builds(lambda pre, body, post: f"{pre}[{','.join(body)}]{post}",
                   st.text(alphabet="abZ-_.1", max_size=4), st.lists(pieces, min_size=1, max_size=4),
                   st.text(alphabet="ab-_.2", max_size=3))


def nodeset_hosts(text: str) -> list[str] | None:
    try:
        return [str(host) for host in NodeSet(text)]
    except (NodeSetException, RangeSetException, ValueError):
        return None


@settings(max_examples=600, deadline=None)
@given(st.one_of(texts, ranges))
@example("host[1-8]")
@example("node[01-03,7]-ib")
@example("h[9-11,010]")
@example("host01")
@example("h1[2]")
def test_a_host_or_a_range_read_without_nodeset_gives_nodesets_hosts_in_its_order(text: str) -> None:
    fast = _one_range(Selection((text,)))
    if fast is not None:
        assert fast == nodeset_hosts(text)


def test_what_the_shortcut_reads_is_the_common_case_and_the_rest_goes_to_nodeset() -> None:
    assert _one_range(Selection(("host[1-8]",))) == [f"host{i}" for i in range(1, 9)]
    assert _one_range(Selection(("login1",))) == ["login1"]
    for text in ("a,b", "@group", "h[1-2]x[3]", "h[1-3]!h2", "h1[2]", "h[3-1]", "h[]"):
        assert _one_range(Selection((text,))) is None, text
    assert _one_range(Selection(("h[1-3]",), exclude=("h2",))) is None
    assert _one_range(Selection(("h1", "h2"))) is None
    assert select_hosts(Selection(("h[1-3]",), exclude=("h2",))) == ["h1", "h3"]
