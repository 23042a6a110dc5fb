"""What a console holds of a started session, whatever carries it (MPI or ssh).

:class:`Session` is the console's view: the link to the shell servers, one
:class:`Peer` per server with its secure channel, and what was refused at the start.
``shell/mpi_session.py`` starts one over MPI, ``shell/ssh_session.py`` over ssh; the
console (``shell/console.py``) only uses what is defined here.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from mpish.transport.link import Channel, Link
from mpish.wire.message import Fields

TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached the console: end the session as on ``exit``, then exit 128+signum.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way
    swallows it; the shell's main catches it, closes every channel and finalizes MPI.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_terminated(signum: int, frame: object) -> None:
    """A server's SIGTERM (the launcher ending the job) ends its session: command and shell killed."""
    del frame
    signal.signal(signum, signal.SIG_IGN)
    raise Terminated(signum)


def end_on_termination() -> None:
    """The console ends the whole job on SIGTERM and SIGHUP (raises :class:`Terminated`).

    Without this the console died at once: hydra never heard of its end and, with the
    console's connection gone unfinalized, mpiexec and its proxy stayed forever. The
    first signal starts the orderly end; more of them during it are ignored (the end is
    bounded in time). After a hangup the terminal is gone: output goes to /dev/null.
    """

    def handler(signum: int, frame: object) -> None:
        del frame
        for sig in TERMINATION_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if signum == signal.SIGHUP:
            quiet_after_hangup()
        raise Terminated(signum)

    for sig in TERMINATION_SIGNALS:
        signal.signal(sig, handler)


def quiet_after_hangup() -> None:
    """stdout and stderr, where they were the terminal that hung up, now /dev/null: writing
    the end's report there would fail (EIO) half-way."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            if os.isatty(fd):
                os.dup2(null, fd)
        os.close(null)


INTERRUPTED_CONNECTING = "interrupted while connecting"  # a reconnect the user gave up (Ctrl-C)
NOT_REACHED = "not reached at the start"  # Peer.lost of an ssh host down when the console began


class Peer(Fields):
    """A shell server as the console sees it."""

    __match_args__ = ("rank", "channel", "host", "cwd", "alive", "ready", "pid", "lost")

    def __init__(self, rank: int, channel: Channel, host: str, cwd: str = "", alive: bool = True,
                 ready: bool = False, pid: int = 0, lost: str = "") -> None:
        self.rank = rank
        self.channel = channel  # a SecureChannel over MPI, the pipe link's plain channel over ssh
        self.host = host
        self.cwd = cwd
        self.alive = alive
        self.ready = ready
        self.pid = pid  # from its Hello
        self.lost = lost  # why it was lost during the session ("" = not lost)


class Session(Fields):
    """The console's side of a started session (its subclasses add their own fields)."""

    __match_args__: ClassVar[tuple[str, ...]] = ("link", "peers", "refused")

    def __init__(self, link: Link, peers: dict[int, Peer], refused: dict[int, str] | None = None) -> None:
        self.link = link
        self.peers = peers
        self.refused: dict[int, str] = {} if refused is None else refused  # rank -> reason

    # The console waits for each server's close record before finish(); not when finish()
    # itself waits until the servers have ended (ssh: each ssh process exits after its server).
    awaits_close: ClassVar[bool] = True
    # servers connected only when their turn of -f comes (ssh -c: rank -> host; join())
    later: Mapping[int, str] = MappingProxyType({})
    exit_status = 1  # what mpish exits with, for a session whose finish() must end the process

    def failure_notice(self) -> bool:
        """True (once per notice) if the launcher reported a failed server; none by default."""
        return False

    def abort(self) -> None:
        """End the session at once after its transport broke (no orderly close possible)."""
        self.finish()

    def give_up(self, rank: int) -> None:
        """A server that stopped answering was declared lost (silence.py): end what can be
        ended of it, so that it cannot come back half-way; nothing by default."""

    def greeted(self, rank: int) -> None:
        """A joining server's Hello reached the console (its GREETING ended); nothing by default."""

    def join(self, rank: int, first: bytes | None) -> str:
        """Connect a server of ``later`` now, ``first`` (its command, if any) sent with its code:
        "" if it is connecting (its Peer, not ready yet, is in ``peers``), else why it cannot."""
        del first
        return f"rank {rank} cannot be connected during the session"

    def overdue(self, now: float) -> dict[int, str]:
        """Joining servers whose Hello did not come in time, each with why (given up)."""
        del now
        return {}

    def release(self, rank: int) -> None:
        """A joined server's turn is over (done, or lost): hang up its connection now, so that
        at most -f are open at once; its close record was queued."""

    def closing(self) -> int:
        """Released connections not ended yet: they still count against -f."""
        return 0

    def finish(self) -> None:
        """End the session once every channel is closed."""
        raise NotImplementedError
