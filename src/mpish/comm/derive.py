"""New communicators of a secure one (collective): Dup, Create, Create_group, Split, Split_type.

No new handshake: each new communicator's secret derives from its parent's and a context
every member agrees on (secret.py), so a new communicator costs MPI's own calls only.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from mpi4py import MPI

from .buffers import mpi_error
from .lane import Stats


def made_each(comms: Iterable[Any], make: Callable[[Any], Any]) -> tuple[Any, ...]:
    """``make(c)`` for each of a secure communicator's MPI communicators ``c``. An MPI error
    frees those made already (they leaked), and MPICH's "Too many communicators" says what a
    secure one holds: a porter's 600 Splits never freed passed raw and failed secure at ~500."""
    made: list[Any] = []
    try:
        for comm in comms:
            made.append(make(comm))
    except MPI.Exception as exc:
        for comm in made:
            if comm != MPI.COMM_NULL:
                comm.Free()
        said = [line for line in str(exc).splitlines() if "too many communicators" in line.lower()]
        if not said:
            raise
        raise mpi_error(exc.Get_error_class(), (
            f"MPI ran out of communicators ({said[0].split(': ')[-1]}); each secure communicator "
            "holds 4 MPI communicators: Free() the communicators no longer used (MPICH has room for "
            "about 2,000 per process: some 500 secure ones)")) from None
    return tuple(made)


class Deriving:
    """SecureComm's constructors of new communicators (a mixin; SecureComm sets ``_kinds``:
    ``_kinds["Split"]`` is the plain secure intracommunicator class)."""

    _comms: tuple[Any, ...]
    _keys: Any  # CommSecret (an intercommunicator: InterSecret, its own Dup)
    _stats: Stats
    _derived: int
    _groups_made: dict[tuple[tuple[int, ...], int], int]
    _kinds: dict[str, type]

    def _derive_comm(
        self, comms: tuple[Any, ...], label: bytes, counted: bool = True, kind: type | None = None
    ) -> Any:
        """A derived communicator: its secret from this one's and a context every member agrees on.

        The context names this communicator's derivation count, the call and the parent
        rank of the new rank 0, so disjoint groups of one Split never share keys (secret.py).
        A call collective over some members only (``counted=False``: Create_group) leaves
        the count alone, or those members would derive other keys than the rest in every
        later Dup or Split; its ``label`` is unique by itself (its group and its own count).
        """
        if counted:
            self._derived += 1
        group, parent = comms[0].Get_group(), self._comms[0].Get_group()
        leader = MPI.Group.Translate_ranks(group, [0], parent)[0]
        group.Free()
        parent.Free()
        count = self._derived if counted else 0  # counted contexts start at 1: never 0
        context = struct.pack(">QQ", count, leader) + label
        keys = self._keys.child(context, comms[0].Get_rank(), comms[0].Get_size())
        return (kind or self._kinds["Split"])(comms, keys, self._stats)

    def Dup(self, info: Any = None) -> Any:
        comms = made_each(self._comms, lambda c: c.Dup())
        return self._derive_comm(comms, b"dup", kind=type(self))  # a topology's Dup keeps it (MPI)

    Clone = Dup

    def Dup_with_info(self, info: Any) -> Any:
        return self.Dup(info)

    def Create(self, group: Any) -> Any:
        """The communicator of ``group`` (collective over this one; COMM_NULL outside the group)."""
        return self._child(made_each(self._comms, lambda c: c.Create(group)), b"create")

    def Create_group(self, group: Any, tag: int = 0) -> Any:
        """As ``Create``, collective over the members of ``group`` only.

        Its keys' context is the group (its members' ranks here), the tag and how many
        Create_group of that group and tag this rank made: every member made the same ones,
        and two calls never share keys."""
        comms = made_each(self._comms, lambda c: c.Create_group(group, tag))
        if comms[0] == MPI.COMM_NULL:
            return comms[0]  # MPI's null of mpi4py's class (Intracomm), as raw mpi4py returns
        parent = self._comms[0].Get_group()
        members = tuple(MPI.Group.Translate_ranks(group, list(range(group.Get_size())), parent))
        parent.Free()
        made = self._groups_made.get((members, tag), 0) + 1
        self._groups_made[(members, tag)] = made
        label = b"create_group" + struct.pack(f">qQ{len(members)}i", tag, made, *members)
        return self._derive_comm(comms, label, counted=False)

    def Split(self, color: int = 0, key: int = 0) -> Any:
        comms = made_each(self._comms, lambda c: c.Split(color, key))
        return self._child(comms, b"split" + struct.pack(">q", color))

    def Split_type(self, split_type: int, key: int = 0, info: Any = MPI.INFO_NULL) -> Any:
        comms = made_each(self._comms, lambda c: c.Split_type(split_type, key, info))
        return self._child(comms, b"split_type" + struct.pack(">q", split_type))

    def _child(self, comms: tuple[Any, ...], label: bytes, kind: type | None = None) -> Any:
        if comms[0] == MPI.COMM_NULL:
            self._derived += 1  # stay in step with the ranks that got a communicator
            return comms[0]  # MPI's null, of the class raw mpi4py returns (Intracomm, Cartcomm...)
        return self._derive_comm(comms, label, kind=kind)
