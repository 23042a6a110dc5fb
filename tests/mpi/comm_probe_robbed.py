"""Run under ``mpiexec -n 2`` or ``-n 3``: a probe never takes the message a posted receive is owed.

Rank 0 posts ``Irecv`` A; a forged record takes A's MPI receive (rank 1, the genuine sender,
writes it on the raw duplicate; with 3 ranks rank 2 does, and A and the probe take any source);
the genuine M1 (A's) and M2 follow; rank 0 then probes. Found by a security review: the probe's
matched probe found M1 (A's MPI receive was spent on the forged record), the flush posted A
again, after M1, so the probe reported M1 and A got M2: a truncation error when M2 was longer,
a silent swap when it was not. As in raw MPI, A gets M1 and the probe reports M2 (Probe,
Iprobe, Mprobe, Improbe). At MPI_THREAD_FUNNELED (no progress thread, as in a hybrid code):
the forged record waits in A's receive until rank 0 calls mpish, every run.
Prints ``OK <check>`` per check and ``ALL OK``.
"""

from __future__ import annotations

import os

import mpi4py

mpi4py.rc.thread_level = "funneled"  # (before MPI starts)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402
from mpi_main import run  # noqa: E402

import mpish  # noqa: E402
from mpish.comm import SecureComm  # noqa: E402

WORLD = MPI.COMM_WORLD


def ok(name: str) -> None:
    WORLD.Barrier()
    if WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def _probe(c: SecureComm, kind: str, source: int, tag: int) -> np.ndarray:
    """The message ``kind`` reports, received at the size it reports."""
    status = MPI.Status()
    if kind in ("Mprobe", "Improbe"):
        message = c.Mprobe(source, tag, status) if kind == "Mprobe" else None
        while message is None:
            message = c.Improbe(source, tag, status)
        got = np.zeros(status.Get_count(MPI.DOUBLE))
        message.Recv(got)
        return got
    if kind == "Probe":
        c.Probe(source, tag, status)
    else:
        while not c.Iprobe(source, tag, status):
            pass
    got = np.zeros(status.Get_count(MPI.DOUBLE))
    c.Recv(got, status.Get_source(), tag)
    return got


def _robbed_receive(c: SecureComm, owed: np.ndarray, source: int, tag: int) -> MPI.Request:
    """Rank 0's Irecv A, then the raw calls in which MPI matches the forged record to A and
    the genuine messages wait unexpected (the other ranks: :func:`_forge_then_send`)."""
    request = c.Irecv(owed, source, tag)
    for _ in range(3):
        WORLD.Barrier()
    return request


def _forge_then_send(c: SecureComm, forger: int, tag: int, *messages: np.ndarray) -> None:
    """The other ranks' part: the forger's record, then rank 1's genuine ``messages``."""
    WORLD.Barrier()
    if c.rank == forger:
        c.raw.Send([os.urandom(64), MPI.BYTE], 0, tag)
    WORLD.Barrier()
    if c.rank == 1:
        for message in messages:
            c.Send(message, 0, tag)
    WORLD.Barrier()


def check_a_probe_reports_the_message_after_the_one_a_robbed_posted_receive_is_owed(c: SecureComm) -> None:
    forger = 2 if c.size > 2 else 1
    source = MPI.ANY_SOURCE if c.size > 2 else 1
    for tag, (kind, later) in enumerate(
        [(kind, later) for kind in ("Probe", "Iprobe", "Mprobe", "Improbe") for later in (125, 1)], 20
    ):
        if c.rank == 0:
            owed = np.zeros(1)
            request = _robbed_receive(c, owed, source, tag)
            probed = _probe(c, kind, source, tag)
            request.Wait()
            assert owed[0] == 1.0 and len(probed) == later and probed[0] == 2.0, (kind, later, owed, probed)
        else:
            _forge_then_send(c, forger, tag, np.full(1, 1.0), np.full(later, 2.0))
    # M1 longer than A's buffer: A's Wait raises MPI's truncation, as raw; the probe still reports M2
    tag = 40
    if c.rank == 0:
        owed = np.zeros(1)
        request = _robbed_receive(c, owed, source, tag)
        probed = _probe(c, "Probe", source, tag)
        try:
            request.Wait()
        except MPI.Exception as exc:
            assert exc.Get_error_class() == MPI.ERR_TRUNCATE, exc
        else:
            raise AssertionError("a message longer than the robbed receive's buffer was taken")
        assert len(probed) == 125 and probed[0] == 2.0, probed
    else:
        _forge_then_send(c, forger, tag, np.full(2, 1.0), np.full(125, 2.0))
    assert c.rank != 0 or c.rejected == 9, c.rejected  # each forged record dropped and counted
    ok("probe_after_robbed_receive")


def check_a_message_a_spare_slot_took_goes_to_its_receive_and_a_probe_hangs_on_nothing(c: SecureComm) -> None:
    """A review of the probe's hand-over (helper-127), 3 ranks, rank 2 forging: (1) Irecv A of
    any source robbed, then M1 from rank 1 and M3 from rank 2 waiting: Probe(1) gave A M1 and
    reported M3, of rank 2, whose new MPI receive had taken it; (2) Irecv A and W (any tag),
    both robbed, M1 and M3 from rank 1: Iprobe(1) waited for ever in the flush of W's new
    receive. As raw: every message reaches one receive (or the probe) of its envelope, in order."""
    if c.size == 3:  # (rank 2 forges)
        for round_ in range(2):
            tag = 60 + round_
            if c.rank == 0:
                a, w = np.zeros(1), np.zeros(1)
                first = c.Irecv(a, MPI.ANY_SOURCE, tag)
                other = c.Irecv(w, MPI.ANY_SOURCE, MPI.ANY_TAG) if round_ else None
                for _ in range(3):
                    WORLD.Barrier()
                if round_ == 0:
                    probed = _probe(c, "Probe", 1, tag)  # M2 (sent after the barriers) or M1
                    first.Wait()
                    rest = np.zeros(1)
                    c.Recv(rest, MPI.ANY_SOURCE, tag)
                    got = sorted([a[0], probed[0], rest[0]])
                    assert got == [1.0, 2.0, 3.0] and probed[0] in (1.0, 2.0), (a, probed, rest)
                else:
                    assert not c.Iprobe(1, tag)  # (returns: nothing else came)
                    first.Wait()
                    other.Wait()
                    assert (a[0], w[0]) == (1.0, 3.0), (a, w)
            else:
                WORLD.Barrier()
                if c.rank == 2:
                    for _ in range(1 + round_):
                        c.raw.Send([os.urandom(64), MPI.BYTE], 0, tag)
                WORLD.Barrier()
                if c.rank == 1:
                    c.Send(np.full(1, 1.0), 0, tag)
                if c.rank == 1 + (round_ == 0):  # M3: rank 2's (genuine), or rank 1's second
                    c.Send(np.full(1, 3.0), 0, tag)
                WORLD.Barrier()
                if c.rank == 1 and round_ == 0:
                    c.Send(np.full(1, 2.0), 0, tag)
            WORLD.Barrier()
    ok("spare_slot_message")


def main() -> None:
    assert WORLD.Get_size() in (2, 3), "run with mpiexec -n 2 or 3"
    c = mpish.secure(WORLD)
    check_a_probe_reports_the_message_after_the_one_a_robbed_posted_receive_is_owed(c)
    check_a_message_a_spare_slot_took_goes_to_its_receive_and_a_probe_hangs_on_nothing(c)
    if c.rank == 0:
        print("ALL OK", flush=True)
    c.Free()


if __name__ == "__main__":
    run(main)
