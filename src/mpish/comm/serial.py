"""Objects as bytes for the lowercase methods (``send``, ``bcast``...): mpi4py's ``MPI.pickle``.

mpi4py pickles with ``MPI.pickle``, which a program may set up with its own serializer
(``MPI.pickle.__init__(cloudpickle.dumps, cloudpickle.loads)``, dill) and protocol: a
secure communicator does the same, so a program that ships lambdas or closures keeps
working under ``mpish.secure(comm)`` (a porter found every such setting ignored: the
standard library's pickle refused the lambda). Only authenticated bytes are ever loaded
(a peer holding an authorized key); this module never sees any other.
"""

from __future__ import annotations

from typing import Any

from mpi4py import MPI

_NOTHING = memoryview(b"")


def dumps(obj: Any, dest: int | None = None) -> memoryview:
    """``obj`` as MPI.pickle makes it, as a view for the byte methods (nothing for a send to
    MPI.PROC_NULL: mpi4py pickles nothing there, so an object that cannot be pickled passes)."""
    return _NOTHING if dest == MPI.PROC_NULL else memoryview(MPI.pickle.dumps(obj))


def loads(data: bytes | bytearray | memoryview) -> Any:
    """The object of authenticated bytes, as MPI.pickle loads it."""
    return MPI.pickle.loads(data)
