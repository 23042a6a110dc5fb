"""What a secure communicator does not offer: every other public name of mpi4py's
communicator classes raises :class:`~mpish.comm.buffers.Unsupported` (both
NotImplementedError and AttributeError), never a silent fallback to plaintext."""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

from .buffers import Unsupported


class _Unsupported:
    """An mpi4py name a secure communicator does not offer: reading it raises :class:`Unsupported`.

    One per name, on the class (not a ``__getattr__``: a class with one gets no specialised
    attribute lookups from CPython, which cost every method call of the hot paths ~0.2 us).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        raise Unsupported(
            f"{self.name} is not supported by mpish.secure (only authenticated operations are offered; "
            "use comm.raw explicitly for unprotected traffic)"
        )


def refuse_unoffered(cls: type) -> None:
    """Every public name of mpi4py's communicator classes that ``cls`` lacks raises Unsupported."""
    for kind in (MPI.Intracomm, MPI.Intercomm, MPI.Cartcomm, MPI.Graphcomm, MPI.Distgraphcomm):
        for name in dir(kind):
            if not name.startswith("_") and not hasattr(cls, name):
                setattr(cls, name, _Unsupported(name))
