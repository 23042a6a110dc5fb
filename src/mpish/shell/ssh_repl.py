"""``mpish ssh``'s console: the MPI shell's Repl with hosts instead of ranks.

Apart from :mod:`mpish.shell.ssh_session` so that ``mpish ssh -c`` (and the start of the
console) does not load the Repl before its ssh processes are connecting.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .interactive import Repl
from .names import HostNames, fold_hosts


class SshRepl(Repl):
    """The MPI shell's Repl, with hosts instead of ranks in the prompt, targets and output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.console.describe = self.describe  # hosts in the messages, NAME.<host> for :get's copies
        self.console.file_suffix = lambda rank: self.console.peers[rank].host

    def prompt(self) -> str:
        hosts = self.console.hosts
        self.live_targets()
        names = [hosts[r] for r in sorted(self.targets)]
        return f"[{fold_hosts(names) if names else 'no host'}] {self.console.cwd(self.targets)}#> "

    def describe(self, ranks: Iterable[int]) -> str:
        """Host names (folded as a node set) for the console's messages."""
        hosts = self.console.hosts
        return fold_hosts([hosts[r] for r in ranks if r in hosts])

    def names(self) -> HostNames:
        peers = self.console.peers
        return HostNames({rank: peer.host for rank, peer in peers.items()}, peers)
