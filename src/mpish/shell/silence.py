"""Servers that stopped answering: the console's own deadline for a command.

A command's timeout (``-u``, ``:timeout``) is enforced by its server (SIGINT at the deadline,
SIGTERM and SIGKILL :data:`~mpish.shell.server.jobs.KILL_GRACE` seconds apart), and so is a
Ctrl-C's escalation. A server that cannot answer (its process stopped, its host frozen or cut
off by a network partition: the pipe or MPI stays open, nothing arrives) enforced nothing,
and the console waited for it for ever, with every other target's result held back behind
it; clush's own timer returns at the deadline and names the host.

:class:`SilenceWatch` is that timer. A running server is *due* at its command's deadline
(counted from when its ``Run`` was sent) or at the user's third Ctrl-C (the SIGKILL),
whichever comes first. Once due, a server from which nothing at all has arrived (no output, no
credit, no answer) for :data:`ANSWER_GRACE` seconds is given up (one whose login has not even
ended, so that no server runs there to enforce anything, at once: clush's -u counts the login
too): the console declares it lost, says why, and its result is exit 255, as ssh's for a
connection that died. A server that is slow but alive is heard (its Signalled, its output, its
credit) and never given up.

Silence is counted up to the last time the console found nothing more to read
(:meth:`SilenceWatch.listened`), not up to now, and not across a time the console itself was
stopped (a suspended job): a console that could not read for a while
(its terminal paused with Ctrl-S, a slow pipe) has records waiting from servers that did
answer, and must read them before it may call anyone silent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping

ANSWER_GRACE = 10.0  # seconds of silence, once due, before a server is given up
GIVEN_UP = ("its server or host stopped answering (a stopped process, a frozen host, a network "
            "partition?); given up")  # why a silent server was (after "no answer N s after ...: ")
STOPPED_GAP = 5.0  # seconds between two looks of the console's (it looks many times a second): it was stopped
# what the console says at the 1st, 2nd, later Ctrl-C (the server's escalation: server/jobs.py)
ESCALATION_HINTS = ("(SIGINT; Ctrl-C again: SIGTERM, then SIGKILL)", "(SIGTERM; Ctrl-C again: SIGKILL)",
                    f"(SIGKILL; a server that does not answer in {ANSWER_GRACE:g} s is given up)")
TERMINATED_HINT = ("(mpish got SIGTERM: SIGINT to the commands, SIGTERM and SIGKILL a second apart if they "
                   "go on; then what they sent, and exit 143)")
# Under MPICH's mpiexec (hydra), the terminal's Ctrl-C reaches mpiexec, which sends SIGINT to
# every rank and says "Press Ctrl-C again to force abort": the second one is mpiexec's.
HYDRA_HINT = "(SIGINT; a second Ctrl-C goes to mpiexec, which ends the job)"


def escalation_hint(interrupts: int, terminated: bool, environ: Mapping[str, str] = os.environ) -> str:
    """What the console says at its ``interrupts``-th interrupt; after -c's SIGTERM, where no
    Ctrl-C was typed, not "Ctrl-C again" (a clush user's review); under hydra's mpiexec, whose
    own second Ctrl-C ends the job, not mpish's escalation (a new user saw both instructions)."""
    if terminated:
        return TERMINATED_HINT
    if interrupts == 1 and "HYDI_CONTROL_FD" in environ:  # hydra's, in each rank's environment
        return HYDRA_HINT
    return ESCALATION_HINTS[min(interrupts, len(ESCALATION_HINTS)) - 1]


class SilenceWatch:
    """When each running server is due, when each was last heard (module doc)."""

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout  # 0: no deadline of the command's own
        self.due: dict[int, float] = {}
        self.heard: dict[int, float] = {}
        self.since = now
        self.drained = now  # the last time the console had read everything that had arrived
        self.killed_at = 0.0  # the third Ctrl-C (SIGKILL), or 0

    def started(self, ranks: Iterable[int], now: float) -> None:
        """``Run`` was sent to ``ranks`` now."""
        for rank in ranks:
            self.due[rank] = now + self.timeout if self.timeout else math.inf

    def heard_from(self, rank: int, now: float) -> None:
        self.heard[rank] = now

    def listened(self, now: float) -> None:
        """The console looked and nothing had arrived: every server's last word was heard.

        A console that did not look for :data:`STOPPED_GAP` seconds or more was itself stopped,
        most likely with its whole job (``scontrol suspend``, a preemption's suspend, Ctrl-Z of
        the launcher): that time is nobody's silence, so every clock here moves on by it (the
        session was given up at the resume, a Slurm user's review)."""
        gap = now - self.drained
        if gap >= STOPPED_GAP:
            self.since += gap
            self.killed_at = self.killed_at and self.killed_at + gap
            for clock in (self.due, self.heard):
                for rank in clock:
                    clock[rank] += gap
        self.drained = now

    def killed(self, now: float) -> None:
        """The user's third Ctrl-C: every running server was asked to SIGKILL its command."""
        self.killed_at = self.killed_at or now

    def silent(self, running: Iterable[int], unstarted: Collection[int] = ()) -> dict[int, str]:
        """The running servers to give up, each with why (silent up to the last drain);
        ``unstarted``: those whose Hello never came (their login goes on), given up when due."""
        now = self.drained
        gone: dict[int, str] = {}
        unstarted = set(unstarted)
        for rank in running:
            due = self.due.get(rank, math.inf)
            if rank in unstarted and now >= due:  # (a helper-144 trial: 13.4 s for -u 3, clush 3.1 s)
                gone[rank] = (f"timed out after {self.timeout:g} s while logging in (its login had not "
                              "ended: no mpish had started there); given up")
                continue
            if self.killed_at:
                due = min(due, self.killed_at)
            if now - max(due, self.heard.get(rank, self.since)) < ANSWER_GRACE:
                continue
            after = (f"its {self.timeout:g} s timeout" if due != self.killed_at
                     else "the SIGKILL of the third Ctrl-C")
            gone[rank] = f"no answer {ANSWER_GRACE:g} s after {after}: {GIVEN_UP}"
        return gone
