"""Node selection as clush does it: ``-w``, ``-x``, ``-g``, ``-X``, ``-a``, ``--hostfile``.

Node sets are ClusterShell's (``node[1-8],login1``, ``@group``). Groups come from the
user's ClusterShell configuration (``groups.conf``) in the places clush reads it:
``/etc/clustershell``, ``~/.local/etc/clustershell``, ``$XDG_CONFIG_HOME/clustershell``
(``~/.config/clustershell``) and ``$CLUSTERSHELL_CFGDIR``, the last one found winning.
Not the Python installation's ``etc/clustershell``: pip puts ClusterShell's example
configuration there (``@compute`` = ``example[32-159]``), which describes nobody's cluster.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Any

from mpish.wire.errors import MpishError
from mpish.wire.message import Frozen, frozen, replace


class HostsError(MpishError):
    """A node set, group or host file names nothing usable."""


@frozen
class Selection(Frozen):
    """What the user chose: clush's ``-w``, ``-x``, ``-g``, ``-X``, ``-a``, ``--hostfile``, ``--pick``."""

    nodes: tuple[str, ...] = ()  # -w (and mpish ssh's positional HOSTS)
    exclude: tuple[str, ...] = ()  # -x
    groups: tuple[str, ...] = ()  # -g
    exclude_groups: tuple[str, ...] = ()  # -X
    all: bool = False  # -a
    hostfiles: tuple[str, ...] = ()  # --hostfile
    pick: int = 0  # --pick N: N of the hosts left, at random (0: all)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.groups or self.all or self.hostfiles)


def group_config_paths() -> list[str]:
    """The groups.conf files mpish reads, lowest priority first (see the module doc)."""
    from ClusterShell.Defaults import config_paths

    example = os.path.join(sys.prefix, "etc/clustershell", "groups.conf")
    return [path for path in config_paths("groups.conf") if path != example]


_resolver: dict[str, Any] = {}


def resolver() -> Any:
    """The ClusterShell group resolver of the user's configuration (made once)."""
    if "r" not in _resolver:
        from ClusterShell.NodeUtils import GroupResolverConfig

        _resolver["r"] = GroupResolverConfig(group_config_paths())
    return _resolver["r"]


def _nodeset(text: str) -> Any:
    import configparser  # loaded by ClusterShell anyway, and not before

    from ClusterShell.NodeSet import NodeSet, NodeSetException
    from ClusterShell.NodeUtils import GroupResolverError, GroupSourceError

    try:
        return NodeSet(text, resolver=resolver())
    except (GroupResolverError, GroupSourceError, configparser.Error) as exc:  # a broken groups.conf
        raise HostsError(_group_error(text, exc)) from None
    except (NodeSetException, ValueError) as exc:
        raise HostsError(f"bad host set {text!r}: {exc}") from None


GROUP_CONFIG_HELP = ("groups come from ClusterShell's groups.conf, as for clush: /etc/clustershell, "
                     "~/.config/clustershell or $CLUSTERSHELL_CFGDIR")


def _group_error(text: str, exc: Exception) -> str:
    found = [path for path in group_config_paths() if os.path.isfile(path)]
    if not found:
        return f"{text}: no group configuration found ({GROUP_CONFIG_HELP})"
    reason = " ".join(str(exc).split())  # configparser's errors span lines
    return f"{text}: group source error: {reason} (read {', '.join(found)})"


def _group(name: str) -> Any:
    """The hosts of -g or -X's GROUP, or of a comma-separated list of them (``-X login,gpu``,
    as clush reads it; ``@login,gpu`` named the host gpu), each of which must name hosts."""
    found = None
    for item in _list(name):
        group = item if item.startswith("@") else f"@{item}"
        nodes = _nodeset(group)
        if not nodes:
            raise HostsError(f"group {group} is unknown or empty ({GROUP_CONFIG_HELP})")
        found = nodes if found is None else found | nodes
    return found


def _list(text: str) -> list[str]:
    """A node set or group list as the items a user checks one by one (``host2,hots3``: a typo
    in the second must not pass for the first), or whole when an operator (``!&^``) joins
    items (``a,b!a`` is read left to right by NodeSet: not the union of its items)."""
    items = [item.strip() for item in _items(text)]
    if len(items) > 1 and any(op in text for op in "!&^"):
        return [text]
    if "" in items:
        raise HostsError(f"empty item in {text!r}")
    return items


