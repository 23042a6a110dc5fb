"""Run under ``mpiexec -n 2``: with ``strict=True`` a forged record raises in the receiving call.

Rank 0 writes forged and replayed records on the raw duplicate, then the genuine message;
rank 1's receive raises the record's error (instead of dropping it), counts it in
``rejected``, and the next receive returns the genuine message. Rank 1 prints
``STRICT <case> <error type>`` per raised error and ``ALL OK``; any failure aborts the job.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm import SecureComm
from mpish.wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from mpish.wire.record import HEADER, RecordType

WORLD = MPI.COMM_WORLD


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
    assert c.rejected == 3, c.rejected


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
