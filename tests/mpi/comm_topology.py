"""Run under mpiexec: virtual topologies of mpish.secure(comm) (Cartesian grids, graphs,
distributed graphs) and their neighbour collectives, each against the same call on raw MPI.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

from mpish.comm import CollectiveAborted, SecureComm


def ok(name: str) -> None:
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def _pairs(c: SecureComm, raw: MPI.Intracomm) -> Iterator[tuple[str, Any, Any]]:
    """(name, secure, raw) of each topology of the world: grids periodic or not in 1 to 3
    dimensions, a ring graph (both neighbours one rank at -n 2), an asymmetric distributed graph."""
    r, n = c.rank, c.size
    for ndim in (1, 2, 3):
        dims = MPI.Compute_dims(n, [0] * ndim)
        for periodic in (True, False):
            periods = [periodic] * ndim
            yield f"cart{dims}{periods}", c.Create_cart(dims, periods), raw.Create_cart(dims, periods)
    index = [2 * (k + 1) for k in range(n)]
    edges = [e for k in range(n) for e in ((k - 1) % n, (k + 1) % n)]
    yield "graph", c.Create_graph(index, edges), raw.Create_graph(index, edges)
    sources, dests = [(r - 1) % n, (r - 2) % n, r], [(r + 1) % n, (r + 2) % n, r]
    yield "dist_graph_adjacent", c.Create_dist_graph_adjacent(sources, dests), raw.Create_dist_graph_adjacent(
        sources, dests
    )
    yield "dist_graph", c.Create_dist_graph([r], [2], [(r + 1) % n, (r + 3) % n]), raw.Create_dist_graph(
        [r], [2], [(r + 1) % n, (r + 3) % n]
    )


def _edges(comm: Any, name: str) -> Any:
    """In- and out-edges; for MPI_Dist_graph_create, the in-edges as a set: MPICH lists them in
    the order its own exchange delivered them, which differs between two calls."""
    inedges, outedges = comm.inoutedges
    return (sorted(inedges), outedges) if name == "dist_graph" else (inedges, outedges)


def _slots(comm: Any, name: str, got: Any) -> Any:
    """What each in-neighbour delivered, as the topology orders it (dist_graph: by source)."""
    blocks = got
    if isinstance(got, np.ndarray):
        blocks = [tuple(x) for x in got.reshape(comm.indegree, -1)]
    pairs = list(zip(comm.inedges, blocks, strict=True))
    return sorted(pairs, key=repr) if name == "dist_graph" else pairs


def check_topology_queries_answer_as_raw_mpi(c: SecureComm, raw: MPI.Intracomm) -> None:
    assert c.is_topo is False and c.topology == MPI.UNDEFINED
    for name, s, w in _pairs(c, raw):
        assert s.topology == w.topology and s.is_topo, name
        assert _edges(s, name) == _edges(w, name), name
        assert (s.indegree, s.outdegree) == (w.indegree, w.outdegree), name
        assert s.Dup().topology == w.topology, name  # MPI's Dup keeps the topology
        if w.topology == MPI.CART:
            assert (s.dims, s.periods, s.coords, s.ndim) == (w.dims, w.periods, w.coords, w.ndim), name
            assert [s.Shift(d, 1) for d in range(w.ndim)] == [w.Shift(d, 1) for d in range(w.ndim)], name
            assert s.Get_cart_rank(w.coords) == c.rank, name
            if w.ndim > 1:
                keep = [True] + [False] * (w.ndim - 1)
                sub, wsub = s.Sub(keep), w.Sub(keep)
                assert (sub.dims, sub.rank) == (wsub.dims, wsub.rank), name
                assert sub.allgather(c.rank) == wsub.allgather(c.rank), name  # its keys work
        elif w.topology == MPI.GRAPH:
            assert (s.index, s.edges, s.neighbors) == (w.index, w.edges, w.neighbors), name
        elif name == "dist_graph_adjacent":
            assert s.Get_dist_neighbors() == w.Get_dist_neighbors(), name
    ok("topology_queries_answer_as_raw_mpi")


def check_a_grid_smaller_than_the_world_leaves_the_others_out_and_in_step(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    s, w = c.Create_cart([1]), raw.Create_cart([1])
    assert (s == MPI.COMM_NULL) == (w == MPI.COMM_NULL) == (c.rank != 0)
    assert type(c.Split(MPI.UNDEFINED)) is type(raw.Split(MPI.UNDEFINED)) is MPI.Intracomm  # the null's class
    if c.rank != 0:
        assert type(s) is type(w) is MPI.Cartcomm
    assert c.Dup().allreduce(c.rank) == sum(range(c.size))  # the derivation count stayed in step
    ok("a_grid_smaller_than_the_world_leaves_the_others_out_and_in_step")


def _wait(request: Any) -> None:
    if request is not None:  # the I-forms
        request.Wait()


def _buffers(s: Any, w: Any, k: int, fill: int) -> list[tuple[str, Any, Any]]:
    """(call, secure result, raw result) of each neighbour collective of one topology."""
    r = MPI.COMM_WORLD.Get_rank()
    indegree, outdegree = w.indegree, w.outdegree
    out = []
    for call in ("Neighbor_allgather", "Ineighbor_allgather", "Neighbor_allgatherv"):
        got, want = np.full(3 * indegree, fill, "i8"), np.full(3 * indegree, fill, "i8")
        mine = np.arange(3, dtype="i8") + 100 * r + k
        _wait(getattr(s, call)(mine, got))
        w.Neighbor_allgather(mine, want)
        out.append((call, got, want))
    send = np.arange(2 * outdegree, dtype="f8") + 1000 * r + k  # each out-neighbour its own block
    for call in ("Neighbor_alltoall", "Ineighbor_alltoall", "Neighbor_alltoallv", "Ineighbor_alltoallv"):
        got, want = np.full(2 * indegree, fill, "f8"), np.full(2 * indegree, fill, "f8")
        _wait(getattr(s, call)(send, got))
        w.Neighbor_alltoall(send, want)
        out.append((call, got, want))
    got, want = np.full(2 * indegree, fill, "f8"), np.full(2 * indegree, fill, "f8")
    displs = [16 * j for j in range(max(outdegree, indegree))]
    spec_out = [send, ([2] * outdegree, displs[:outdegree]), [MPI.DOUBLE] * outdegree]
    s.Neighbor_alltoallw(spec_out, [got, ([2] * indegree, displs[:indegree]), [MPI.DOUBLE] * indegree])
    w.Neighbor_alltoallw(spec_out, [want, ([2] * indegree, displs[:indegree]), [MPI.DOUBLE] * indegree])
    out.append(("Neighbor_alltoallw", got, want))
    objs = [("to", j, r, k) for j in range(outdegree)]
    out.append(("neighbor_alltoall", s.neighbor_alltoall(objs), w.neighbor_alltoall(objs)))
    out.append(("neighbor_allgather", s.neighbor_allgather((r, k)), w.neighbor_allgather((r, k))))
    if s.Get_topology() == MPI.CART and s.Get_topo()[1][0]:  # periodic: both sides of each dimension differ
        assert len({tuple(obj) for obj in out[-2][1]}) == len(out[-2][1]), out[-2]
    return out


def check_neighbour_collectives_deliver_what_raw_mpi_delivers(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Each block in its neighbour's slot; a grid's edges (PROC_NULL) leave the slot untouched."""
    for k, (name, s, w) in enumerate(_pairs(c, raw)):
        for call, got, want in _buffers(s, w, k, fill=-7):
            assert _slots(s, name, got) == _slots(w, name, want), (name, call, got, want)
    ok("neighbour_collectives_deliver_what_raw_mpi_delivers")


