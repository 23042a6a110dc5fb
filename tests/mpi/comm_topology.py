"""Run under mpiexec: virtual topologies of mpish.secure(comm) (Cartesian grids, graphs,
distributed graphs) and their neighbour collectives, each against the same call on raw MPI.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

import pickle
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
    dimensions, a ring graph (both neighbours one rank at -n 2), asymmetric distributed graphs
    (self-edges; a pipeline whose ends have no in- or no out-edge)."""
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
    # A pipeline: the first rank has no in-edge, the last no out-edge (in- and out-degree differ).
    # Not under Open MPI 5.0: its own neighbour collectives fail there, so it is no yardstick
    # (Neighbor_alltoall of plain buffers: ERR_TRUNCATE; Neighbor_allgatherv: hangs; measured).
    if "Open MPI" not in MPI.Get_library_version():
        sources, dests = ([r - 1] if r else []), ([r + 1] if r < n - 1 else [])
        pipeline = c.Create_dist_graph_adjacent(sources, dests)
        yield "pipeline", pipeline, raw.Create_dist_graph_adjacent(sources, dests)


def _edges(comm: Any, name: str) -> Any:
    """In- and out-edges; for MPI_Dist_graph_create, the in-edges as a set: MPICH lists them in
    the order its own exchange delivered them, which differs between two calls."""
    inedges, outedges = comm.inoutedges
    return (sorted(inedges), outedges) if name == "dist_graph" else (inedges, outedges)


def _slots(comm: Any, name: str, got: Any) -> Any:
    """What each in-neighbour delivered, as the topology orders it (dist_graph: by source)."""
    blocks = got
    if isinstance(got, np.ndarray):
        blocks = [tuple(x) for x in got.reshape(comm.indegree, -1)] if comm.indegree else []
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
    # The derivation count stayed in step: every rank derived the same keys for the next Dup
    # (compared over raw MPI, so a drift fails here instead of hanging on dropped records).
    idents = raw.allgather(c.Dup()._keys.ident)
    assert len(set(idents)) == 1, idents
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
        # counts given: with in- and out-degrees that differ (the pipeline), Open MPI and
        # mpi4py infer other counts from plain buffers and raw MPI itself fails (ERR_TRUNCATE)
        _wait(getattr(s, call)([send, 2, MPI.DOUBLE], [got, 2, MPI.DOUBLE]))
        w.Neighbor_alltoall([send, 2, MPI.DOUBLE], [want, 2, MPI.DOUBLE])
        out.append((call, got, want))
    # v-forms with explicit counts and displacements (blocks of 2 doubles at a stride of 3),
    # against raw's v-forms
    displs_in, displs_out = [3 * j for j in range(indegree)], [2 * k for k in range(outdegree)]
    for call in ("Neighbor_allgatherv", "Neighbor_alltoallv"):
        got, want = np.full(3 * indegree, fill, "f8"), np.full(3 * indegree, fill, "f8")
        into = ([2] * indegree, displs_in)
        if call == "Neighbor_allgatherv":
            pair = np.array([r, k], "f8")
            s.Neighbor_allgatherv([pair, 2, MPI.DOUBLE], [got, into, MPI.DOUBLE])
            w.Neighbor_allgatherv([pair, 2, MPI.DOUBLE], [want, into, MPI.DOUBLE])
        else:
            s.Neighbor_alltoallv([send, ([2] * outdegree, displs_out), MPI.DOUBLE], [got, into, MPI.DOUBLE])
            w.Neighbor_alltoallv([send, ([2] * outdegree, displs_out), MPI.DOUBLE], [want, into, MPI.DOUBLE])
        out.append((call + " with counts and displacements", got, want))
    got, want = np.full(2 * indegree, fill, "f8"), np.full(2 * indegree, fill, "f8")
    displs = [16 * j for j in range(max(outdegree, indegree))]
    spec_out = [send, ([2] * outdegree, displs[:outdegree]), [MPI.DOUBLE] * outdegree]
    s.Neighbor_alltoallw(spec_out, [got, ([2] * indegree, displs[:indegree]), [MPI.DOUBLE] * indegree])
    w.Neighbor_alltoallw(spec_out, [want, ([2] * indegree, displs[:indegree]), [MPI.DOUBLE] * indegree])
    out.append(("Neighbor_alltoallw", got, want))
    objs = [("to", j, r, k) for j in range(outdegree)]
    out.append(("neighbor_alltoall", s.neighbor_alltoall(objs), w.neighbor_alltoall(objs)))
    out.append(("neighbor_allgather", s.neighbor_allgather((r, k)), w.neighbor_allgather((r, k))))
    got, want = np.full(3 * indegree, fill, "i8"), np.full(3 * indegree, fill, "i8")
    persistent = s.Neighbor_allgather_init(mine, got)  # started again on new data
    for round_ in range(2):
        mine[:] = np.arange(3) + 100 * r + k + round_
        persistent.Start()
        persistent.Wait()
    persistent.Free()
    w.Neighbor_allgather(mine, want)
    out.append(("Neighbor_allgather_init", got, want))
    return out


