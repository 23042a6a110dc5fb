"""Virtual topologies of a secure communicator: Cartesian grids, graphs, distributed graphs.

Theory of operation
-------------------
``Create_cart``, ``Create_graph``, ``Create_dist_graph(_adjacent)`` and ``Sub`` make the
same topology on each of the four internal communicators (communicator.py), with
``reorder`` off: MPI only *allows* a reordering, and four calls left free to reorder could
disagree on the ranks. The new communicator's keys derive from the parent's like Split's.

What a topology answers locally (coordinates, ``Shift``, neighbours, degrees) is MPI's
answer for the internal communicator that carries point-to-point records: nothing crosses
the network. Neighbour collectives travel on the collective lane as authenticated records
on one tag, matched in order (MPI's non-overtaking rule): a rank sends its blocks to its
out-neighbours in MPI's order and receives from its in-neighbours in MPI's order. For a
graph, the k-th edge from p to q is the k-th of each list, as MPI matches them. A
Cartesian grid needs one more step: the block a rank sends to its ``-`` neighbour in
dimension d arrives in that neighbour's ``+`` slot, and where both neighbours are one rank
(a periodic dimension of size 1 or 2) its two blocks come in the sender's order, ``-``
first, so a rank receives its ``+`` slot of each dimension before its ``-`` slot.
``MPI.PROC_NULL`` neighbours (the edges of a grid that is not periodic) send and receive
nothing; their receive blocks are left as they were (``None`` in the object forms).

No rank left behind: a rank whose buffers are wrong sends an abort notice instead of
each block and drops what its in-neighbours send, so its out-neighbours raise
:class:`CollectiveAborted` rather than wait (collectives.py); its in-neighbours, whose
blocks it dropped, return as usual.
"""

from __future__ import annotations

import inspect
from typing import Any

from mpi4py import MPI

from .buffers import (
    block_view,
    bottom_blocks,
    byte_view,
    free_blocks,
)
from .collectives import COLL_TAG, Steps, _dumps, _in_place, _loads, run
from .derive import made_each
from .lane import wait_all
from .nonblocking import NonBlocking, after_started, blocking, persistent, started
from .packing import pack, unpack
from .vectors import typed_vector_view, vector_view

_PROC_NULL = MPI.PROC_NULL


def _local(kind: type, name: str) -> Any:
    """Attribute ``name`` of ``kind`` read from the internal communicator (a local query)."""
    if inspect.isdatadescriptor(getattr(kind, name)):
        return property(lambda self: getattr(self._comms[0], name), doc=f"MPI's {name} (a local query)")

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._comms[0], name)(*args, **kwargs)

    query.__name__, query.__doc__ = name, f"MPI's {name} (a local query: nothing is sent)"
    return query


