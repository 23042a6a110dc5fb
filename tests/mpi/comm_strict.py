"""Run under ``mpiexec -n 2``: with ``strict=True`` a forged record raises in the receiving call
(a forged acknowledgement: in the synchronous send, once its message was received).

Rank 0 writes forged and replayed records on the raw duplicate, then the genuine message;
rank 1's receive raises the record's error (instead of dropping it), counts it in
``rejected``, and the next receive returns the genuine message. Rank 1 prints
``STRICT <case> <error type>`` per raised error and ``ALL OK``; any failure aborts the job.
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np
from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm import SecureComm
from mpish.comm.bulk import BULK_CHUNK
from mpish.comm.synchronous import ACK_RECORD, ACK_TAG
from mpish.wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from mpish.wire.noise import TAGLEN
from mpish.wire.record import HEADER, HEADER_SIZE, RecordType

WORLD = MPI.COMM_WORLD
RECORD = HEADER_SIZE + BULK_CHUNK + TAGLEN  # the largest continuation record
LONG_INTS = 1 << 20  # 4 MiB: a first record and continuation records
LONG_OBJECT = {"data": b"x" * (3 << 20)}


def attacker(c: SecureComm) -> None:
    raw, session = c.raw, c._p2p.sealers[1].session
    forged = HEADER.pack(1, RecordType.DATA, 0, 0, session, 0, 1, 5, 0, 64) + os.urandom(64)
    raw.Send(bytearray(forged), 1, 5)  # a well-formed header, random ciphertext
    c.send("genuine 1", 1, 5)
    WORLD.Barrier()
    record = bytearray(c._p2p.sealers[1].seal(pickle.dumps("once"), channel=6))
    raw.Send(record, 1, 6)
    raw.Send(record, 1, 6)  # a replay
    c.send("genuine 2", 1, 6)
    WORLD.Barrier()
    raw.Send(bytearray(os.urandom(200)), 1, 7)  # on a posted receive
    c.Send(np.full(8, 7, "i4"), 1, 7)
    WORLD.Barrier()
    for tag in (8, 9):  # Ssend, then Issend polled meanwhile by other calls
        c._comms[3].Send(bytearray(os.urandom(ACK_RECORD)), 1, ACK_TAG)  # an acknowledgement of nothing
        time.sleep(0.5)  # rank 1's send meets it before its own acknowledgement
        assert c.recv(None, 1, tag) == "synchronous"
        WORLD.Barrier()
    for tag in (10, 11, 12, 13):  # a forged continuation record ahead of a genuine long message's
        junk = bytearray(os.urandom(RECORD + 1 if tag == 13 else 1000))  # 13: past any record (helper-139)
        forged = c._comms[1].Isend(junk, 1, tag)  # on the bulk duplicate (a long one waits for its receive)
        if tag == 12:
            c.send(LONG_OBJECT, 1, tag)
        else:
            c.Send(np.arange(LONG_INTS, dtype="i4"), 1, tag)  # returns: its records were all received
        forged.Wait()
        WORLD.Barrier()
    c.send("A", 1, 14)  # then B, with a forged record inside (helper-139: B was given before A)
    forged = c._comms[1].Isend(bytearray(os.urandom(1000)), 1, 15)
    c.send(LONG_OBJECT, 1, 15)
    forged.Wait()
    WORLD.Barrier()
    WORLD.Barrier()  # rank 1 posted three receives of tag 16
    forged = c._comms[1].Isend(bytearray(os.urandom(1000)), 1, 16)
    c.Send(np.arange(LONG_INTS, dtype="i4"), 1, 16)
    c.Send(np.full(4, 2, "i4"), 1, 16)
    forged.Wait()
    WORLD.Barrier()
    forged = c._comms[1].Isend(bytearray(os.urandom(1000)), 1, 17)  # for a receive buffer too small
    c.Send(np.arange(LONG_INTS, dtype="i4"), 1, 17)
    forged.Wait()
    WORLD.Barrier()


def raised(case: str, call: object, errors: tuple[type[BaseException], ...]) -> None:
    try:
        call()  # type: ignore[operator]
    except errors as exc:
        print(f"STRICT {case} {type(exc).__name__}", flush=True)
    else:
        raise AssertionError(f"{case}: the forged record did not raise")


def victim(c: SecureComm) -> None:
    raised("forged", lambda: c.recv(None, 0, 5), (AuthenticationError, RemoteProtocolError))
    assert c.recv(None, 0, 5) == "genuine 1"
    WORLD.Barrier()
    assert c.recv(None, 0, 6) == "once"
    raised("replay", lambda: c.recv(None, 0, 6), (ReplayError,))
    assert c.recv(None, 0, 6) == "genuine 2"
    WORLD.Barrier()
    got = np.zeros(8, "i4")
    request = c.Irecv(got, 0, 7)
    raised("posted", request.Wait, (AuthenticationError, RemoteProtocolError))
    assert not np.any(got), "a forged record touched the receive buffer"
    c.Recv(got, 0, 7)
    assert np.all(got == 7)
    WORLD.Barrier()
    # raised once the send completed (helper-129): raised at once, it left the message's own
    # acknowledgement unread, so a program that sent again delivered the message twice
    raised("acknowledgement", lambda: c.ssend("synchronous", 0, 8),
           (AuthenticationError, RemoteProtocolError))
    assert not c._p2p.acks.pending, "the Ssend raised before its message was received"
    WORLD.Barrier()
    request = c.issend("synchronous", 0, 9)
    for _ in range(150):  # calls that poll the request on their way out, as the progress thread does:
        c.Iprobe(0, 99)  # the error they met was dropped, and Wait returned as if nothing was (helper-132)
        time.sleep(0.01)
    raised("acknowledgement_polled", request.wait, (AuthenticationError, RemoteProtocolError))
    WORLD.Barrier()
    # a forged record met inside a genuine long message (helper-137): raised where it was met,
    # it left the message's other records in MPI, the sender's Send and the next receive hung
    expected = np.arange(LONG_INTS, dtype="i4")
    got, again = np.zeros(LONG_INTS, "i4"), np.zeros(LONG_INTS, "i4")
    raised("continuation", lambda: c.Recv(got, 0, 10), (AuthenticationError, RemoteProtocolError))
    c.Recv(again, 0, 10)
    assert np.array_equal(again, expected), "the next receive did not get the genuine long message"
    WORLD.Barrier()
    again[:] = 0
    raised("continuation_posted", c.Irecv(got, 0, 11).Wait, (AuthenticationError, RemoteProtocolError))
    c.Recv(again, 0, 11)
    assert np.array_equal(again, expected)
    WORLD.Barrier()
    raised("continuation_object", lambda: c.recv(None, 0, 12), (AuthenticationError, RemoteProtocolError))
    assert c.recv(None, 0, 12) == LONG_OBJECT
    WORLD.Barrier()
    again[:] = 0
    raised("continuation_oversized", lambda: c.Recv(got, 0, 13), (RemoteProtocolError,))
    c.Recv(again, 0, 13)
    assert np.array_equal(again, expected)
    WORLD.Barrier()
    c.probe(0, 14)  # A is taken out of MPI (a probe authenticates it), then B raises
    raised("continuation_after_a_probe", lambda: c.recv(None, 0, 15),
           (AuthenticationError, RemoteProtocolError))
    first, second = (c.recv(None, MPI.ANY_SOURCE, MPI.ANY_TAG) for _ in range(2))
    assert first == "A" and second == LONG_OBJECT, "the kept message overtook one received before it"
    WORLD.Barrier()
    # the kept message goes to the next posted receive (helper-139: it went to early, where only a
    # receive posted later looks, so the next posted one got the message after it, and the last hung)
    bufs = [np.zeros(LONG_INTS, "i4") for _ in range(3)]
    requests = [c.Irecv(buf, 0, 16) for buf in bufs]
    WORLD.Barrier()
    raised("continuation_posted_twice", requests[0].Wait, (AuthenticationError, RemoteProtocolError))
    status = MPI.Status()
    requests[1].Wait(status)
    assert status.Get_count(MPI.INT) == LONG_INTS and np.array_equal(bufs[1], expected), "not the kept one"
    requests[2].Wait(status)
    assert status.Get_count(MPI.INT) == 4 and np.all(bufs[2][:4] == 2), "not the message after it"
    WORLD.Barrier()
    # a receive buffer too small for it: the error raised, the genuine message was lost
    raised("continuation_truncated", lambda: c.Recv(np.zeros(16, "i4"), 0, 17),
           (AuthenticationError, RemoteProtocolError))
    again[:] = 0
    c.Recv(again, 0, 17)
    assert np.array_equal(again, expected), "the next receive did not get the genuine long message"
    WORLD.Barrier()
    assert c.rejected == 12, c.rejected


def main() -> None:
    assert WORLD.Get_size() == 2, "run with mpiexec -n 2"
    c = mpish.secure(WORLD, strict=True)
    if c.rank == 0:
        attacker(c)
    else:
        victim(c)
    c.Barrier()
    if c.rank == 1:
        print("ALL OK", flush=True)
    c.Free()


if __name__ == "__main__":
    run(main)
