"""How a command ended on one server, and how the console names servers: by rank or by host.

:class:`Result` is one server's end of a command. The sinks (``shell/grouping.py``) name
servers through a :class:`ServerNames`: the MPI shell's :class:`RankNames` (``@1-3``,
``1: ``) or, with ``--label host``, :class:`RankHostNames`; ``mpish ssh``'s
:class:`HostNames` (``host[1-3]`` folded by ClusterShell, ``host1: ``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mpish.wire.message import Frozen, frozen

from .ranks import fold_hosts, format_ranks

if TYPE_CHECKING:
    from .session import Peer

FAILED = 255  # the exit status of a host that could not run the command, as with ssh
TIMED_OUT = 255  # of a command that reached -u or :timeout, as clush -S counts a "command timeout"
TIMEOUT_TEXT = "command timeout"  # clush's words for it, over MPI and ssh alike
RANK_LOST = "rank lost"  # the Console's error for a rank that went away during a command


@frozen
class Result(Frozen):
    """How a command ended on one rank."""

    rank: int
    host: str
    exit: int
    signal: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    error: str = ""
    peak_rss_kib: int = 0
    note: str = ""  # the command ran, and the shell had to be replaced (protocol.Done)
    interrupted: bool = False  # the console sent it the user's Ctrl-C (SIGINT)


def status_of(result: Result) -> int:
    """The exit status a result counts as: the remote one, or TIMED_OUT (Ctrl-C's 130 and a
    timeout's SIGINT are told apart, as clush exits 255 after a "command timeout")."""
    return TIMED_OUT if result.timed_out else result.exit


class ServerNames(Protocol):
    """How the sinks name servers and report their results: by rank (MPI) or by host (ssh)."""

    errors_at_once: bool  # print ``host: error`` as a result comes, not in the status lines

    def label(self, ranks: Iterable[int]) -> str:
        """Several servers: group titles and status lines."""
        ...

    def prefix(self, rank: int) -> str:
        """One server: the prefix of its live lines."""
        ...

    def result(self, result: Result) -> Result:
        """A result as it is reported."""
        ...

    def record(self, result: Result) -> dict[str, Any]:
        """The first fields of a JSON record: those that name the server."""
        ...


class RankNames:
    """The MPI shell's names: ``@1-3``, ``1: ``, JSON with rank and host."""

    errors_at_once = False

    def label(self, ranks: Iterable[int]) -> str:
        return f"@{format_ranks(ranks)}"

    def prefix(self, rank: int) -> str:
        return f"@{rank}"  # as -L labels a line and as a target is written

    def result(self, result: Result) -> Result:
        return result

    def record(self, result: Result) -> dict[str, Any]:
        return {"rank": result.rank, "host": result.host}


class RankHostNames(RankNames):
    """The MPI shell's names with ``--label host``: servers named by their host, folded as a
    node set (``node[1-2]``); JSON as RankNames. A host running several of the servers is
    named alone where all of them are meant, else with the ranks meant (``vm@2``,
    ``vm@[1,3]``), so that its ranks' different outputs are told apart."""

    def __init__(self, hosts: Mapping[int, str]) -> None:
        self.hosts = hosts
        self._ranks_on: dict[str, set[int]] = {}
        for rank, host in hosts.items():
            self._ranks_on.setdefault(host, set()).add(rank)

    def _host(self, rank: int) -> str:
        return self.hosts.get(rank, f"rank{rank}")

    def label(self, ranks: Iterable[int]) -> str:
        meant: dict[str, set[int]] = {}
        for rank in ranks:
            meant.setdefault(self._host(rank), set()).add(rank)
        whole = [host for host, some in meant.items() if some >= self._ranks_on.get(host, some)]
        parts = [fold_hosts(whole)] if whole else []
        for host in sorted(set(meant) - set(whole)):
            some = format_ranks(meant[host])
            parts.append(f"{host}@{some}" if len(meant[host]) == 1 else f"{host}@[{some}]")
        return ",".join(parts)

    def prefix(self, rank: int) -> str:
        host = self._host(rank)
        return host if len(self._ranks_on.get(host, ())) <= 1 else f"{host}@{rank}"


class HostNames:
    """``mpish ssh``'s names (rank r is host r): ``host[1-3]``, ``host1: ``, JSON with rank and host.

    A rank lost during a command is reported with the reason its ssh pipe ended, exit 255;
    a result of a host that never joined (not in ``peers``) is reported as given.
    """

    errors_at_once = True

    def __init__(self, hosts: Mapping[int, str], peers: Mapping[int, Peer]) -> None:
        self.hosts, self.peers = hosts, peers

    def label(self, ranks: Iterable[int]) -> str:
        return fold_hosts(self.hosts[rank] for rank in ranks)

    def prefix(self, rank: int) -> str:
        return self.hosts[rank]

    def result(self, result: Result) -> Result:
        peer = self.peers.get(result.rank)
        if peer is None:
            return result
        if result.error == RANK_LOST:
            why = peer.lost or "connection lost"
            return Result(result.rank, result.host, FAILED, 0, result.seconds, error=why)
        return result

    def record(self, result: Result) -> dict[str, Any]:
        return {"rank": result.rank, "host": result.host}


_SSH_STDERR = "\n--- ssh stderr ---\n"  # what transport/ssh.py puts before ssh's own stderr
K = TypeVar("K")


def fold_reasons(failed: Mapping[str, str]) -> list[str]:
    """``host: why`` per failed host, identical reasons once under a node set.

    A reason that names its host (ssh's ``connect to host node3``) is compared with the
    host's name replaced by ``%h`` (clush's placeholder for it); a group of several hosts
    is printed with ``<host>`` there (``ssh <host> true``: a clush user read ``%h`` as a
    literal), one host with its own name.
    """
    return [f"{fold_hosts(hosts)}{f' ({len(hosts)})' if len(hosts) > 1 else ''}: {why}"
            for hosts, why in fold_by_reason([(host, host, why) for host, why in failed.items()])]


def fold_by_reason(failed: Iterable[tuple[K, str, str]]) -> list[tuple[list[K], str]]:
    """(keys, reason) per distinct reason of (key, host, reason) items, in first-seen order; a
    reason naming its host is compared with ``%h`` for it (see :func:`fold_reasons`)."""
    by_reason: dict[str, list[tuple[K, str]]] = {}
    for key, host, why in failed:
        shape = re.sub(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", "%h", why) if host else why
        by_reason.setdefault(shape, []).append((key, host))
    folded = []
    for shape, members in by_reason.items():
        first = members[0][1]
        why = shape.replace("%h", first if len(members) == 1 else "<host>")  # (each host's name)
        ours, marker, theirs = why.partition(_SSH_STDERR)
        if marker and len(members) > 1:  # ssh's own words stay as ssh wrote them, for the first host
            why = f"{ours}\n--- ssh stderr of {first} (the others' the same, of their own name) ---\n"
            why += theirs.replace("%h", first)
        folded.append(([key for key, _ in members], why))
    return folded