class Constructors:
    """``Create_cart``, ``Create_graph``, ``Create_dist_graph(_adjacent)`` (a mixin of SecureComm,
    which sets ``_kinds``, the secure class each makes); never reordered (module doc)."""

    _kinds: dict[str, type]
    _comms: tuple[Any, Any, Any, Any]
    _child: Any

    def Create_cart(self, dims: Any, periods: Any = None, reorder: bool = False) -> Any:
        return self._topology("Create_cart", dims, periods, False)

    def Create_graph(self, index: Any, edges: Any, reorder: bool = False) -> Any:
        return self._topology("Create_graph", index, edges, False)

    def Create_dist_graph_adjacent(self, sources: Any, destinations: Any, *args: Any, **kwargs: Any) -> Any:
        """mpi4py's arguments: weights, info; ``reorder`` is not used."""
        kwargs.pop("reorder", None)
        return self._topology("Create_dist_graph_adjacent", sources, destinations, *args[:3], **kwargs)

    def Create_dist_graph(
        self, sources: Any, degrees: Any, destinations: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """mpi4py's arguments: weights, info; ``reorder`` is not used."""
        kwargs.pop("reorder", None)
        return self._topology("Create_dist_graph", sources, degrees, destinations, *args[:2], **kwargs)

    def _topology(self, call: str, *args: Any, **kwargs: Any) -> Any:
        comms = made_each(self._comms, lambda c: getattr(c, call)(*args, **kwargs))
        return self._child(comms, call.encode(), self._kinds[call])


class Topology(NonBlocking):
    """Neighbour collectives and local topology queries (a mixin of the secure topology classes)."""

    _comms: tuple[Any, Any, Any, Any]

    def Get_topology(self) -> int:
        return int(self._comms[0].Get_topology())

    topology = property(Get_topology)

    def _edges(self) -> tuple[list[int], list[int]]:
        """(in-neighbours, out-neighbours) in MPI's order: the internal communicator's."""
        sources, dests = self._comms[0].inoutedges
        return sources, dests

    def _order(self, sources: list[int]) -> list[tuple[int, int]]:
        """(slot, in-neighbour) in receiving order."""
        return list(enumerate(sources))

    def _neighbour_exchange(self, edges: Any, blocks_out: list[Any] | None, slots: list[Any]) -> Steps[None]:
        """Send block k to out-neighbour k and receive slot j from in-neighbour j (``None`` in
        ``blocks_out``: this rank failed, and sends abort notices; ``None`` slots: bytes kept)."""
        sources, dests = edges
        requests, records = [], []  # the blocking form's: a started one keeps its own (_c_isend)
        for k, dest in enumerate(dests):
            if dest == _PROC_NULL:
                continue
            block = memoryview(b"") if blocks_out is None else blocks_out[k]
            sent, kept = self._c_isend(block, dest, abort=blocks_out is None)  # dest may be this rank
            requests += sent
            records.append(kept)
        try:
            pairs = [(source, slot) for slot, source in self._order(sources) if source != _PROC_NULL]
            if blocks_out is None:
                for source, _ in pairs:
                    yield source
                    self._coll.recv(source, COLL_TAG, None)
                return
            yield from self._receive_slots(pairs, slots)
        finally:
            wait_all(requests)

    def _receive_slots(self, pairs: list[tuple[int, int]], slots: list[Any]) -> Steps[None]:
        error: BaseException | None = None
        for source, slot in pairs:
            yield source
            try:
                if error is not None:
                    self._coll.recv(source, COLL_TAG, None)
                elif isinstance(slots[slot], memoryview):
                    self._c_recv_into(slots[slot], source)
                else:
                    slots[slot] = self._c_recv_bytes(source)
            except Exception as exc:  # the rest is still received, then this raises
                error = exc
        if error is not None:
            raise error

    def _checked(self, edges: Any, make_blocks: Any) -> Steps[Any]:
        """``make_blocks()``; if it raises, take part with abort notices, then raise."""
        try:
            return make_blocks()
        except Exception as exc:
            yield exc  # this rank's own arguments: the call raises it (module doc)
            yield from self._neighbour_exchange(edges, None, [])
            raise

    # Blocks as mpi4py lays them out: a receive buffer holds in-degree blocks of equal size
    # (its size over the in-degree), a send buffer out-degree blocks; a receive whose block
    # does not have the size the neighbour sent fails there (collectives._c_recv).

    def _Neighbor_allgather_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        edges = self._edges()
        indegree, outdegree = len(edges[0]), len(edges[1])

        def blocks() -> tuple[list[memoryview], list[memoryview]]:
            send = byte_view(sendbuf, writable=False)
            recv, block = block_view(recvbuf, indegree, writable=True)
            return [send] * outdegree, [recv[j * block : (j + 1) * block] for j in range(indegree)]

        out, slots = yield from self._checked(edges, blocks)
        yield from self._neighbour_exchange(edges, out, slots)

    def _Neighbor_allgatherv_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        edges = self._edges()
        indegree, outdegree = len(edges[0]), len(edges[1])

        def blocks() -> tuple[list[memoryview], list[memoryview]]:
            send = byte_view(sendbuf, writable=False)
            recv, counts, displs = vector_view(recvbuf, indegree, writable=True)
            return [send] * outdegree, [recv[displs[j] : displs[j] + counts[j]] for j in range(indegree)]

        out, slots = yield from self._checked(edges, blocks)
        yield from self._neighbour_exchange(edges, out, slots)

    def _Neighbor_alltoall_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        edges = self._edges()
        indegree, outdegree = len(edges[0]), len(edges[1])

        def blocks() -> tuple[list[memoryview], list[memoryview]]:
            if _in_place(sendbuf):
                raise ValueError("Neighbor_alltoall: MPI.IN_PLACE is not valid in neighbour collectives")
            send, sblock = block_view(sendbuf, outdegree, writable=False)
            recv, rblock = block_view(recvbuf, indegree, writable=True)
            return (
                [send[k * sblock : (k + 1) * sblock] for k in range(outdegree)],
                [recv[j * rblock : (j + 1) * rblock] for j in range(indegree)],
            )

        out, slots = yield from self._checked(edges, blocks)
        yield from self._neighbour_exchange(edges, out, slots)

    def _Neighbor_alltoallv_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        edges = self._edges()
        indegree, outdegree = len(edges[0]), len(edges[1])

        def blocks() -> tuple[list[memoryview], list[memoryview]]:
            send, scounts, sdispls = vector_view(sendbuf, outdegree, writable=False)
            recv, rcounts, rdispls = vector_view(recvbuf, indegree, writable=True)
            return (
                [send[sdispls[k] : sdispls[k] + scounts[k]] for k in range(outdegree)],
                [recv[rdispls[j] : rdispls[j] + rcounts[j]] for j in range(indegree)],
            )

        out, slots = yield from self._checked(edges, blocks)
        yield from self._neighbour_exchange(edges, out, slots)

    def _Neighbor_alltoallw_steps(self, sendbuf: Any, recvbuf: Any) -> Steps[None]:
        """Blocks at absolute addresses (MPI.BOTTOM) travel packed by MPI inside this process;
        a block from MPI.PROC_NULL is left as it was (never unpacked)."""
        edges = self._edges()
        sources, dests = edges
        specs: list[Any] = []  # the datatypes made here, freed whatever happens

        def blocks() -> tuple[list[memoryview], list[memoryview]]:
            specs.append(bottom_blocks(recvbuf, len(sources), writable=True))
            specs.append(bottom_blocks(sendbuf, len(dests)))
            into_specs, out_specs = specs
            if into_specs is None:
                recv, rcounts, rdispls = typed_vector_view(recvbuf, len(sources), writable=True)
                slots = [recv[rdispls[j] : rdispls[j] + rcounts[j]] for j in range(len(sources))]
            else:
                slots = [memoryview(bytearray(n)) for _, n in into_specs]
            if out_specs is not None:
                return [pack(spec, n) for spec, n in out_specs], slots
            send, scounts, sdispls = typed_vector_view(sendbuf, len(dests), writable=False)
            return [send[sdispls[k] : sdispls[k] + scounts[k]] for k in range(len(dests))], slots

        try:
            out, slots = yield from self._checked(edges, blocks)
            yield from self._neighbour_exchange(edges, out, slots)
            if specs[0] is not None:
                for (spec, _), data, source in zip(specs[0], slots, sources, strict=True):
                    if source != _PROC_NULL:
                        unpack(data, spec)
        finally:
            for made in specs:
                free_blocks(made)

    def neighbor_allgather(self, sendobj: Any) -> list[Any]:
        edges = self._edges()
        data = run(self._checked(edges, lambda: _dumps(sendobj)))
        slots: list[Any] = [None] * len(edges[0])
        run(self._neighbour_exchange(edges, [data] * len(edges[1]), slots))
        return [None if slot is None else _loads(slot) for slot in slots]

    def neighbor_alltoall(self, sendobj: Any) -> list[Any]:
        """``sendobj``: one object per out-neighbour; ``None`` sends None to each (as mpi4py)."""
        edges = self._edges()
        outdegree = len(edges[1])

        def blocks() -> list[memoryview]:
            objs = [None] * outdegree if sendobj is None else list(sendobj)
            if len(objs) != outdegree:
                raise ValueError(f"neighbor_alltoall: {len(objs)} objects for {outdegree} out-neighbours")
            return [_dumps(obj) for obj in objs]

        out = run(self._checked(edges, blocks))
        slots: list[Any] = [None] * len(edges[0])
        run(self._neighbour_exchange(edges, out, slots))
        return [None if slot is None else _loads(slot) for slot in slots]



for _name in ("Neighbor_allgather", "Neighbor_allgatherv", "Neighbor_alltoall", "Neighbor_alltoallv",
              "Neighbor_alltoallw"):  # blocking, started (nonblocking.py) and persistent
    setattr(Topology, _name, blocking(_name, Topology))
    setattr(Topology, "I" + _name[0].lower() + _name[1:], started(_name, Topology))
    setattr(Topology, _name + "_init", persistent(_name))
for _name in ("neighbor_allgather", "neighbor_alltoall"):
    setattr(Topology, _name, after_started(getattr(Topology, _name)))


class Cartesian(Topology):
    """A Cartesian grid's queries and ``Sub`` (needs the secure communicator's ``_child``)."""

    _child: Any

    def _order(self, sources: list[int]) -> list[tuple[int, int]]:
        order = []
        for d in range(len(sources) // 2):  # the + slot first (module doc)
            order += [(2 * d + 1, sources[2 * d + 1]), (2 * d, sources[2 * d])]
        return order

    def Sub(self, remain_dims: Any) -> Any:
        """The sub-grids keeping the dimensions ``remain_dims`` marks (collective)."""
        keep = [bool(x) for x in remain_dims]
        comms = made_each(self._comms, lambda c: c.Sub(keep))
        return self._child(comms, b"cart_sub" + bytes(keep), type(self))


def _forward(cls: type, kind: type, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in vars(cls):
            setattr(cls, name, _local(kind, name))


_TOPO = ("is_topo", "degrees", "indegree", "outdegree", "inoutedges", "inedges", "outedges")
_forward(Cartesian, MPI.Cartcomm, (*_TOPO, "Get_dim", "dim", "ndim", "Get_topo", "topo", "dims", "periods",
                                           "coords", "Get_cart_rank", "Get_coords", "Shift"))


class Graph(Topology):
    """A graph's queries (MPI_Graph_create's topology)."""


_forward(Graph, MPI.Graphcomm, (*_TOPO, "Get_dims", "dims", "nnodes", "nedges", "Get_topo", "topo", "index",
                                        "edges", "Get_neighbors_count", "nneighbors", "Get_neighbors",
                                        "neighbors"))


class DistGraph(Topology):
    """A distributed graph's queries (MPI_Dist_graph_create(_adjacent)'s topology)."""


_forward(DistGraph, MPI.Distgraphcomm, (*_TOPO, "Get_dist_neighbors_count", "Get_dist_neighbors"))