def _all_nodes() -> Any:
    import configparser

    from ClusterShell.NodeSet import NodeSet, NodeSetExternalError
    from ClusterShell.NodeUtils import GroupResolverError, GroupSourceError

    try:
        return NodeSet.fromall(resolver=resolver())
    except (GroupResolverError, GroupSourceError, NodeSetExternalError, configparser.Error) as exc:
        raise HostsError(_group_error("-a (all nodes)", exc)) from None


def _hostfile(path: str) -> list[str]:
    """One node set per line; blank lines and ``#`` comments skipped (as clush)."""
    from pathlib import Path  # not before the ssh processes of a plain `mpish ssh HOSTS` start

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise HostsError(f"cannot read the host file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise HostsError(f"the host file {path} is not text") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def _items(text: str) -> list[str]:
    """A node set's comma-separated items, commas inside brackets kept: ``a[1,3],@b`` -> 2."""
    items, depth, start = [], 0, 0
    for at, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:at])
            start = at + 1
    return [*items, text[start:]]


def _named_nodes(text: str) -> Any:
    """A node set given with -w or -x: each ``@group`` in it must name hosts, as -g's must
    (ClusterShell reads an unknown group as no host, which left -x @typo without effect)."""
    for item in _items(text):
        if _RANK_WORD.fullmatch(item):  # (read as a group, "@2 is unknown" said nothing useful)
            raise HostsError(f"{text}: {item} is a host's number: give it as a word of its own (-w @2, "
                             "-x @2), not inside a list of hosts")
        if item.startswith("@") and not any(op in item for op in "!&^"):
            _group(item)
    return _nodeset(text)


# One host name or one range of them, ``host[1-8]`` / ``node[01-16,20]-ib``: read without
# ClusterShell's NodeSet (whose import, with logging and configparser, costs ~8 ms before any
# ssh starts). Digits in the text around the brackets, several items or brackets, groups and
# operators go to NodeSet. The names are NodeSet's: a range is a ClusterShell RangeSet (sorted,
# zero padding kept), a name is left as it is.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ONE_RANGE = re.compile(r"([A-Za-z_.-]*)\[([0-9][0-9,-]*)\]([A-Za-z_.-]*)")


def _one_range(selection: Selection) -> list[str] | None:
    """The hosts of a selection that is one host name or one range (see above), else None."""
    if len(selection.nodes) != 1 or selection != Selection(selection.nodes):
        return None
    text = selection.nodes[0]
    if _PLAIN_NAME.fullmatch(text):
        return [text]
    found = _ONE_RANGE.fullmatch(text)
    if found is None:
        return None
    from ClusterShell.RangeSet import RangeSet, RangeSetException

    prefix, ranges, suffix = found.groups()
    try:
        return [f"{prefix}{index}{suffix}" for index in RangeSet(ranges)] or None
    except (RangeSetException, ValueError):
        return None  # NodeSet says what is wrong


_RANK_WORD = re.compile(r"@[0-9][0-9,/@-]*")  # -w @2, -x @1,@3, -x @2-4: hosts by their number


def select_hosts(selection: Selection) -> list[str]:
    """The hosts of ``selection`` in NodeSet order (the values of :func:`number_hosts`)."""
    return list(number_hosts(selection)[0].values())


def number_hosts(selection: Selection) -> tuple[dict[int, str], int]:
    """(host number -> host, how many hosts were named), in NodeSet order (sorted, as clush
    orders them): the hosts named (HOSTS, -w names, -g, -a, --hostfile) are ``@1``..``@N``,
    and ``-x``/``-X`` leave their numbers vacant, as ``-x`` leaves MPI's ranks
    (``node[1-3] -x @2``: node3 stays ``@3``).
    HostsError if there are none, a node set or group names nothing, or an exclusion leaves
    out none of the hosts named (clush ignores it and runs everywhere: a misspelt exclusion
    must not run where it was meant not to).

    A -w or -x word that is a rank list (``@2``, ``@1,@3``, ``@2-4``) picks or leaves out hosts
    by their number, as the console's ``@2`` does."""
    pick = [word for word in selection.nodes if _RANK_WORD.fullmatch(word)]
    drop = [word for word in selection.exclude if _RANK_WORD.fullmatch(word)]
    named = replace(selection, nodes=tuple(w for w in selection.nodes if w not in pick),
                    exclude=(), exclude_groups=(), pick=0)
    if not named and (pick or drop):
        raise HostsError(f"{(pick + drop)[0]}: a host's number among the hosts given; give the hosts too "
                         "(HOSTS, -w NODES, -g GROUP, -a or --hostfile FILE), or name them")
    numbered = _select(named)
    excluded: set[str] = set()
    leaving = [(f"-x {item}", _named_nodes(item)) for text in selection.exclude if text not in drop
               for item in _list(text)]
    leaving += [(f"-X {item}", _group(item)) for name in selection.exclude_groups for item in _list(name)]
    for flag, nodes in leaving:
        hit = {str(host) for host in nodes}.intersection(numbered)
        if not hit:
            raise HostsError(f"{flag}: none of the hosts given is there (they are {_fold(numbered)}): "
                             "nothing was run")
        excluded |= hit
    picked, dropped = _numbers(pick, len(numbered)), _numbers(drop, len(numbered))
    chosen = {number: host for number, host in enumerate(numbered, 1)
              if host not in excluded and (not pick or number in picked) and number not in dropped}
    if not chosen:
        raise HostsError("no host left to run on")
    if 0 < selection.pick < len(chosen):  # clush's --pick: after -x, each keeps its number
        import random

        chosen = dict(sorted(random.sample(sorted(chosen.items()), selection.pick)))
    return chosen, len(numbered)


