"""Rank sets and targets: ``@all``, ``@1-3,7``, host names (clush's node sets, for ranks)."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping

from ClusterShell.RangeSet import RangeSet, RangeSetException

from mpish.wire.errors import MpishError

MAX_RANKS = 100_000  # a rank set naming more is refused before it is built
_ITEM = re.compile(r"([0-9]+)(?:-([0-9]+)(?:/([0-9]+))?)?")  # N, N-M or N-M/STEP: ASCII digits only


class TargetError(MpishError):
    """A target expression names nothing usable (bad syntax, unknown rank or host)."""


def parse_ranks(text: str) -> frozenset[int]:
    """``"1-3,7"`` -> {1, 2, 3, 7}, read as ClusterShell reads a range set (``1-9/2`` too).

    Each comma-separated item must be ``N``, ``N-M`` or ``N-M/STEP`` in ASCII digits
    (RangeSet alone would also take ``-1``, ``1_0`` or other scripts' digits); a set of
    more than :data:`MAX_RANKS` ranks is refused before it is built. Raises
    :class:`TargetError` saying what is wrong.
    """
    span = 0
    for part in text.split(","):
        item = _ITEM.fullmatch(part.strip())
        if item is None:
            what = "empty item" if not part.strip() else f"bad rank range {part.strip()!r}"
            raise TargetError(f"{what} in rank set {text!r} (expected N, N-M or N-M/STEP, comma-separated)")
        low, high = int(item[1]), int(item[2] or item[1])
        if high < low:
            raise TargetError(f"bad rank range {part.strip()!r} in rank set {text!r}: {high} < {low}")
        span += high - low + 1
    if span > MAX_RANKS:
        raise TargetError(f"rank set {text!r} names more than {MAX_RANKS} ranks")
    try:
        return frozenset(RangeSet(text).intiter())
    except RangeSetException as exc:  # e.g. a step of 0
        raise TargetError(f"bad rank set {text!r}: {exc}") from None


def _named(host: str, name: str) -> bool:
    """``name`` names ``host``: the whole name, or its short form (``n2`` for n2.cluster)."""
    return host == name or host.split(".")[0] == name


def _lost(ranks: Collection[int], unreached: Collection[int]) -> str:
    """How a target error says that ``ranks`` (all lost) are gone."""
    if all(rank in unreached for rank in ranks):
        return "was not reached at the start (:reconnect tries again); the others serve (@all)"
    return "was lost (its server is gone); the others still serve (@all)"


def fold_hosts(hosts: Iterable[str]) -> str:
    """Host names as a ClusterShell node set: ``host1,host2,host3`` -> ``host[1-3]``. (NodeSet
    imported here: it loads logging and configparser, ~8 ms, which a client that prints
    nothing never needs.)"""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(hosts)))


def _host_names(hosts: Mapping[int, str]) -> str:
    """The servers' hosts, folded as clush folds them (``host[1,3]``); listed as they are if
    NodeSet cannot read one."""
    from ClusterShell.NodeSet import NodeSetException

    names = sorted(set(hosts.values()))
    try:
        return fold_hosts(names)
    except NodeSetException:
        return ",".join(names)


def format_ranks(ranks: Iterable[int]) -> str:
    """{1, 2, 3, 7} -> ``"1-3,7"``: the inverse of :func:`parse_ranks` (ClusterShell's folding)."""
    items = sorted(set(ranks))
    return str(RangeSet(",".join(map(str, items)))) if items else ""


def resolve_targets(spec: str, hosts: Mapping[int, str], lost: Mapping[int, str] | Iterable[int] = (),
                    excluding: bool = False, unreached: Collection[int] = ()) -> frozenset[int]:
    """The ranks a target spec names, among the live servers ``hosts`` (rank -> host).

    ``spec`` is a comma-free list of words separated by whitespace or ``+``; each word is
    ``@all``, ``@<rank set>``, or a host name (with or without ``@``), which names every
    rank on that host. A rank that is not a live server is an error; with ``excluding``
    (``-x``), a word none of whose ranks or hosts is a server is one too (clush ignores it,
    and runs everywhere: a misspelt exclusion must not run where it was meant not to), while
    ``-x @2-9`` of 3 servers leaves out 2 and 3. ``lost``: the
    servers lost during the session (ranks, or rank -> host): a target that names only such
    is said to be lost, not to have no server; ``unreached``: those of them never reached
    (ssh hosts down when the console started), said so.
    """
    lost_hosts: Mapping[int, str] = lost if isinstance(lost, Mapping) else {}
    words = spec.replace("+", " ").split()
    if not words:
        raise TargetError("no target given")
    chosen: set[int] = set()
    for word in words:
        name = word[1:] if word.startswith("@") else word
        if not name.strip("'\""):  # :targets "" was looked up as a group or host named @""
            raise TargetError(f"{word}: an empty target names no server (quotes are not read here): "
                              "give ranks (@1-3), hosts or @all")
        if name == "all":
            chosen.update(hosts)
            continue
        if name and name[0].isdigit():
            ranks = parse_ranks(name)
            missing = ranks - set(hosts)
            if excluding and missing == ranks:  # -x @9 of 2 servers: a typo runs everywhere
                raise TargetError(f"-x @{name}: no shell server on rank(s) {format_ranks(missing)} "
                                  f"(the servers are @{format_ranks(hosts)}); nothing was run")
            if excluding:
                chosen.update(ranks - missing)
                continue
            if missing and missing <= set(lost):  # ``lost``: ranks whose server is gone
                raise TargetError(f"rank {format_ranks(missing)} {_lost(missing, unreached)}")
            if missing:
                console = " (rank 0 is the console; the servers are 1 and up)" if 0 in missing else ""
                left = f"the servers are @{format_ranks(hosts)}" if hosts else "no server is left"
                raise TargetError(f"no shell server on rank(s) {format_ranks(missing)}{console} ({left}; "
                                  ":targets lists them)")
            chosen.update(ranks)
            continue
        on_host = {rank for rank, host in hosts.items() if _named(host, name)}
        gone = {rank for rank, host in lost_hosts.items() if _named(host, name)}
        if not on_host and not excluding and gone:
            raise TargetError(f"{name} {_lost(gone, unreached)}")
        if not on_host and word.startswith("@"):  # -x @typo left out nothing, silently
            raise TargetError(f"{word} is no group (ClusterShell's groups.conf, as for clush) and no "
                              "host of a shell server")
        if not on_host and not excluding:
            raise TargetError(f"no shell server on host {name!r} (the servers' hosts: {_host_names(hosts)})")
        if not on_host:  # -x vn for vm: a misspelt exclusion must not run where it was meant not to
            raise TargetError(f"-x {word}: no shell server on host {name!r} (the servers' hosts: "
                              f"{_host_names(hosts)}); "
                              "nothing was run")
        chosen.update(on_host)
    return frozenset(chosen)


def describe(ranks: Iterable[int], every: Iterable[int]) -> str:
    """``@all`` when ``ranks`` is every live server, else ``@1-3,7``."""
    ranks = frozenset(ranks)
    return "@all" if ranks == frozenset(every) else "@" + format_ranks(ranks)
