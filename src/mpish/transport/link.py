"""What the shell server and the console need of a transport: whole records by rank.

:class:`~mpish.transport.mpi.MpiLink` (MPI) and :class:`~mpish.transport.pipe.MultiLink`
/ :class:`~mpish.transport.pipe.PipeLink` (ssh pipes) both satisfy this protocol, so
:class:`~mpish.shell.server.ShellServer` and :class:`~mpish.shell.console.Console` run
unchanged on either. A record is one SecureChannel record; the link never looks inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class Link(Protocol):
    """Send and receive whole records, addressed by rank (0 = the console)."""

    rank: int  # this end's rank
    size: int  # console + servers

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        """Queue records for ``dest`` (never blocks for long); TransportBroken if it is gone."""
        ...

    def poll(self) -> tuple[int, memoryview | bytes | bytearray] | None:
        """One record that has arrived, as (source rank, record), or None at once."""
        ...

    def drain(self) -> Iterator[tuple[int, memoryview | bytes | bytearray]]:
        """Every record that has arrived now (bounded, so other work is not starved)."""
        ...

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record was handed to the transport; False on timeout."""
        ...