def check_neighbour_collectives_deliver_what_raw_mpi_delivers(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Each block in its neighbour's slot; a grid's edges (PROC_NULL) leave the slot untouched."""
    for k, (name, s, w) in enumerate(_pairs(c, raw)):
        for call, got, want in _buffers(s, w, k, fill=-7):
            assert _slots(s, name, got) == _slots(w, name, want), (name, call, got, want)
    ok("neighbour_collectives_deliver_what_raw_mpi_delivers")


def check_alltoallw_at_absolute_addresses_leaves_a_grids_edge_untouched(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Neighbor_alltoallw with MPI.BOTTOM on a grid that is not periodic: a block from
    MPI.PROC_NULL is not written (it was, with zeros), the others are as raw MPI's."""
    n = c.size
    for comm in (c.Create_cart([n], [False]), raw.Create_cart([n], [False])):
        send, got = np.arange(4, dtype="f8") + 10 * c.rank, np.full(4, -7.0)
        out = [MPI.BOTTOM, ([2, 2], [MPI.Get_address(send), MPI.Get_address(send) + 16]), [MPI.DOUBLE] * 2]
        into = [MPI.BOTTOM, ([2, 2], [MPI.Get_address(got), MPI.Get_address(got) + 16]), [MPI.DOUBLE] * 2]
        comm.Neighbor_alltoallw(out, into)
        left, right = comm.Shift(0, 1)
        want_left = [-7.0, -7.0] if left == MPI.PROC_NULL else [10.0 * left + 2, 10.0 * left + 3]
        want_right = [-7.0, -7.0] if right == MPI.PROC_NULL else [10.0 * right, 10.0 * right + 1]
        assert got.tolist() == want_left + want_right, (comm, got)
    ok("alltoallw_at_absolute_addresses_leaves_a_grids_edge_untouched")


def _halo(comm: Any, neighbour_collective: bool) -> Any:
    """A 2-D array's left and right columns (subarray datatypes, with gaps) exchanged on a
    periodic ring: by Irecv/Isend and MPI.Request.Waitall, or by Neighbor_alltoallw."""
    cart = comm.Create_cart([comm.Get_size()], [True])
    r = cart.Get_rank()
    left, right = cart.Shift(0, 1)
    u = np.full((6, 6), -1.0)
    u[1:-1, 1:-1] = np.arange(16.0).reshape(4, 4) + 100 * r

    def column(j: int) -> Any:
        return MPI.DOUBLE.Create_subarray([6, 6], [4, 1], [1, j]).Commit()

    sends, recvs = [column(1), column(4)], [column(0), column(5)]
    if neighbour_collective:
        cart.Neighbor_alltoallw([u, ([1, 1], [0, 0]), sends], [u, ([1, 1], [0, 0]), recvs])
    else:
        requests = [cart.Irecv([u, 1, recvs[0]], left, 5), cart.Irecv([u, 1, recvs[1]], right, 6)]
        requests += [cart.Isend([u, 1, sends[1]], right, 5), cart.Isend([u, 1, sends[0]], left, 6)]
        for datatype in sends + recvs:  # MPI lets a program free them before the wait
            datatype.Free()
        MPI.Request.Waitall(requests)
        return u
    for datatype in sends + recvs:
        datatype.Free()
    return u


def check_a_halo_of_subarray_datatypes_travels_by_irecv_and_by_neighbor_alltoallw(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """The stencil codes' halo exchanges with datatypes that have gaps (were Unsupported)."""
    for neighbour_collective in (False, True):
        got, want = _halo(c, neighbour_collective), _halo(raw, neighbour_collective)
        assert np.array_equal(got, want), (neighbour_collective, got, want)
        assert got[1, 0] != -1.0 and got[1, 5] != -1.0, got  # both halos were filled
    ok("a_halo_of_subarray_datatypes_travels_by_irecv_and_by_neighbor_alltoallw")


def check_new_communicators_keys_differ_from_their_parents_and_siblings(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """A grid, its Dup, a graph and each Sub have their own keys (their own id), the same on
    every member: no two of them can open each other's records."""
    cart = c.Create_cart(MPI.Compute_dims(c.size, [0, 0]), [True, True])
    sub = cart.Sub([True, False])
    mine = [c._keys.ident, cart._keys.ident, cart.Dup()._keys.ident, sub._keys.ident,
            c.Create_graph([1] * c.size, list(range(c.size)))._keys.ident]
    assert len(set(mine)) == len(mine), mine
    everyone = raw.allgather((mine[:3], sub._keys.ident, cart.coords[1]))
    assert all(other[0] == mine[:3] for other in everyone)  # one id per communicator on every rank
    ids_by_subgrid: dict[int, set[bytes]] = {}  # Sub([True, False]): a sub-grid per coords[1]
    for _, ident, column in everyone:
        ids_by_subgrid.setdefault(column, set()).add(ident)
    assert all(len(ids) == 1 for ids in ids_by_subgrid.values()), ids_by_subgrid
    assert len(set.union(*ids_by_subgrid.values())) == len(ids_by_subgrid), ids_by_subgrid
    ok("new_communicators_keys_differ_from_their_parents_and_siblings")


def check_a_wrong_buffer_on_one_rank_fails_its_neighbours_and_leaves_nothing_behind(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    r, n = c.rank, c.size
    ring = c.Create_cart([n], [True])
    degree = ring.indegree
    neighbours = set(ring.inedges) - {r}
    try:
        got: Any = bytes(16 * degree) if r == 0 else np.zeros(2 * degree, "f8")  # read-only on rank 0
        ring.Neighbor_alltoall(np.ones(2 * degree, "f8"), got)
    except ValueError as exc:
        assert r == 0 and "read-only" in str(exc), exc
    except CollectiveAborted as exc:
        assert r != 0 and 0 in neighbours, (r, exc)
    else:
        assert r != 0 and 0 not in neighbours, r
    try:  # an object that cannot be pickled, on rank 0 only, in the object form
        ring.neighbor_alltoall([(lambda: r) if r == 0 else r] * degree)
    except (AttributeError, TypeError, pickle.PicklingError) as exc:
        assert r == 0, exc
    except CollectiveAborted as exc:
        assert r != 0 and 0 in neighbours, (r, exc)
    else:
        assert r != 0 and 0 not in neighbours, r
    got = np.zeros(degree, "i8")  # the next call gets its own blocks: none was left queued
    ring.Neighbor_allgather(np.array([r], "i8"), got)
    assert sorted(got.tolist()) == sorted(ring.inedges), got
    assert c.allreduce(1) == n
    ok("a_wrong_buffer_on_one_rank_fails_its_neighbours_and_leaves_nothing_behind")


def check_secure_of_a_communicator_with_a_topology_keeps_it(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Real codes build their grid raw at set-up and pass it around: `mpish.secure(cart)` answered
    Get_topology() with UNDEFINED and refused Shift/Get_coords/Sub as unsupported (an HPC
    programmer's port, helper-112). It is now a secure Cartesian (graph...) communicator."""
    import mpish

    n = raw.Get_size()
    for w in (raw.Create_cart([n], periods=[True]), raw.Create_graph(list(range(1, n + 1)), list(range(n)))):
        s = mpish.secure(w)
        assert s.Get_topology() == w.Get_topology() != MPI.UNDEFINED
        if w.Get_topology() == MPI.CART:
            assert (s.Shift(0, 1), s.Get_coords(s.rank)) == (w.Shift(0, 1), w.Get_coords(w.rank))
            assert s.Get_dim() == 1
            assert s.Sub([True]).allgather(s.rank) == list(range(n))
            src, dest = s.Shift(0, 1)
            assert s.sendrecv(s.rank, dest, source=src) == src  # its keys work
        else:
            assert s.Get_neighbors(s.rank) == w.Get_neighbors(w.rank)
        s.Free()
        w.Free()
    ok("secure_of_a_communicator_with_a_topology_keeps_it")


if __name__ == "__main__":
    run_checks(
        [
            check_topology_queries_answer_as_raw_mpi,
            check_a_grid_smaller_than_the_world_leaves_the_others_out_and_in_step,
            check_neighbour_collectives_deliver_what_raw_mpi_delivers,
            check_alltoallw_at_absolute_addresses_leaves_a_grids_edge_untouched,
            check_a_halo_of_subarray_datatypes_travels_by_irecv_and_by_neighbor_alltoallw,
            check_new_communicators_keys_differ_from_their_parents_and_siblings,
            check_a_wrong_buffer_on_one_rank_fails_its_neighbours_and_leaves_nothing_behind,
            check_secure_of_a_communicator_with_a_topology_keeps_it,
        ]
    )
