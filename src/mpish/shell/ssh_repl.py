"""``mpish ssh``'s console: the MPI shell's Repl with hosts instead of ranks, and
``:reconnect`` for hosts lost during the session (an MPI rank cannot be started again).

Apart from :mod:`mpish.shell.ssh_session` so that ``mpish ssh -c`` (and the start of the
console) does not load the Repl before its ssh processes are connecting.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from .interactive import target_words
from .names import HostNames
from .ranks import fold_hosts, resolve_targets
from .repl import ShellRepl


class SshRepl(ShellRepl):
    """The MPI shell's Repl, with hosts instead of ranks in the prompt, targets and output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.console.describe = self.describe  # hosts in the messages, NAME.<host> for :get's copies
        self.console.file_suffix = lambda rank: self.console.peers[rank].host
        self.console.lost_name = lambda rank, host: host  # "host1 lost", not "rank 1 (host1)": helper-141
        self.pruned = set(self.console.lost)  # hosts not reached at the start: targets once reconnected
        # every host's name, those a copy connects in their turn of -f too (and ones that then fail)
        self.known = {**{r: p.host for r, p in self.console.peers.items()}, **self.console.session.later}

    def prompt(self) -> str:
        self.live_targets()
        return f"[{self.target_names()}] {self.console.cwd(self.targets)}#> "

    def target_names(self) -> str:
        """Host names: a rank number means nothing over ssh (:targets said "@2" for host2)."""
        hosts = self.console.hosts
        return fold_hosts([hosts[r] for r in sorted(self.targets)]) or "no host"

    servers = "hosts"  # (each listed with its number, for @2 and :attach @2, as in MPI mode: helper-141)

    def describe(self, ranks: Iterable[int]) -> str:
        """Host names (folded as a node set) for the console's messages, lost ones too (a
        copy's report on a host lost during it said "put F to : rank lost")."""
        peers, known = self.console.peers, self.known
        return fold_hosts(sorted({peers[r].host if r in peers else known[r] for r in ranks
                                  if r in peers or r in known}))

    describe_all = describe  # a rank number means nothing over ssh

    def names(self) -> HostNames:
        peers = self.console.peers
        return HostNames({rank: peer.host for rank, peer in peers.items()}, peers)

    lost_hint = " (:reconnect brings it back)"

    def cmd_reconnect(self, rest: str) -> None:
        """:reconnect [HOSTS]: the lost hosts (all by default) connected again, each with a new shell."""
        lost, live = self.console.lost, self.console.hosts
        ranks = sorted(resolve_targets(target_words(rest), {**live, **lost}) if rest else lost)
        if any(rank in live for rank in ranks):
            raise ValueError(f"{self.describe_all([r for r in ranks if r in live])}: connected, not lost "
                             "(:reconnect is for the hosts :targets lists as lost)")
        if not ranks:
            print("nothing to reconnect: no host was lost")
            sys.stdout.flush()
            return
        self.live_targets()
        print(f"connecting to {self.describe_all(ranks)} (Ctrl-C gives up)...", file=self.err)
        self.err.flush()
        failed = self.console.reconnect(ranks)
        back = [rank for rank in ranks if rank not in failed]
        self.targets |= self.pruned & set(back)  # back among the targets if it was one of them
        self.pruned -= set(back)
        for rank in back:
            print(f"{self.console.peers[rank].host}: reconnected, with a new shell (the lost one's cwd, "
                  "variables and functions are gone)")
        sys.stdout.flush()
        for rank, why in sorted(failed.items()):  # its first line after "mpish:" (ssh's words below it)
            first, _, more = why.partition("\n")
            self.report.say(f"{lost[rank]}: not reconnected: {first}")
            if more:
                print(more, file=sys.stderr, flush=True)
        self.last_status = 1 if failed else 0
