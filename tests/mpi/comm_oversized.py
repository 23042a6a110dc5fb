"""Run under ``mpiexec -n 3``: messages longer than any record, written by a rogue rank on the
communicators mpish made, are dropped whole and counted; the genuine message arrives and the
process ends cleanly.

Rank 2 is the rogue: it took part in ``secure()`` as every rank must, so it holds the same MPI
contexts, and writes 64 MiB + 1 of zeros where mpish listens. Found by a security review: Open
MPI 5 copies a long message whole into a shorter receive buffer, and mpish received unwanted
ones into ``bytearray(0)``, whose buffer is a static of libpython's: the interpreter's globals
overwritten (a chosen address jumped to), ``double free or corruption`` in ``Ssend``, SIGSEGV
in ``recv`` and at exit. MPICH truncates safely: there the checks pass on the old code too.
Prints ``OK <check>`` per check and ``ALL OK``.
"""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm.ending import ENDING_TAG
from mpish.comm.handles import LOCK
from mpish.comm.limits import MATCH_FIRST
from mpish.comm.synchronous import ACK_TAG

WORLD = MPI.COMM_WORLD
BIG = (64 << 20) + 1
REJECTED: list[BaseException] = []
PENDING: list[tuple[MPI.Request, np.ndarray]] = []  # rank 0's forged notice, taken at rank 1's exit


def ok(name: str) -> None:
    WORLD.Barrier()
    if WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def rogue_send(comm: MPI.Comm, dest: int, tag: int) -> None:
    """Rank 2's message of BIG bytes; it completes once the victim received (and dropped) it."""
    request = comm.Isend([np.zeros(BIG, "u1"), MPI.BYTE], dest, tag)
    deadline = time.monotonic() + 60
    while not request.Test():
        assert time.monotonic() < deadline, "the victim never took the rogue's message"
        time.sleep(0.01)


def check_an_oversized_acknowledgement_is_dropped_and_ssend_completes(c: mpish.comm.SecureComm) -> None:
    """Rank 1 in Ssend waits for rank 0's acknowledgement (any source, on the acknowledgement
    communicator): the rogue's oversized one is dropped whole and counted."""
    if c.rank == 2:
        rogue_send(c._comms[3], 1, ACK_TAG)
    elif c.rank == 1:
        before = len(REJECTED)
        c.Ssend(np.full(4, 1.0), 0, 7)
        assert len(REJECTED) == before + 1, REJECTED
    else:
        time.sleep(1.0)  # the rogue's message is there first
        got = np.zeros(4)
        c.Recv(got, 1, 7)
        assert np.all(got == 1.0), got
    ok("oversized_acknowledgement")


def check_an_oversized_message_to_a_receive_of_any_source_is_dropped(c: mpish.comm.SecureComm) -> None:
    if c.rank == 2:
        rogue_send(c._comms[0], 1, 5)
    elif c.rank == 1:
        before = len(REJECTED)
        assert c.recv(None, MPI.ANY_SOURCE, 5) == "genuine"
        assert len(REJECTED) == before + 1, REJECTED
    else:
        time.sleep(1.0)
        c.send("genuine", 1, 5)
    ok("oversized_any_source")


