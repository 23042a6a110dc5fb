"""``mpish ssh``'s console: the MPI shell's Repl with hosts instead of ranks.

Apart from :mod:`mpish.shell.ssh_session` so that ``mpish ssh -c`` (and the start of the
console) does not load the Repl before its ssh processes are connecting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .interactive import Repl
from .names import HostNames, fold_hosts


def expand_target_words(spec: str) -> str:
    """Node sets in a target spec (``@node[1-2]``, ``host1,host3``) as ``+``-joined words, which
    :func:`~mpish.shell.ranks.resolve_targets` reads (a host with or without ``@``)."""
    from mpish.shell.nodes import expand_target_words as expand

    return expand(spec)


class SshRepl(Repl):
    """The MPI shell's Repl, with hosts instead of ranks in the prompt, targets and output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.console.describe = self.describe  # hosts in the messages, NAME.<host> for :get's copies
        self.console.file_suffix = lambda rank: self.console.peers[rank].host

    def prompt(self) -> str:
        hosts = self.console.hosts
        self.targets = frozenset(r for r in self.targets if r in hosts)
        names = [hosts[r] for r in sorted(self.targets)]
        return f"[{fold_hosts(names) if names else 'no host'}] {self.console.cwd(self.targets)}#> "

    def describe(self, ranks: Iterable[int]) -> str:
        """Host names (folded as a node set) for the console's messages."""
        hosts = self.console.hosts
        return fold_hosts([hosts[r] for r in ranks if r in hosts])

    def handle(self, line: str) -> None:
        if line.startswith("@"):
            spec, _, rest = line.partition(" ")
            words = expand_target_words(spec)  # its first word may keep its @ (nodes.py)
            line = f"{words if words.startswith('@') else '@' + words} {rest}"
        super().handle(line)

    def cmd_targets(self, rest: str) -> None:
        super().cmd_targets(expand_target_words(rest) if rest else rest)

    def names(self) -> HostNames:
        peers = self.console.peers
        return HostNames({rank: peer.host for rank, peer in peers.items()}, peers)
