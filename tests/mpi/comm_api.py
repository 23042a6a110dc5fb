"""Run under mpiexec: every supported method of mpish.secure(comm) against the same call on raw MPI.

Prints ``OK <check>`` per check and ``ALL OK`` at the end; any failure aborts the job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mpi4py import MPI
from mpi_main import run

import mpish

DTYPES = ("f8", "f4", "i4", "i8", "u1", "c16")
SIZES = (0, 1, 1000, 8192, 8193, 300_000)  # 8192 f8 = 64 KiB: the largest one-record message


def ok(comm: object, name: str) -> None:
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def check_objects(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    obj = {"rank": r, "data": list(range(r + 3)), "text": "é" * r}
    big = bytes(range(256)) * 12_000  # 3 MB pickled: several records
    st, rst = MPI.Status(), MPI.Status()
    for payload in (obj, big):
        got = c.sendrecv(payload if payload is obj else payload[r:], dest, 3, None, src, 3, st)
        want = raw.sendrecv(payload if payload is obj else payload[r:], dest, 3, None, src, 3, rst)
        assert got == want, (got, want)
        assert (st.Get_source(), st.Get_tag()) == (rst.Get_source(), rst.Get_tag()) == (src, 3)
    # send / recv / isend / irecv (irecv posted first, waited after)
    req = c.irecv(source=src, tag=4)
    sreq = c.isend(obj, dest, 4)
    assert req.wait(st) == {"rank": src, "data": list(range(src + 3)), "text": "é" * src}
    sreq.wait()
    assert st.Get_source() == src and st.Get_tag() == 4
    if n > 1:
        if r == 0:
            c.send(("hello", r), 1, 5)
        elif r == 1:
            assert c.recv(None, 0, 5) == ("hello", 0)
    ok(c, "objects")


def check_buffers(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    st, rst = MPI.Status(), MPI.Status()
    for dt in DTYPES:
        for size in SIZES:
            send = (np.arange(size) * (r + 1)).astype(dt)
            got, want = np.zeros(size, dt), np.zeros(size, dt)
            c.Sendrecv(send, dest, 7, got, src, 7, st)
            raw.Sendrecv(send, dest, 7, want, src, 7, rst)
            assert np.array_equal(got, want), (dt, size)
            assert st.Get_count(MPI.BYTE) == rst.Get_count(MPI.BYTE) == size * send.itemsize
            assert (st.Get_source(), st.Get_tag()) == (rst.Get_source(), rst.Get_tag())
    # [buf, count, datatype] specs and Send/Recv pairs (blocking, small)
    if n > 1 and r < 2:
        peer = 1 - r
        a = np.arange(8, dtype="f8")
        b = np.zeros(8, dtype="f8")
        if r == 0:
            c.Send([a, 5, MPI.DOUBLE], peer, 8)
            c.Recv([b, MPI.DOUBLE], peer, 8)
        else:
            c.Recv([b, 8, MPI.DOUBLE], peer, 8, st)
            assert st.Get_count(MPI.DOUBLE) == 5
            c.Send(a, peer, 8)
        assert np.array_equal(b[:5], a[:5])
    ok(c, "buffers")


def check_nonblocking(c: mpish.comm.SecureComm) -> None:
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    big = 400_000  # 3.2 MB of f8 per message: first record + continuation records
    a = [np.zeros(big) for _ in range(3)]
    # Three receives with the same envelope, posted before the sends, waited in reverse:
    # MPI matches them in posting order; the continuations must follow their first record.
    reqs = [c.Irecv(a[k], src, 9) for k in range(3)]
    small = np.zeros(4, "i4")
    sreq_small = c.Irecv(small, MPI.ANY_SOURCE, 11)
    sends = [c.Isend(np.full(big, 10.0 * r + k), dest, 9) for k in range(3)]
    sends.append(c.Isend(np.arange(4, dtype="i4") + r, dest, 11))
    st = MPI.Status()
    for k in (2, 1, 0):
        reqs[k].Wait(st)
        assert st.Get_source() == src and st.Get_tag() == 9
        assert np.all(a[k] == 10.0 * src + k), (k, a[k][:3])
    while not sreq_small.Test(st):
        pass
    assert np.array_equal(small, np.arange(4, dtype="i4") + src) and st.Get_tag() == 11
    mpish.comm.SecureRequest.Waitall(sends)
    # A pending Irecv of a large message, then a blocking Recv that gets the next message
    # of the same envelope: the Irecv's message (and its continuation) is processed first.
    first = c.Irecv(a[0], src, 14)
    sends = [c.Isend(np.full(big, 7.0 + r), dest, 14), c.Isend(np.full(4, r, "i4"), dest, 14)]
    c.Recv(small, src, 14)
    assert np.all(small == src)
    first.Wait()
    assert np.all(a[0] == 7.0 + src)
    mpish.comm.SecureRequest.Waitall(sends)
    ok(c, "nonblocking")


def check_any(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    r, n = c.rank, c.size
    st = MPI.Status()
    for comm in (c, raw):
        if r != 0:
            comm.send(r * 100, 0, tag=20 + r)
            comm.Barrier()  # the object phase is over before any buffer is sent
            comm.Send(np.full(3, r, "i8"), 0, tag=40 + r)
        else:
            seen = {}
            for _ in range(n - 1):
                value = comm.recv(None, MPI.ANY_SOURCE, MPI.ANY_TAG, st)
                assert value == st.Get_source() * 100 and st.Get_tag() == 20 + st.Get_source()
                seen[st.Get_source()] = value
            assert sorted(seen) == list(range(1, n))
            comm.Barrier()
            for _ in range(n - 1):
                buf = np.zeros(3, "i8")
                comm.Recv(buf, MPI.ANY_SOURCE, MPI.ANY_TAG, st)
                assert np.all(buf == st.Get_source()) and st.Get_tag() == 40 + st.Get_source()
                assert st.Get_count(MPI.INT64_T) == 3
        comm.Barrier()
    ok(c, "any_source_any_tag")


def check_probe(c: mpish.comm.SecureComm) -> None:
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    st = MPI.Status()
    for size in (0, 17, 3_000_000):  # one record (0: maybe the first of several); several records
        data = np.full(size, r % 256, "u1")
        req = c.Isend(data, dest, 30)
        c.Probe(src, MPI.ANY_TAG, st)
        assert st.Get_tag() == 30 and st.Get_source() == src and st.Get_count() == size
        while not c.Iprobe(src, 30, st):
            pass
        assert st.Get_count() == size
        buf = np.zeros(st.Get_count(), "u1")
        c.Recv(buf, st.Get_source(), st.Get_tag())
        assert np.all(buf == src % 256)
        req.Wait()
    assert not c.iprobe(MPI.ANY_SOURCE, 31)
    c.Barrier()
    ok(c, "probe")


def check_collectives(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    r, n = c.rank, c.size
    for root in sorted({0, n - 1}):
        obj = {"root": root, "x": [1.5, 2]} if r == root else None
        assert c.bcast(obj, root) == raw.bcast(obj, root)
        items = [(k, "s" * k) for k in range(n)] if r == root else None
        assert c.scatter(items, root) == raw.scatter(items, root)
        assert c.gather((r, "g"), root) == raw.gather((r, "g"), root)
        assert c.reduce(r + 1, MPI.SUM, root) == raw.reduce(r + 1, MPI.SUM, root)
        assert c.reduce([r], MPI.SUM, root) == raw.reduce([r], MPI.SUM, root)  # list concat, in rank order
        for dt in ("f8", "i4", "u1"):
            for size in (1, 5, 200_000):
                a = (np.arange(size) % 7 + r).astype(dt)
                b1, b2 = (
                    a.copy() if r == root else np.zeros_like(a),
                    a.copy() if r == root else np.zeros_like(a),
                )
                c.Bcast(b1, root)
                raw.Bcast(b2, root)
                assert np.array_equal(b1, b2)
                g1, g2 = np.zeros(size * n, dt), np.zeros(size * n, dt)
                c.Gather(a, g1, root)
                raw.Gather(a, g2, root)
                if r == root:
                    assert np.array_equal(g1, g2)
                src = (np.arange(size * n) % 5 + r).astype(dt)
                s1, s2 = np.zeros(size, dt), np.zeros(size, dt)
                c.Scatter(src, s1, root)
                raw.Scatter(src, s2, root)
                assert np.array_equal(s1, s2)
                for op in (MPI.SUM, MPI.MAX, MPI.MIN):
                    r1, r2 = np.zeros_like(a), np.zeros_like(a)
                    c.Reduce(a, r1, op, root)
                    raw.Reduce(a, r2, op, root)
                    if r == root:
                        assert np.array_equal(r1, r2), (dt, size, op)
    assert c.allgather(r * 2) == raw.allgather(r * 2)
    assert c.alltoall([(r, k) for k in range(n)]) == raw.alltoall([(r, k) for k in range(n)])
    assert c.allreduce(r, MPI.MAX) == raw.allreduce(r, MPI.MAX)
    assert c.allreduce(float(r)) == raw.allreduce(float(r))
    c.barrier()
    c.Barrier()
    for dt in ("f8", "i8", "c16"):
        for size in (3, 150_000):
            a = (np.arange(size) + r).astype(dt)
            x1, x2 = np.zeros(size * n, dt), np.zeros(size * n, dt)
            c.Allgather(a, x1)
            raw.Allgather(a, x2)
            assert np.array_equal(x1, x2)
            t = (np.arange(size * n) * (r + 1)).astype(dt)
            y1, y2 = np.zeros(size * n, dt), np.zeros(size * n, dt)
            c.Alltoall(t, y1)
            raw.Alltoall(t, y2)
            assert np.array_equal(y1, y2)
            z1, z2 = np.zeros(size, dt), np.zeros(size, dt)
            c.Allreduce(a, z1, MPI.SUM)
            raw.Allreduce(a, z2, MPI.SUM)
            assert np.array_equal(z1, z2)
    ok(c, "collectives")


def check_derived(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    r = c.rank
    assert c.Get_name() == c.name == MPI.COMM_WORLD.Get_name() == "MPI_COMM_WORLD"  # the wrapped one's
    assert c.Get_attr(MPI.TAG_UB) == raw.Get_attr(MPI.TAG_UB) > 0  # local queries, as the raw comm
    assert c.Get_errhandler() == raw.Get_errhandler()
    top = c.Get_attr(MPI.TAG_UB)  # every tag up to it travels
    request = c.isend(("top tag", r), (r + 1) % c.size, top)  # not send: to itself at -n 1 (MPICH)
    assert c.recv(None, (r - 1) % c.size, top) == ("top tag", (r - 1) % c.size)
    request.wait()
    keyval = MPI.Comm.Create_keyval()
    c.Set_attr(keyval, "mine")
    assert c.Get_attr(keyval) == "mine"
    c.Delete_attr(keyval)
    assert c.Get_attr(keyval) is None
    MPI.Comm.Free_keyval(keyval)
    c.Set_errhandler(MPI.ERRORS_RETURN)  # what it runs with: accepted (ports call it at start-up)
    try:
        c.Set_errhandler(MPI.ERRORS_ARE_FATAL)
    except mpish.comm.Unsupported:
        pass
    else:
        raise AssertionError("Set_errhandler must stay unsupported (a forged message would end the job)")
    d = c.Dup()
    assert isinstance(d, mpish.comm.SecureComm) and d.size == c.size
    assert d.allreduce(r) == raw.allreduce(r)
    assert d.raw is not c.raw
    color = r % 2
    s = c.Split(color, -r)
    rs = raw.Split(color, -r)
    assert isinstance(s, mpish.comm.SecureComm)
    assert (s.rank, s.size) == (rs.Get_rank(), rs.Get_size())
    assert s.allgather(r) == rs.allgather(r)
    if s.size > 1:
        s.send(("split", r), (s.rank + 1) % s.size, 2)
        assert s.recv(None, (s.rank - 1) % s.size, 2)[0] == "split"
    none = c.Split(MPI.UNDEFINED if r == 0 else 1)
    assert (none == MPI.COMM_NULL) == (r == 0)
    if none != MPI.COMM_NULL:
        assert none.allreduce(1) == c.size - 1
        none.Free()
    rs.Free()
    s.Free()
    d.Free()
    ok(c, "dup_split")


def _truncated(call: object) -> None:
    """``call()`` must raise MPI's truncation error, as raw MPI does for a too-small buffer."""
    try:
        call()  # type: ignore[operator]
    except MPI.Exception as exc:
        assert exc.Get_error_class() == MPI.ERR_TRUNCATE, exc
    else:
        raise AssertionError("a too-small receive buffer did not raise ERR_TRUNCATE")


