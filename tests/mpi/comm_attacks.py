"""Run under ``mpiexec -n 2``: rank 0 attacks rank 1 by writing on the raw duplicate.

Each attack is followed by a genuine message that must still be delivered. Rank 1
prints ``REJECTED <attack> <error type>: <message>`` for each rejection and ``ALL OK``
at the end; any failure aborts the job. ``sys.argv[1]`` is the marker file a malicious
pickle would create if it were ever unpickled.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback

import numpy as np
from mpi4py import MPI

import mpish
from mpish.comm import COLL_TAG, SecureComm
from mpish.wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from mpish.wire.record import HEADER, HEADER_SIZE, RecordType

MARKER = sys.argv[1]
WORLD = MPI.COMM_WORLD


class Evil:
    """Unpickling this creates the marker file."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (MARKER, "w"))


EVIL = pickle.dumps(Evil())


def expect(name: str, call: object, errors: tuple[type[BaseException], ...]) -> None:
    try:
        value = call()  # type: ignore[operator]
    except errors as exc:
        print(f"REJECTED {name} {type(exc).__name__}: {exc}", flush=True)
    else:
        raise AssertionError(f"{name}: delivered {value!r} instead of being rejected")
    assert not os.path.exists(MARKER), "the malicious pickle was unpickled"


def sealed(c: SecureComm, payload: bytes, tag: int, dest: int = 1) -> bytearray:
    """A genuine record from this rank to ``dest`` on ``tag`` (what a sniffer would capture)."""
    return bytearray(c._p2p.sealers[dest].seal(payload, channel=tag))


def attacker(c: SecureComm) -> None:
    raw, bulk = c.raw, c._comms[1]
    sync = WORLD.Barrier
    # 1. random bytes; a well-formed header with a random tag; a plaintext pickle.
    raw.Send(bytearray(os.urandom(300)), 1, 5)
    header = HEADER.pack(1, RecordType.DATA, 0, 0, c._p2p.sealers[1].session, 0, 1, 5, 0, len(EVIL) + 16)
    raw.Send(bytearray(header + EVIL + os.urandom(16)), 1, 5)
    raw.Send(bytearray(EVIL), 1, 5)
    c.send("genuine 1", 1, 5)
    sync()
    # 2. bit flips in ciphertext, tag, counter and length of a genuine record.
    for offset in (HEADER_SIZE + 2, -1, 39, 42):
        record = sealed(c, pickle.dumps("flipped"), 6)
        record[offset] ^= 0x01
        raw.Send(record, 1, 6)
    c.send("genuine 2", 1, 6)
    sync()
    # 3. replay of a captured record.
    record = sealed(c, pickle.dumps("once"), 7)
    raw.Send(record, 1, 7)
    raw.Send(record, 1, 7)
    c.send("genuine 3", 1, 7)
    sync()
    # 4. a genuine record moved to another tag; to the collective lane.
    moved = sealed(c, pickle.dumps("moved"), 8)
    raw.Send(moved, 1, 9)  # a copy moved to tag 9, before the original reaches tag 8
    c.send("genuine 4", 1, 9)
    raw.Send(moved, 1, 8)  # the original, on its own tag: still delivered
    c._comms[2].Send(sealed(c, pickle.dumps("moved"), COLL_TAG), 1, COLL_TAG)
    sync()
    c.bcast("genuine bcast", 0)
    sync()
    # 5. reflection: rank 1 sends rank 0 a record that rank 0 wrote (it is its "sniffer").
    c.send("for rank 1", 1, 10)
    sync()
    expect("reflected", lambda: c.recv(None, 1, 10), (RemoteProtocolError,))
    assert c.recv(None, 1, 10) == "genuine 5"
    sync()
    # 6. oversize length field (2**32 - 1): rejected before any allocation.
    raw.Send(
        bytearray(HEADER.pack(1, RecordType.DATA, 0, 0, c._p2p.sealers[1].session, 0, 1, 11, 0, 2**32 - 1)),
        1,
        11,
    )
    c.send("genuine 6", 1, 11)
    sync()
    # 7. a forged continuation record injected into a large message's stream.
    bulk.Send(
        bytearray(
            HEADER.pack(1, RecordType.DATA, 1, 0, c._p2p.sealers[1].session, 0, 1, 12, 1, 32) + os.urandom(32)
        ),
        1,
        12,
    )
    c.Send(np.arange(400_000, dtype="f8"), 1, 12)
    c.Send(np.arange(400_000, dtype="f8"), 1, 12)
    sync()
    # 8. a malicious pickle inside a genuine-looking record on an irecv.
    record = sealed(c, EVIL, 13)
    record[-3] ^= 0x80
    raw.Send(record, 1, 13)
    c.send("genuine 8", 1, 13)
    sync()