def check_a_message_past_two_gib_sent_from_64_kib_is_dropped(c: mpish.comm.SecureComm) -> None:
    """A review (helper-127): Open MPI 5 has no MPI_Get_count_c, so a probed size past 2**31
    bytes was UNDEFINED (-32766), which passed every size check and was received into a record
    buffer. The rogue sends 2 GiB + 1 from 64 KiB (a send datatype of extent 0 is legal).
    Open MPI only: under MPICH such a message truncated by the receive posted for it waits for
    good (the victim's recv too: an availability attack, open, measured 2026-12-07)."""
    if MATCH_FIRST:
        if c.rank == 2:
            chunk = MPI.BYTE.Create_contiguous(64 << 10)
            parts = [chunk.Create_resized(0, 0), MPI.BYTE.Create_resized(0, 0)]
            huge = MPI.Datatype.Create_struct([(1 << 31) // (64 << 10), 1], [0, 0], parts).Commit()
            source = np.zeros(64 << 10, "u1")
            request = c._comms[0].Isend([source, 1, huge], 1, 8)
            deadline = time.monotonic() + 120
            while not request.Test():
                assert time.monotonic() < deadline, "the victim never took the rogue's message"
                time.sleep(0.01)
            for datatype in (huge, chunk, *parts):
                datatype.Free()
        elif c.rank == 1:
            before = len(REJECTED)
            assert c.recv(None, MPI.ANY_SOURCE, 8) == "genuine"
            assert len(REJECTED) == before + 1, REJECTED  # (Open MPI: "a message of 2147483649 bytes")
        else:
            time.sleep(1.0)
            c.send("genuine", 1, 8)
    ok("past_two_gib")


def check_a_cancel_of_a_receive_an_oversized_message_matched_is_a_cancel(c: mpish.comm.SecureComm) -> None:
    """A review (helper-129): the rogue's message, longer than any record, matched rank 1's posted
    Irecv before mpish looked at it; Cancel then raised MPI's truncation error, the next Wait an
    internal LocalProtocolError, and a Wait after that completed as a receive of 0 bytes from
    source -2, with the message never counted. Rank 1 holds mpish's lock while the message
    arrives, so the progress thread cannot take it first. Now the message is dropped and
    counted, the receive is cancelled, and the genuine message goes to the next receive."""
    if c.rank == 2:
        WORLD.Barrier()  # rank 1's receive is posted
        c._comms[0].Send([np.zeros(200_000, "u1"), MPI.BYTE], 1, 9)  # shared memory: returns once matched
        WORLD.Barrier()
        WORLD.Barrier()
    elif c.rank == 1:
        before, got, status = len(REJECTED), np.zeros(4), MPI.Status()
        with LOCK:
            request = c.Irecv(got, MPI.ANY_SOURCE, 9)
            WORLD.Barrier()
            WORLD.Barrier()  # the rogue's message matched the receive (raw MPI progress)
            request.Cancel()
        request.Wait(status)
        assert status.Is_cancelled(), (status.Get_source(), status.Get_count(MPI.BYTE))
        WORLD.Barrier()  # only now the genuine message: sent before, the receive would be owed it
        assert c.recv(None, MPI.ANY_SOURCE, 9) == "genuine"
        assert len(REJECTED) == before + 1, REJECTED  # (over TCP it may be dropped here, not by the cancel)
    else:
        WORLD.Barrier()
        WORLD.Barrier()
        WORLD.Barrier()
        c.send("genuine", 1, 9)
    ok("cancel_after_oversized")


def check_a_long_ending_notice_is_dropped_and_the_process_ends_cleanly(c: mpish.comm.SecureComm) -> None:
    """At exit rank 1 waits for rank 0's empty notice (it received a long message from it,
    comm/ending.py); a long message there is dropped whole, not received into an empty buffer
    (Open MPI: SIGSEGV in the exit handler, exit status 139). Checked by the exit status."""
    if c.rank == 0:
        c.Send(np.full(100_000, 1.0), 1, 6)  # long: rank 1 waits for its notice at exit
        notice = np.full(300_000, 0x41, "u1")  # received (and dropped) at rank 1's exit only
        PENDING.append((c._comms[3].Isend([notice, MPI.BYTE], 1, ENDING_TAG), notice))
    elif c.rank == 1:
        got = np.zeros(100_000)
        c.Recv(got, 0, 6)
        assert np.all(got == 1.0)
    ok("long_ending_notice")


def main() -> None:
    assert WORLD.Get_size() == 3, "run with 3 ranks"
    c = mpish.secure(WORLD, on_reject=REJECTED.append)
    check_an_oversized_acknowledgement_is_dropped_and_ssend_completes(c)
    check_an_oversized_message_to_a_receive_of_any_source_is_dropped(c)
    check_a_message_past_two_gib_sent_from_64_kib_is_dropped(c)
    check_a_cancel_of_a_receive_an_oversized_message_matched_is_a_cancel(c)
    check_a_long_ending_notice_is_dropped_and_the_process_ends_cleanly(c)
    if WORLD.Get_rank() == 0:
        print("ALL OK", flush=True)
    for request, _ in PENDING:  # rank 1 drops it in its exit handler, then ends
        request.Wait()
    # not freed: the exit handler (comm/ending.py) waits for the notices


if __name__ == "__main__":
    run(main)