def check_a_wrong_buffer_on_one_rank_fails_its_neighbours_and_leaves_nothing_behind(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    r, n = c.rank, c.size
    ring = c.Create_cart([n], [True])
    degree = ring.indegree
    neighbours = set(ring.inedges) - {r}
    try:
        got = np.zeros(1 if r == 0 else 2 * degree, "f8")  # too small on rank 0 only
        ring.Neighbor_alltoall(np.ones(2 * degree, "f8"), got)
    except ValueError:
        assert r == 0
    except CollectiveAborted as exc:
        assert r != 0 and 0 in neighbours, (r, exc)
    else:
        assert r != 0 and 0 not in neighbours, r
    got = np.zeros(degree, "i8")  # the next call gets its own blocks: none was left queued
    ring.Neighbor_allgather(np.array([r], "i8"), got)
    assert sorted(got.tolist()) == sorted(ring.inedges), got
    assert c.allreduce(1) == n
    ok("a_wrong_buffer_on_one_rank_fails_its_neighbours_and_leaves_nothing_behind")


if __name__ == "__main__":
    run_checks(
        [
            check_topology_queries_answer_as_raw_mpi,
            check_a_grid_smaller_than_the_world_leaves_the_others_out_and_in_step,
            check_neighbour_collectives_deliver_what_raw_mpi_delivers,
            check_a_wrong_buffer_on_one_rank_fails_its_neighbours_and_leaves_nothing_behind,
        ]
    )
