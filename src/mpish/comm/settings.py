"""SecureComm's local settings and queries: nothing crosses the network, so nothing to protect.

Each is answered by the internal duplicate that carries the point-to-point records
(``_comms[0]``), which has the wrapped communicator's name (``setup.py``) and MPI's
predefined attributes (``TAG_UB``: every tag up to it is usable, each record carries its
tag in its authenticated header). The error handler is read, not set: mpish relies on MPI's
errors being returned (an oversized forged message is an ``ERR_TRUNCATE`` it drops), so
``Set_errhandler`` stays unsupported rather than let ``ERRORS_ARE_FATAL`` turn a forged
message into the end of the job.
"""

from __future__ import annotations

import sys
from typing import Any

from mpi4py import MPI

from .buffers import Unsupported, mpi_error


class LocalSettings:
    """Topology, info, name, attributes and error handler of a SecureComm (a mixin)."""

    _comms: tuple[Any, Any, Any, Any]
    _freed = False

    def _alive(self) -> None:
        """MPI's ERR_COMM once freed, as a freed mpi4py communicator (MPI.COMM_NULL) raises it."""
        if self._freed:
            raise mpi_error(MPI.ERR_COMM, "this secure communicator was freed")

    def Get_topology(self) -> int:
        self._alive()
        return int(MPI.UNDEFINED)

    topology = property(Get_topology)
    is_topo = property(lambda self: False, doc="False: no virtual topology (Create_cart makes one)")

    def Cart_map(self, dims: Any, periods: Any = None) -> int:
        """MPI's placement on a grid (computed locally: nothing is sent)."""
        return int(self._comms[0].Cart_map(dims, periods))

    def Graph_map(self, index: Any, edges: Any) -> int:
        """MPI's placement on a graph (computed locally: nothing is sent)."""
        return int(self._comms[0].Graph_map(index, edges))

    def Get_info(self) -> Any:
        return self._comms[0].Get_info()

    def Set_info(self, info: Any) -> None:
        for comm in self._comms:
            comm.Set_info(info)

    info = property(Get_info, Set_info)

    def Get_attr(self, keyval: int) -> Any:
        return self._comms[0].Get_attr(keyval)

    def Set_attr(self, keyval: int, attrval: Any) -> None:
        self._comms[0].Set_attr(keyval, attrval)

    def Delete_attr(self, keyval: int) -> None:
        self._comms[0].Delete_attr(keyval)

    def Get_errhandler(self) -> Any:
        return self._comms[0].Get_errhandler()

    def Set_errhandler(self, errhandler: Any) -> None:
        """``MPI.ERRORS_RETURN`` (mpi4py's exceptions) is what mpish runs with: accepted, a no-op.
        Any other handler is Unsupported (module doc: a forged message must not end the job)."""
        if errhandler != MPI.ERRORS_RETURN:
            raise Unsupported(
                "mpish.secure runs with MPI.ERRORS_RETURN (errors raise MPI.Exception): another error "
                "handler would let a forged oversized message end the job"
            )

    def Get_name(self) -> str:
        return str(self._comms[0].Get_name())

    def Set_name(self, name: str) -> None:
        self._comms[0].Set_name(name)

    name = property(Get_name, Set_name)


_AFTER_FREE = frozenset({"Free", "free", "Disconnect"})  # each raises ERR_COMM itself (_alive)
# known without MPI: a freed one raises for them as MPI.COMM_NULL's, but to the program only (a
# persistent request made before Free still starts, and mpish's code of it reads them)
_KEPT_VALUES = frozenset({"rank", "size", "is_topo"})


def _freed_call(*args: Any, **kwargs: Any) -> Any:
    raise mpi_error(MPI.ERR_COMM, "this secure communicator was freed (Free)")


_FREED: dict[str, type] = {}  # qualified class name -> its freed class


def freed_kind(kind: type) -> type:
    """The class a secure communicator of class ``kind`` takes at ``Free``: each of its public
    methods raises MPI's ERR_COMM, as those of mpi4py's freed communicator (MPI.COMM_NULL) do.
    Without it a call reached MPI with the freed duplicates underneath, MPI.COMM_NULL, whose
    error handler is fatal under Open MPI: the whole job was killed (helper-128). A class of
    its own costs the calls of a live communicator nothing."""

    def __getattribute__(self: Any, name: str) -> Any:
        if name in _KEPT_VALUES and not sys._getframe(1).f_globals.get("__name__", "").startswith("mpish."):
            _freed_call()
        value = object.__getattribute__(self, name)
        if name[:1] == "_" or name in _AFTER_FREE or not callable(value):
            return value
        return _freed_call

    key = f"{kind.__module__}.{kind.__qualname__}"
    if key not in _FREED:
        namespace = {"__getattribute__": __getattribute__, "__module__": kind.__module__,
                     "__qualname__": kind.__qualname__}
        _FREED[key] = type(kind.__name__, (kind,), namespace)
    return _FREED[key]
