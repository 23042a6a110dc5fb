"""What the shell server and the console need of a transport and of a channel.

A :class:`Link` moves whole records, addressed by rank (0 = the console). Two
implementations: :class:`~mpish.transport.mpi.MpiLink` (one record per MPI message) and
the pipe links of :mod:`mpish.transport.pipe` (:class:`~mpish.transport.pipe.PipeLink`
for one peer, :class:`~mpish.transport.pipe.MultiLink` for the console's N hosts over
ssh). :class:`~mpish.shell.server.ShellServer` and :class:`~mpish.shell.console.Console`
run unchanged on either; one conformance suite (``tests/unit/test_link_conformance.py``)
checks every implementation against this protocol. A record is opaque to the link.

Waiting is part of the protocol, because each transport waits best in its own way:
a pipe link sleeps in ``poll`` on its descriptors (an idle ssh server answers at once),
the MPI link sleeps for its backoff (MPICH's blocking calls would spin a core). Callers
that also wait for descriptors of their own (the server's bash pipes) pass them to
:meth:`Link.wait`, which watches them in the same sleep.

A :class:`Channel` is what a session does with its records: over MPI always a
:class:`~mpish.wire.channel.SecureChannel`; over ssh the pipe links' plain channel
(:meth:`mpish.transport.pipe.PipeLink.plain_channel`: ssh already authenticates and
encrypts, THREAT-MODEL "Over SSH"), which only a pipe link can make.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from mpish.wire.events import Event

Record = memoryview | bytes | bytearray
Ready = tuple[list[int], list[int]]  # (readable, writable) among the descriptors given to wait


class Link(Protocol):
    """Send and receive whole records, addressed by rank (0 = the console)."""

    rank: int  # this end's rank
    size: int  # console + servers

    def send_all(self, dest: int, records: list[bytes | bytearray] | list[bytearray]) -> None:
        """Queue records for ``dest`` in order (never blocks for long); TransportBroken if it is gone."""
        ...

    def poll(self) -> tuple[int, Record] | None:
        """One record that has arrived, as (source rank, record), or None at once."""
        ...

    def drain(self) -> Iterator[tuple[int, Record]]:
        """Every record that has arrived now (bounded, so other work is not starved)."""
        ...

    def wait(self, timeout: float, read_fds: Sequence[int] = (), write_fds: Sequence[int] = ()) -> Ready:
        """Sleep until a record may have arrived, one of the given descriptors is ready, or
        ``timeout`` seconds passed; return the ready descriptors among those given.

        It may return early (the MPI link returns after its backoff): callers poll, then
        wait again. It never consumes a record.
        """
        ...

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record was handed to the transport; False on timeout."""
        ...

    def close(self) -> None:
        """Deliver what is queued (bounded: about a second), then release the transport
        (pipes: the peer reads every record written, then sees the end)."""
        ...


class Channel(Protocol):
    """What the console and the shell server use of a channel (see the module doc)."""

    drop_forged: bool  # a bad record is dropped and the channel goes on (message transports)
    remote_static: bytes | None  # the peer's static key once known (never, over ssh)

    @property
    def is_open(self) -> bool: ...

    def initiate(self) -> list[bytes | bytearray]: ...

    def records_to_send(self) -> list[bytes | bytearray]: ...

    def send(self, data: bytes | bytearray | memoryview, channel: int = 0) -> list[bytes | bytearray]: ...

    def close(self) -> list[bytes | bytearray]: ...

    def receive_record(self, record: Record) -> list[Event]: ...
