"""The end of an embedded session that lost a rank signals only the servers still alive."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from mpish.shell import mpi_session
from mpish.shell.session import Peer


class Ended(Exception):
    pass


def test_a_lost_servers_pid_is_never_signalled_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its pid may have been reused by an unrelated process since it died (security review)."""
    ended: list[Any] = []

    def end(launcher: int, servers: list[int], known: list[Any], code: int = 1) -> None:
        ended.append((launcher, servers, known, code))
        raise Ended

    monkeypatch.setattr(mpi_session, "end_embedded_job", end)
    monkeypatch.setattr(mpi_session.Reporter, "say", lambda self, text: None)
    monkeypatch.setattr(mpi_session, "local_process_alive", lambda pid: True)  # launcher 99 is up
    here = socket.gethostname()
    peers = {
        1: Peer(1, None, here, pid=4101),  # type: ignore[arg-type]
        2: Peer(2, None, here, pid=4102, lost="its server process 4102 died"),  # type: ignore[arg-type]
        3: Peer(3, None, "elsewhere", pid=4103),  # type: ignore[arg-type]
    }
    session = mpi_session.MpiSession(link=None, peers=peers, comm=object(), launcher_pid=99)  # type: ignore[arg-type]
    session.exit_status = 255  # -c's status: the lost rank's
    with pytest.raises(Ended):
        session.finish()
    assert ended == [(99, [4101], [], 255)]  # no segments recorded at this session's start
