"""Which of the console's servers died: their pids on this host, mpiexec's failure notice.

:class:`FailureWatch` is asked in every round of the console's loop (cheaply: it looks at
the pids every :data:`PID_CHECK` seconds). A server whose process is gone is read first
(what it sent before it ended, its close record say, is handled) and is lost only if its
conversation had not closed: under Open MPI with fault tolerance, once another rank has
died, a server answers the close and leaves without the final barrier (``RankFailed``),
often before the console has read that record. A failure notice from mpiexec that no
dead server of this host explains within :data:`FAILURE_GRACE` seconds ends the session
(:class:`~mpish.wire.errors.TransportBroken`): which rank failed, and MPI's state, are unknown.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping

from mpish.transport.procfs import alive as local_process_alive
from mpish.wire.errors import TransportBroken

from .conversation import ConsoleState, Machine
from .session import Peer, Session

FAILURE_GRACE = 2.0  # seconds to find the dead server after a failure notice
PID_CHECK = 0.5  # seconds between looks at the servers' pids while waiting
READ_BEFORE_LOSS = 16  # reads (of up to 64 records each) before a server whose pid is gone is lost


class FailureWatch:
    """The console's look at its servers' health (module doc)."""

    def __init__(self, session: Session, peers: Mapping[int, Peer],
                 machines: Mapping[int, Machine[ConsoleState]]) -> None:
        self.session, self.peers, self.machines = session, peers, machines
        self._next_pid_check = 0.0
        self._suspect_since = 0.0  # when a failure notice came that no dead server explains yet

    def check(self, read: Callable[[], bool], lose: Callable[[int, str], None]) -> None:
        """``read`` handles what has arrived (True if anything did); ``lose(rank, why)``
        reports a dead server."""
        now = time.monotonic()
        if self.session.failure_notice():
            self._suspect_since = self._suspect_since or now
        elif now < self._next_pid_check and not self._suspect_since:
            return
        self._next_pid_check = now + PID_CHECK
        dead = self._dead_here()
        if dead:  # what a server sent before it ended is read first: its close record, say
            for _ in range(READ_BEFORE_LOSS):
                if not read():
                    break
            dead = self._dead_here()
        for rank in dead:
            lose(rank, f"its server process {self.peers[rank].pid} died")
        if dead:
            self._suspect_since = 0.0
        elif self._suspect_since and now - self._suspect_since > FAILURE_GRACE:
            self._suspect_since = 0.0
            if not any(peer.lost for peer in self.peers.values()):
                raise TransportBroken("mpiexec reports that a process of the job failed")

    def _dead_here(self) -> list[int]:
        """The servers on this host whose process is gone and whose conversation had not closed."""
        here = socket.gethostname()
        return [rank for rank, peer in self.peers.items()
                if peer.alive and peer.pid and peer.host == here
                and self.machines[rank].state is not ConsoleState.CLOSED
                and not local_process_alive(peer.pid)]
