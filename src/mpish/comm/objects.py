"""The object forms of the collectives (``bcast``, ``gather``, ``scatter``, ``allgather``,
``alltoall``): pickled objects as authenticated records, on collectives.py's building blocks.

Same rules as collectives.py (its theory of operation). Objects are unpickled only from
authenticated records (a peer holding an authorized key). No rank left behind: every object
is pickled before any record is sent, so a rank whose object cannot be pickled (or whose
list has the wrong length) sends abort notices where its blocks were due; a rank that
receives a notice, or a block it cannot unpickle, still receives (and drops) the rest of the
collective's records, then raises. ``None`` for the list of ``scatter``/``alltoall`` sends
None to every rank, as mpi4py does.
"""

from __future__ import annotations

from typing import Any

from .alltoall import AllToAll
from .collectives import COLL_TAG, _dumps, _loads
from .lane import wait_all


class ObjectCollectives(AllToAll):
    """The lowercase collectives of SecureComm (mixin over :class:`AllToAll`)."""

    def _abort_bcast(self, root: int) -> None:
        """Take part in a broadcast from ``root`` that failed here: pass an abort notice on."""
        parent, children = self._tree(root)
        self._abort(children, [] if parent is None else [parent])

    def _items(self, sendobj: Any, what: str) -> list[memoryview]:
        items = [None] * self.size if sendobj is None else list(sendobj)
        if len(items) != self.size:
            raise ValueError(f"{what}: expected {self.size} items, got {len(items)}")
        return [_dumps(item) for item in items]

    def _recv_objects(self, sources: list[int]) -> dict[int, Any]:
        """The object of each source, in order; after an error the rest is received and dropped."""
        objects: dict[int, Any] = {}
        error: BaseException | None = None
        for source in sources:
            try:
                if error is None:
                    objects[source] = _loads(self._c_recv_bytes(source))
                else:
                    self._coll.recv(source, COLL_TAG, None)
            except Exception as exc:  # an abort notice, a wrong record, an object that cannot load
                error = error or exc
        if error is not None:
            raise error
        return objects

    def bcast(self, obj: Any, root: int = 0) -> Any:
        root = self._root(root)
        data = None
        if self.rank == root:
            try:
                data = _dumps(obj)
            except Exception:
                self._abort_bcast(root)
                raise
        if self.size == 1:
            assert data is not None
            return _loads(data)
        return _loads(self._bcast_view(data, root))

    def gather(self, sendobj: Any, root: int = 0) -> list[Any] | None:
        root = self._root(root)
        others = self._others()
        try:
            data = _dumps(sendobj)
        except Exception:
            self._abort([root], others if self.rank == root else [])
            raise
        if self.rank != root:
            self._c_send(data, root)
            return None
        objects = self._recv_objects(others)
        objects[root] = _loads(data)
        return [objects[source] for source in range(self.size)]

    def scatter(self, sendobj: Any, root: int = 0) -> Any:
        root = self._root(root)
        if self.rank != root:
            return self._recv_objects([root])[root]
        try:
            blocks = self._items(sendobj, "scatter")
        except Exception:
            self._abort(self._others(), [])
            raise
        for dest, block in enumerate(blocks):
            if dest != self.rank:
                self._c_send(block, dest)
        return _loads(blocks[self.rank])

    def allgather(self, sendobj: Any) -> list[Any]:
        try:
            gathered = self.gather(sendobj, 0)
        except Exception:
            self._abort_bcast(0)  # the broadcast that follows still hears of it
            raise
        result: list[Any] = self.bcast(gathered, 0)
        return result

    def alltoall(self, sendobj: Any) -> list[Any]:
        size, rank = self.size, self.rank
        try:
            blocks = self._items(sendobj, "alltoall")
        except Exception:
            self._abort(self._others(), self._others())
            raise
        out: list[Any] = [None] * size
        out[rank] = _loads(blocks[rank])
        error: BaseException | None = None
        for step in range(1, size):
            dest, source = (rank + step) % size, (rank - step) % size
            requests, _buffers = self._coll.isend(blocks[dest], dest, COLL_TAG)
            try:
                if error is None:
                    out[source] = _loads(self._c_recv_bytes(source))
                else:
                    self._coll.recv(source, COLL_TAG, None)
            except Exception as exc:
                error = error or exc
            wait_all(requests)
        if error is not None:
            raise error
        return out