def victim(c: SecureComm) -> None:
    raw = c.raw
    sync = WORLD.Barrier
    base = c.rejected
    expect("random-bytes", lambda: c.recv(None, 0, 5), (RemoteProtocolError,))
    expect("forged-header-pickle", lambda: c.recv(None, 0, 5), (AuthenticationError,))
    expect("plaintext-pickle", lambda: c.recv(None, 0, 5), (RemoteProtocolError,))
    assert c.recv(None, 0, 5) == "genuine 1"
    sync()
    for what in ("ciphertext", "tag", "counter", "length"):
        expect(f"bitflip-{what}", lambda: c.recv(None, 0, 6), (AuthenticationError, RemoteProtocolError))
    assert c.recv(None, 0, 6) == "genuine 2"
    sync()
    assert c.recv(None, 0, 7) == "once"
    expect("replay", lambda: c.recv(None, 0, 7), (ReplayError,))
    assert c.recv(None, 0, 7) == "genuine 3"
    sync()
    expect("moved-tag", lambda: c.recv(None, 0, 9), (RemoteProtocolError,))
    assert c.recv(None, 0, 9) == "genuine 4"
    assert c.recv(None, 0, 8) == "moved"  # the moved copy did not burn the original's counter
    sync()
    expect("moved-to-collective", lambda: c.bcast(None, 0), (RemoteProtocolError, AuthenticationError))
    assert c.bcast(None, 0) == "genuine bcast"
    sync()
    # 5. capture rank 0's record to us and move it: to ourselves (another source), back to rank 0.
    buf = bytearray(1024)
    status = MPI.Status()
    raw.Recv(buf, 0, 10, status)
    captured = buf[: status.Get_count()]
    raw.Send(captured, 1, 10)  # now it comes from rank 1, but says rank 0
    expect("moved-rank", lambda: c.recv(None, 1, 10), (RemoteProtocolError,))
    raw.Send(captured, 0, 10)  # reflected to its writer
    c.send("genuine 5", 0, 10)
    sync()
    sync()
    expect("oversize-length", lambda: c.recv(None, 0, 11), (RemoteProtocolError,))
    assert c.recv(None, 0, 11) == "genuine 6"
    sync()
    big = np.zeros(400_000)
    expect("forged-continuation", lambda: c.Recv(big, 0, 12), (AuthenticationError, RemoteProtocolError))
    big[:] = 0
    c.Recv(big, 0, 12)
    assert np.array_equal(big, np.arange(400_000, dtype="f8"))
    sync()
    request = c.irecv(None, 0, 13)
    expect("irecv-evil-pickle", lambda: request.wait(), (AuthenticationError,))
    assert c.irecv(None, 0, 13).wait() == "genuine 8"
    sync()
    assert c.rejected - base == 14, c.rejected - base
    print(f"rejected {c.rejected - base}", flush=True)


def main() -> None:
    assert WORLD.Get_size() == 2, "run with mpiexec -n 2"
    c = mpish.secure(WORLD)
    if c.rank == 0:
        attacker(c)
    else:
        victim(c)
    c.Barrier()
    assert not os.path.exists(MARKER)
    if c.rank == 1:
        print("ALL OK", flush=True)
    c.Free()


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        WORLD.Abort(1)