def check_truncation(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    """A too-small buffer raises ERR_TRUNCATE like raw MPI and leaves nothing queued behind."""
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    # Raw Open MPI 5.0 is no reference here: it does not report a truncated receive from
    # itself, and it crashes (btl/sm single-copy get) truncating a 3 MB message.
    open_mpi = MPI.Get_library_version().startswith("Open MPI")
    for comm in (c,) if open_mpi else (raw, c):
        for size in (100, 3_000_000):  # one record; several records
            small = np.zeros(10, "u1")
            req = comm.Irecv(small, src, 50)
            sends = [comm.Isend(np.full(size, 1, "u1"), dest, 50)]
            _truncated(req.Wait)
            sends.append(comm.Isend(np.full(size, 2, "u1"), dest, 51))
            _truncated(lambda: comm.Recv(small, src, 51))  # noqa: B023 - called at once
            # The next messages of both envelopes arrive intact: no continuation record of
            # the truncated messages was left queued to be taken for theirs.
            sends += [comm.Isend(np.arange(4, dtype="i4") + r + tag, dest, tag) for tag in (50, 51)]
            for tag in (50, 51):
                got = np.zeros(4, "i4")
                if tag == 50:
                    comm.Irecv(got, src, tag).Wait()
                else:
                    comm.Recv(got, src, tag)
                assert np.array_equal(got, np.arange(4, dtype="i4") + src + tag), (comm, size, got)
            mpish.comm.Waitall(sends)
    ok(c, "truncation")


def check_request_helpers(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    """mpish.comm.Waitall & co. take SecureRequest and MPI.Request objects in one list."""
    r, n = c.rank, c.size
    dest, src = (r + 1) % n, (r - 1) % n
    a, b = np.zeros(3, "i8"), np.zeros(3, "i8")
    recvs = [c.Irecv(a, src, 60), raw.Irecv(b, src, 60)]
    sends = [c.Isend(np.full(3, r, "i8"), dest, 60), raw.Isend(np.full(3, r, "i8"), dest, 60)]
    statuses = [MPI.Status(), MPI.Status()]
    assert mpish.comm.Waitall(recvs, statuses)
    assert np.all(a == src) and np.all(b == src)
    assert [s.Get_source() for s in statuses] == [src, src]
    while not mpish.comm.Testall(sends):
        pass
    objs = [c.irecv(None, src, 61)]
    sends = [c.isend({"from": r}, dest, 61)]
    assert mpish.comm.waitall(objs) == [{"from": src}]
    assert mpish.comm.Waitany(sends) == 0
    assert mpish.comm.Waitany([]) == MPI.UNDEFINED
    # Waitsome: the status of every completed request is set, the first one's too (it was not)
    recvs = [c.Irecv(a, src, 62), MPI.REQUEST_NULL, raw.Irecv(b, src, 63)]
    sends = [c.Isend(np.full(3, r, "i8"), dest, 62), raw.Isend(np.full(3, r, "i8"), dest, 63)]
    statuses = [MPI.Status() for _ in recvs]
    done: list[int] = []
    while (indices := mpish.comm.Waitsome(recvs, statuses)) is not None:
        done += indices
    assert sorted(done) == [0, 2], done
    assert [(statuses[i].Get_source(), statuses[i].Get_tag()) for i in (0, 2)] == [(src, 62), (src, 63)]
    mpish.comm.Waitall(sends)
    ok(c, "request_helpers")


def check_proc_null(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    """PROC_NULL is a no-op peer, as in MPI (its matched probe is MPI.MESSAGE_NO_PROC); a
    negative rank never picks another peer's key."""
    st, rst = MPI.Status(), MPI.Status()
    for comm, status in ((c, st), (raw, rst)):
        comm.Send(np.ones(4), MPI.PROC_NULL, 9)
        comm.send({"x": 1}, MPI.PROC_NULL, 9)
        buf = np.full(4, 7.0)
        comm.Recv(buf, MPI.PROC_NULL, 9, status)
        assert np.array_equal(buf, np.full(4, 7.0))
        assert comm.recv(None, MPI.PROC_NULL, 9) is None
        assert comm.irecv(source=MPI.PROC_NULL, tag=9).wait() is None
        comm.isend("x", MPI.PROC_NULL, 9).wait()
    seen = []  # a matched probe of PROC_NULL is MPI.MESSAGE_NO_PROC until received (helper-134)
    for comm in (c, raw):
        message = comm.Mprobe(MPI.PROC_NULL)
        no_proc = [message == MPI.MESSAGE_NO_PROC, comm.Improbe(MPI.PROC_NULL) == MPI.MESSAGE_NO_PROC]
        message.Recv(np.zeros(1))
        seen.append([*no_proc, message == MPI.MESSAGE_NO_PROC, message == MPI.MESSAGE_NULL])
    assert seen[0] == seen[1] == [True, True, False, True], seen
    assert (st.Get_source(), st.Get_count(MPI.BYTE)) == (rst.Get_source(), rst.Get_count(MPI.BYTE))
    before = [c._p2p.sealers[p].next_counter(9) for p in range(c.size)]
    for bad in (-5, c.size):
        try:
            c.Send(np.ones(1), bad, 9)
        except MPI.Exception as exc:
            assert exc.Get_error_class() == MPI.ERR_RANK
        else:
            raise AssertionError(f"Send to rank {bad} did not fail")
    assert [c._p2p.sealers[p].next_counter(9) for p in range(c.size)] == before  # no key touched
    ok(c, "proc_null")


def _start_once(request: Any) -> None:
    request.Start()
    request.Wait()
    request.Free()


def _outcome(call: Any, comm: Any) -> str:
    """"ok", or the MPI error class's name ``call(comm)`` raised (another exception: its type's name)."""
    try:
        call(comm)
    except MPI.Exception as exc:
        return {MPI.ERR_TAG: "ERR_TAG", MPI.ERR_RANK: "ERR_RANK"}.get(exc.Get_error_class(), str(exc))
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def check_proc_null_takes_any_buffer_yet_refuses_bad_tags(
    c: mpish.comm.SecureComm, raw: MPI.Intracomm
) -> None:
    """To or from PROC_NULL, mpi4py reads no buffer and pickles nothing (a strided view, a
    read-only buffer, a count past the end, an object that cannot be pickled all pass), yet MPI
    still refuses a bad tag (negative, past TAG_UB): secure does both as raw does."""
    null, upper = MPI.PROC_NULL, raw.Get_attr(MPI.TAG_UB)
    a, b = np.arange(10, dtype="i"), np.zeros(10, "i")
    cases: dict[str, Any] = {
        "Send strided": lambda m: m.Send(a[::2], null),
        "Send past end": lambda m: m.Send([a, 50, MPI.INT], null),
        "Send str": lambda m: m.Send("no buffer", null),
        "Recv strided": lambda m: m.Recv(b[::2], null),
        "Recv read-only": lambda m: m.Recv(b"abc", null),
        "Isend strided": lambda m: m.Isend(a[::2], null).Wait(),
        "Irecv strided": lambda m: m.Irecv(b[::2], null).Wait(),
        "Ssend strided": lambda m: m.Ssend(a[::2], null),
        "Sendrecv strided": lambda m: m.Sendrecv(a[::2], null, recvbuf=b[::2], source=null),
        "Sendrecv_replace strided": lambda m: m.Sendrecv_replace(b[::2], null, source=null),
        "Send_init strided": lambda m: _start_once(m.Send_init(a[::2], null)),
        "Recv_init strided": lambda m: _start_once(m.Recv_init(b[::2], null)),
        "send lambda": lambda m: m.send(lambda: 0, null),
        "isend lambda": lambda m: m.isend(lambda: 0, null).wait(),
        "Send tag -5": lambda m: m.Send(a, null, -5),
        "Send tag past TAG_UB": lambda m: m.Send(a, null, upper + 1),
        "Recv tag -5": lambda m: m.Recv(b, null, -5),
        "Recv tag past TAG_UB": lambda m: m.Recv(b, null, upper + 1),
        "Irecv tag -5": lambda m: m.Irecv(b, null, -5),
        "Probe tag -5": lambda m: m.Probe(null, -5),
        "Iprobe tag -5": lambda m: m.Iprobe(null, -5),
        "recv tag -5": lambda m: m.recv(None, null, -5),
        "Recv ANY_TAG": lambda m: m.Recv(b, null, MPI.ANY_TAG),
        "Recv TAG_UB": lambda m: m.Recv(b, null, upper),
        "Recv_init source past size": lambda m: m.Recv_init(b, m.Get_size() + 5),  # ERR_RANK at once
        "Recv_init tag -5": lambda m: m.Recv_init(b, null, -5),
    }
    if upper >= 2**31 - 1:  # Open MPI: TAG_UB is C's INT_MAX, and mpi4py cannot pass a larger tag
        cases = {name: call for name, call in cases.items() if "past TAG_UB" not in name}
    differ = {name: (_outcome(call, raw), _outcome(call, c)) for name, call in cases.items()}
    differ = {name: both for name, both in differ.items() if both[0] != both[1]}
    assert differ == {}, f"raw, secure: {differ}"
    assert np.array_equal(b, np.zeros(10, "i"))
    ok(c, "proc_null_as_raw")


def check_numpy_integers_and_floats_as_ranks_tags_and_roots_as_mpi4py_reads_them(
    c: mpish.comm.SecureComm, raw: MPI.Intracomm
) -> None:
    """An HPC porter: ``tag=np.int64(3)`` (``for dest in np.arange(...)``) raised AttributeError
    ('to_bytes') on the sender and hung the receiver; a float rank (``myid + nprocs/2``, mpi4py's
    osu_multi_lat demo) raised struct.error; a float root TypeError. mpi4py takes numpy integers
    and truncates floats: so does secure, with the results of raw."""
    size, rank = c.size, c.rank
    to, fro = np.int64((rank + 1) % size), float((rank - 1) % size)
    results = []
    for comm in (raw, c):
        got = np.zeros(3, "i8")
        request = comm.Irecv(got, fro, np.int32(5))
        comm.Send(np.full(3, rank, "i8"), to, np.int64(5))
        request.Wait()
        back = np.zeros(3, "i8")
        comm.Sendrecv(np.full(3, rank, "i8"), to, 6.0, back, fro, np.int16(6))
        request = comm.irecv(source=np.int64(fro), tag=np.int64(7))
        comm.send({"from": rank}, dest=float(to), tag=np.uint8(7))
        obj = request.wait()
        request = comm.Issend(np.full(3, rank, "i8"), to, np.int64(8))
        third = np.zeros(3, "i8")
        comm.Recv(third, np.int64(fro), 8.0)
        request.Wait()
        root = np.int64(size - 1)
        results.append((got.tolist(), back.tolist(), obj, third.tolist(), comm.bcast(rank, root=root),
                        comm.gather(rank, root=float(size - 1)), comm.reduce(rank, root=root)))
    assert results[0] == results[1], results
    ok(c, "numpy_and_float_ranks")


def _at_addresses(buf: np.ndarray, n: int) -> list[MPI.Datatype]:
    """One datatype per peer: n entries of row k of ``buf``, at its absolute address."""
    base, dt = MPI.Get_address(buf), MPI.INT64_T
    return [MPI.Datatype.Create_struct([n], [base + k * n * 8], [dt]).Commit() for k in range(len(buf))]


def check_a_bare_none_or_a_float_count_to_a_rank_is_mpi4pys_type_error(
    c: mpish.comm.SecureComm, raw: MPI.Intracomm
) -> None:
    """To or from a real rank, mpi4py takes no bare None as a buffer (``[None, 0, MPI.BYTE]`` is
    the empty one) and no float count or displacement (``[buf, 2.0, MPI.INT]``): TypeError at
    the call. Secure sent an empty message for None and truncated the float (two entries sent)."""
    me, a, b = c.Get_rank(), np.arange(4, dtype="i"), np.zeros(4, "i")
    cases: dict[str, Any] = {
        "Send None": lambda m: m.Send(None, me, 3),
        "Isend None": lambda m: m.Isend(None, me, 3).Wait(),
        "Ssend None": lambda m: m.Ssend(None, me, 3),
        "Recv None": lambda m: m.Recv(None, me, 3),
        "Irecv None": lambda m: m.Irecv(None, me, 3).Wait(),
        "Send float count": lambda m: m.Send([a, 2.0, MPI.INT], me, 3),
        "Recv float count": lambda m: m.Recv([b, 2.0, MPI.INT], me, 3),
        "Send float displacement": lambda m: m.Send([a, (2, 1.0), MPI.INT], me, 3),
    }
    outcomes = {name: (_outcome(call, raw), _outcome(call, c)) for name, call in cases.items()}
    assert all(both == ("TypeError", "TypeError") for both in outcomes.values()), f"raw, secure: {outcomes}"
    request = c.Isend([None, 0, MPI.BYTE], me, 4)  # the empty buffer, and nothing of the above queued
    status = MPI.Status()
    c.Recv([None, 0, MPI.BYTE], MPI.ANY_SOURCE, MPI.ANY_TAG, status)
    request.Wait()
    assert (status.Get_tag(), status.Get_count()) == (4, 0), (status.Get_tag(), status.Get_count())
    ok(c, "bare_none_and_float_count")


def check_alltoallw_bottom(c: mpish.comm.SecureComm, raw: MPI.Intracomm) -> None:
    """Alltoallw with MPI.BOTTOM (datatypes at absolute addresses), as raw MPI (was Unsupported)."""
    size, n = c.size, 3
    results = []
    for comm in (raw, c):
        sbuf = np.array([[100 * c.rank + k] * n for k in range(size)], "i8")
        rbuf, plain = np.full((size, n), -1, "i8"), np.full((size, n), -1, "i8")
        stypes, rtypes = _at_addresses(sbuf, n), _at_addresses(rbuf, n)
        ones, zeros = [1] * size, [0] * size
        comm.Alltoallw((MPI.BOTTOM, (ones, zeros), stypes), (MPI.BOTTOM, (ones, zeros), rtypes))
        counts, displs = [n] * size, [k * n * 8 for k in range(size)]
        comm.Alltoallw((MPI.BOTTOM, (ones, zeros), stypes), (plain, (counts, displs), [MPI.INT64_T] * size))
        for t in stypes + rtypes:
            t.Free()
        assert np.array_equal(rbuf, plain)
        results.append(rbuf)
    assert np.array_equal(results[0], results[1])
    assert [row[0] for row in results[1]] == [100 * k + c.rank for k in range(size)]
    ok(c, "alltoallw_bottom")


def check_unsupported(c: mpish.comm.SecureComm) -> None:
    """Unsupported names are NotImplementedError and AttributeError (hasattr/getattr work)."""
    for name in ("Ineighbor_alltoall", "Accept", "Spawn"):
        assert not hasattr(c, name)
        assert getattr(c, name, None) is None
        try:
            getattr(c, name)
        except NotImplementedError as exc:
            assert name in str(exc) and isinstance(exc, AttributeError)
        else:
            raise AssertionError(f"{name} did not raise NotImplementedError")
    for send in (c.Send, MPI.COMM_WORLD.Send):  # not a buffer at all: a TypeError, as mpi4py's
        try:
            send("not a buffer", c.rank, 3)
        except TypeError as exc:
            assert not isinstance(exc, NotImplementedError), exc
        else:
            raise AssertionError("Send of a str did not raise TypeError")
    ok(c, "unsupported")


def main() -> None:
    raw = MPI.COMM_WORLD.Dup()
    c = mpish.secure(MPI.COMM_WORLD)
    check_objects(c, raw)
    check_buffers(c, raw)
    check_nonblocking(c)
    check_any(c, raw)
    check_probe(c)
    check_collectives(c, raw)
    check_derived(c, raw)
    check_truncation(c, raw)
    check_request_helpers(c, raw)
    check_proc_null(c, raw)
    check_proc_null_takes_any_buffer_yet_refuses_bad_tags(c, raw)
    check_numpy_integers_and_floats_as_ranks_tags_and_roots_as_mpi4py_reads_them(c, raw)
    check_a_bare_none_or_a_float_count_to_a_rank_is_mpi4pys_type_error(c, raw)
    check_alltoallw_bottom(c, raw)
    check_unsupported(c)
    assert c.rejected == 0
    c.Barrier()
    c.Free()
    raw.Free()
    if MPI.COMM_WORLD.rank == 0:  # (a freed communicator's rank raises, as mpi4py's)
        print("ALL OK", flush=True)


if __name__ == "__main__":
    run(main)