def _fold(hosts: Sequence[str]) -> str:
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(hosts))


def _numbers(words: Sequence[str], count: int) -> set[int]:
    """The host numbers of rank words (``@1,@3``), each within 1..``count``."""
    from .ranks import TargetError, parse_ranks

    found: set[int] = set()
    for word in words:
        try:
            numbers = parse_ranks(word.replace("@", ""))
        except TargetError as exc:
            raise HostsError(f"{word}: {exc}") from None
        beyond = sorted(n for n in numbers if not 1 <= n <= count)
        if beyond:
            raise HostsError(f"{word}: there is no host @{beyond[0]}: the hosts given are @1-{count}")
        found |= numbers
    return found


def _select(selection: Selection) -> list[str]:
    simple = _one_range(selection)
    if simple is not None:
        return simple
    from ClusterShell.NodeSet import NodeSet

    chosen = NodeSet(resolver=resolver())
    for text in selection.nodes:
        chosen.update(_named_nodes(text))
    for name in selection.groups:
        chosen.update(_group(name))
    for path in selection.hostfiles:
        lines = _hostfile(path)
        if not lines:  # (else "no host left to run on", as if -x had left them all out)
            raise HostsError(f"the host file {path} names no host (one node set per line, # comments)")
        for line in lines:
            chosen.update(_nodeset(line))
    if selection.all:
        chosen.update(_all_nodes())
    for text in selection.exclude:
        chosen.difference_update(_named_nodes(text))
    for name in selection.exclude_groups:
        chosen.difference_update(_group(name))
    if not chosen and not selection:
        raise HostsError("no host given (HOSTS, -w NODES, -g GROUP, -a or --hostfile FILE)")
    if not chosen and (selection.exclude or selection.exclude_groups):
        raise HostsError("no host left to run on: -x/-X left out every host given")
    if not chosen:  # -w '' (helper-141: "no host left", as if -x had left them out)
        raise HostsError("the hosts given name no host (an empty node set): nothing was run")
    return [str(host) for host in chosen]


def expand_hosts(text: str) -> list[str]:
    """``"node[1-3],login1"`` -> the hosts, in NodeSet order; HostsError if malformed."""
    hosts = [str(h) for h in _nodeset(text)]
    if not hosts:
        raise HostsError(f"no host in {text!r}")
    return hosts


def expand_target_words(spec: str) -> str:
    """Node sets in a target spec (``@node[1-2]``, ``host1,host3``, ``@group``) as
    ``+``-joined host words without ``@``, which :func:`~mpish.shell.ranks.resolve_targets`
    reads; rank sets (``@1-3,7``) and ``@all`` are left as they are."""
    words = []
    for item in (item for word in spec.replace("+", " ").split() for item in _items(word)):
        name = item[1:] if item.startswith("@") else item  # @1,@2 as well as @1,2
        if not name or name[0].isdigit() or name == "all":
            words.append(name)
        elif "[" in name:
            words.extend(expand_hosts(name))
        elif item.startswith("@") and _is_group(name):
            words.extend(str(host) for host in _group(name))
        else:
            words.append(item)  # @host keeps its @: a typo of a group is an error, even in -x
    return "+".join(words)


def _is_group(name: str) -> bool:
    """Whether ``@name`` is a group of the user's configuration (not a host name)."""
    try:
        return bool(_nodeset(f"@{name}"))
    except HostsError:
        return False


def ranks_on(hosts: Sequence[str], by_rank: dict[int, str]) -> set[int]:
    """The ranks whose host is one of ``hosts`` (a short name matches its domain name)."""
    wanted = set(hosts)
    return {rank for rank, host in by_rank.items() if host in wanted or host.split(".")[0] in wanted}
