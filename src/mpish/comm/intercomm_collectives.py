"""The building blocks of a secure intercommunicator's collectives (intercomm.py has the
collectives and their theory of operation): the exchange with every rank of the other group,
the root's sends to it, a receive from a root in it, and the fold in rank order.

No rank left behind: a rank whose arguments are wrong still takes part, with abort notices
where its blocks were due, and receives and drops what was sent to it; a rank that receives
a notice (or a record it cannot use) receives and drops the rest of the collective's
records, then raises: nothing is left queued for a later call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from ..wire.errors import RemoteProtocolError
from .buffers import byte_view, typed_spec
from .collectives import ABORT_TAG, COLL_TAG
from .lane import Lane, wait_all


def _folder(typed: Any, size: int, op: Any, what: str) -> tuple[Callable[[int, Any], None], list[bytearray]]:
    """A receiver folding records of ``size`` bytes, in rank order, with ``op`` on the datatype of
    buffer argument ``typed``; and the list that holds the result once all are in."""
    acc: list[bytearray] = []

    def fold(peer: int, data: Any) -> None:  # Reduce_local(in, inout): inout = in op inout
        if len(data) != size:
            raise RemoteProtocolError(f"{what}: {len(data)} bytes from rank {peer}, expected {size}")
        incoming = bytearray(data)
        if acc:
            op.Reduce_local(typed_spec(typed, acc[0], size), typed_spec(typed, incoming, size))
            acc[0] = incoming
        else:
            acc.append(incoming)

    return fold, acc


class InterCollectives:
    """The building blocks of SecureIntercomm's collectives (a mixin of intercomm.py's Intercomm)."""

    _coll: Lane
    _c_recv_into: Any
    _c_recv_bytes: Any

    # -- building blocks

    def _remotes(self) -> range:
        return range(self._coll.size)

    def _receive_each(self, receive: Callable[[int, Any], None]) -> None:
        """Hand the record of each rank of the other group, in rank order, to ``receive``; after
        an error the rest are received and dropped, then the first error raises."""
        error: BaseException | None = None
        for peer in self._remotes():
            try:
                if error is None:
                    receive(peer, self._c_recv_bytes(peer))
                else:
                    self._coll.recv(peer, MPI.ANY_TAG, None)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def _exchange_each(self, blocks: list[memoryview] | None, receive: Callable[[int, Any], None]) -> None:
        """Send ``blocks[k]`` to rank k of the other group (None: abort notices) and hand the
        record of each to ``receive`` (:meth:`_receive_each`); nothing is left behind."""
        requests: list[Any] = []
        for peer in self._remotes():
            if blocks is None:
                requests.extend(self._coll.isend(memoryview(b""), peer, ABORT_TAG)[0])
            else:
                requests.extend(self._coll.isend(blocks[peer], peer, COLL_TAG)[0])
        try:
            self._receive_each(receive)
        finally:
            wait_all(requests)

    def _send_each(self, make: Callable[[], list[memoryview]]) -> None:
        """The root: block k of ``make()`` to rank k of the other group; abort notices if it raises."""
        try:
            blocks = make()
        except Exception:
            for peer in self._remotes():
                self._coll.send(memoryview(b""), peer, ABORT_TAG)
            raise
        requests: list[Any] = []
        for peer in self._remotes():
            requests.extend(self._coll.isend(blocks[peer], peer, COLL_TAG)[0])
        wait_all(requests)

    def _recv_from_root(self, recvbuf: Any, root: int) -> None:
        """This rank's block from the root in the other group; dropped if ``recvbuf`` is wrong."""
        try:
            sink = byte_view(recvbuf, writable=True)
        except Exception:
            self._coll.recv(root, MPI.ANY_TAG, None)
            raise
        self._c_recv_into(sink, root)

    def _failed_exchange(self) -> None:
        """This rank's arguments were wrong: take part with abort notices (the caller raises)."""
        with contextlib.suppress(Exception):
            self._exchange_each(None, lambda peer, data: None)
