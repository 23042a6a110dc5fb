"""Rank sets and targets: ``@all``, ``@1-3,7``, host names (clush's node sets, for ranks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mpish.wire.errors import MpishError


class TargetError(MpishError):
    """A target expression names nothing usable (bad syntax, unknown rank or host)."""


def parse_ranks(text: str) -> frozenset[int]:
    """``"1-3,7"`` -> {1, 2, 3, 7}; raise TargetError on bad syntax."""
    ranks: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise TargetError(f"empty item in rank set {text!r}")
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise TargetError(f"bad rank range {part!r} (expected N or N-M)")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise TargetError(f"bad rank range {part!r}: {last} < {first}")
        if last - first > 1_000_000:
            raise TargetError(f"rank range {part!r} is too large")
        ranks.update(range(first, last + 1))
    return frozenset(ranks)


def format_ranks(ranks: Iterable[int]) -> str:
    """{1, 2, 3, 7} -> ``"1-3,7"``: the inverse of :func:`parse_ranks`."""
    items = sorted(set(ranks))
    parts: list[str] = []
    start = prev = None
    for rank in items:
        if prev is not None and rank == prev + 1:
            prev = rank
            continue
        if start is not None and prev is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = rank
    if start is not None and prev is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def resolve_targets(spec: str, hosts: Mapping[int, str]) -> frozenset[int]:
    """The ranks a target spec names, among the live servers ``hosts`` (rank -> host).

    ``spec`` is a comma-free list of words separated by whitespace or ``+``; each word is
    ``@all``, ``@<rank set>``, or a host name (with or without ``@``), which names every
    rank on that host. A rank that is not a live server is an error.
    """
    words = spec.replace("+", " ").split()
    if not words:
        raise TargetError("no target given")
    chosen: set[int] = set()
    for word in words:
        name = word[1:] if word.startswith("@") else word
        if name == "all":
            chosen.update(hosts)
            continue
        if name and name[0].isdigit():
            ranks = parse_ranks(name)
            missing = ranks - set(hosts)
            if missing:
                raise TargetError(f"no shell server on rank(s) {format_ranks(missing)}")
            chosen.update(ranks)
            continue
        on_host = {rank for rank, host in hosts.items() if host == name or host.split(".")[0] == name}
        if not on_host:
            raise TargetError(f"no shell server on host {name!r}")
        chosen.update(on_host)
    return frozenset(chosen)


def describe(ranks: Iterable[int], every: Iterable[int]) -> str:
    """``@all`` when ``ranks`` is every live server, else ``@1-3,7``."""
    ranks = frozenset(ranks)
    return "@all" if ranks == frozenset(every) else "@" + format_ranks(ranks)
