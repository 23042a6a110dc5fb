"""Run under ``mpiexec -n 2``: rank 0 attacks rank 1 by writing on the raw duplicate.

Each attack is followed by a genuine message, which the very next call must return:
forged records are dropped and counted (``on_reject`` collects them), never raised. Rank
1 prints ``REJECTED <attack> <error type>: <message>`` for each rejection and ``ALL OK``
at the end; any failure aborts the job. ``sys.argv[1]`` is the marker file a malicious
pickle would create if it were ever unpickled.
"""

# ruff: noqa: E402 (mpi4py's rc must be set before MPI is imported, by this module or another)
from __future__ import annotations

import os
import pickle
import struct
import sys
import time

import mpi4py
import numpy as np

mpi4py.rc.errors = "fatal"  # every communicator mpi4py makes (Dup too) gets MPI's fatal handler
from mpi4py import MPI
from mpi_main import run

import mpish
from mpish.comm import COLL_TAG, SecureComm
from mpish.comm.bulk import BULK_CHUNK
from mpish.comm.synchronous import ACK_TAG
from mpish.wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from mpish.wire.record import FLAG_CONTINUATION, FLAG_MORE, HEADER, HEADER_SIZE, RecordType

MARKER = sys.argv[1]
WORLD = MPI.COMM_WORLD


class Evil:
    """Unpickling this creates the marker file."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (MARKER, "w"))


EVIL = pickle.dumps(Evil())


REJECTED: list[BaseException] = []


def expect(name: str, count: int, errors: tuple[type[BaseException], ...]) -> None:
    """The last ``count`` rejected records (callback) are of ``errors``; print them."""
    got = REJECTED[-count:] if count else []
    assert len(REJECTED) >= count and all(isinstance(e, errors) for e in got), (name, REJECTED)
    for exc in got:
        print(f"REJECTED {name} {type(exc).__name__}: {exc}", flush=True)
    REJECTED.clear()
    assert not os.path.exists(MARKER), "the malicious pickle was unpickled"


def sealed(c: SecureComm, payload: bytes, tag: int, dest: int = 1) -> bytearray:
    """A genuine record from this rank to ``dest`` on ``tag`` (what a sniffer would capture)."""
    return bytearray(c._p2p.sealers[dest].seal(payload, channel=tag))


def next_counter(c: SecureComm) -> int:
    """The counter of rank 0's next record to rank 1 (in the clear in every header: an
    attacker reading the traffic knows it), so a forged record reaches the tag check."""
    return c._p2p.sealers[1].next_counter(0)


def attacker(c: SecureComm) -> None:
    raw, bulk = c.raw, c._comms[1]
    sync = WORLD.Barrier
    # 1. random bytes; a well-formed header with a random tag; a plaintext pickle.
    raw.Send(bytearray(os.urandom(300)), 1, 5)
    session, n = c._p2p.sealers[1].session, next_counter(c)
    header = HEADER.pack(1, RecordType.DATA, 0, 0, session, 0, 1, 5, n, len(EVIL) + 16)
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
    # 3b. two captured records of one tag delivered in the wrong order (MPI does not overtake).
    first, second = sealed(c, pickle.dumps("first"), 19), sealed(c, pickle.dumps("second"), 19)
    raw.Send(second, 1, 19)
    raw.Send(first, 1, 19)
    c.send("genuine 3b", 1, 19)
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
    assert c.recv(None, 1, 10) == "genuine 5"
    expect("reflected", 1, (RemoteProtocolError,))
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
    attacker_section3(c)


def victim(c: SecureComm) -> None:
    """Every forged record is dropped and counted; each call returns the genuine message."""
    raw = c.raw
    sync = WORLD.Barrier
    base = c.rejected
    assert c.recv(None, 0, 5) == "genuine 1"
    expect("random-bytes-forged-header-plaintext-pickle", 3, (RemoteProtocolError, AuthenticationError))
    sync()
    assert c.recv(None, 0, 6) == "genuine 2"
    expect("bitflip", 4, (AuthenticationError, RemoteProtocolError))
    sync()
    assert c.recv(None, 0, 7) == "once"
    assert c.recv(None, 0, 7) == "genuine 3"
    expect("replay", 1, (ReplayError,))
    sync()
    assert c.recv(None, 0, 19) == "second"
    assert c.recv(None, 0, 19) == "genuine 3b"  # the earlier record, come after it, was refused
    expect("reordered", 1, (ReplayError,))
    sync()
    assert c.recv(None, 0, 9) == "genuine 4"
    expect("moved-tag", 1, (RemoteProtocolError,))
    assert c.recv(None, 0, 8) == "moved"  # the moved copy did not burn the original's counter
    sync()
    assert c.bcast(None, 0) == "genuine bcast"
    expect("moved-to-collective", 1, (RemoteProtocolError, AuthenticationError))
    sync()
    # 5. capture rank 0's record to us and move it: to ourselves (another source), back to rank 0.
    buf = bytearray(1024)
    status = MPI.Status()
    raw.Recv(buf, 0, 10, status)
    captured = buf[: status.Get_count()]
    raw.Send(captured, 1, 10)  # now it comes from rank 1, but says rank 0
    c.send("genuine self", 1, 10)
    assert c.recv(None, 1, 10) == "genuine self"
    expect("moved-rank", 1, (RemoteProtocolError,))
    raw.Send(captured, 0, 10)  # reflected to its writer
    c.send("genuine 5", 0, 10)
    sync()
    sync()
    assert c.recv(None, 0, 11) == "genuine 6"
    expect("oversize-length", 1, (RemoteProtocolError,))
    sync()
    big = np.zeros(400_000)
    c.Recv(big, 0, 12)
    assert np.array_equal(big, np.arange(400_000, dtype="f8"))
    big[:] = 0
    c.Recv(big, 0, 12)
    assert np.array_equal(big, np.arange(400_000, dtype="f8"))
    expect("forged-continuation", 1, (AuthenticationError, RemoteProtocolError, ReplayError))
    sync()
    request = c.irecv(None, 0, 13)
    assert request.wait() == "genuine 8"
    expect("irecv-evil-pickle", 1, (AuthenticationError,))
    sync()
    victim_section3(c)
    victim_acks(c)
    print(f"rejected {c.rejected - base}", flush=True)


def victim_section3(c: SecureComm) -> None:
    sync = WORLD.Barrier
    # A forged record on the collective lane costs no Bcast and shifts none.
    first, second = np.zeros(4), np.zeros(4)
    c.Bcast(first, 0)
    c.Bcast(second, 0)
    assert np.all(first == 1) and np.all(second == 2)
    expect("forged-bcast", 1, (AuthenticationError, RemoteProtocolError))
    sync()
    # Three forged records queued on the bulk lane cost no 300 KB message.
    got = np.zeros(300_000, "u1")
    c.Recv(got, 0, 14)
    assert np.all(got == 7)
    expect("forged-bulk", 3, (AuthenticationError, RemoteProtocolError, ReplayError))
    sync()
    # Probe and Iprobe report only authenticated messages (not the forged count).
    status = MPI.Status()
    c.Probe(0, 15, status)
    assert status.Get_count() == 100, status.Get_count()
    assert c.Iprobe(0, 15, status) and status.Get_count() == 100
    msg = np.zeros(100, "u1")
    c.Recv(msg, 0, 15)
    assert np.all(msg == 3)
    expect("probe-forged-size", 2, (AuthenticationError, RemoteProtocolError))
    sync()
    # A forged record of 20 KiB never touches the user's buffer beyond the genuine message.
    user = np.full(32_768, 9, "u1")
    req = c.Irecv(user, 0, 16)
    req.Wait()
    assert np.all(user[:100] == 4) and np.all(user[100:] == 9)
    expect("forged-large-record", 1, (AuthenticationError,))
    sync()
    # An oversized raw message (beyond any record): dropped and counted, no ERR_TRUNCATE.
    assert c.recv(None, 0, 17) == "after oversize"
    expect("oversized-message", 1, (RemoteProtocolError,))
    sync()
    # Continuation records forged with the expected counters, lengths and flags, then a
    # replayed genuine one, among a pipelined receive's posted records: the genuine
    # messages arrive intact and nothing of the forged ones is in the user's buffer.
    user = np.full(1 << 20, 9, "u1")
    c.Recv(user, 0, 18)
    assert np.all(user == 5)
    expect("forged-continuations", 2, (AuthenticationError, ReplayError))
    sync()
    c.Recv(user, 0, 18)
    assert np.all(user == 6)
    expect("replayed-continuation", 1, (ReplayError,))
    sync()
    # A record moved between the main and the bulk communicator (its role is authenticated):
    # dropped unopened and counted; the genuine message and the next one still arrive.
    cases = ((19, "moved-continuation"), (20, "moved-first-record"), (21, "moved-continuation-irecv"))
    for tag, name in cases:
        got = np.zeros(len(MOVED), "u1")
        status = MPI.Status()
        if tag == 21:
            c.Irecv(got, 0, tag).Wait(status)
        else:
            c.Recv(got, 0, tag, status)
        assert status.Get_count(MPI.BYTE) == len(MOVED) and got.tobytes() == MOVED, (name, status.Get_count())
        expect(name, 1, (RemoteProtocolError,))
        assert c.recv(None, 0, tag) == "after moved"
        sync()


def attacker_section3(c: SecureComm) -> None:
    raw, bulk, coll = c.raw, c._comms[1], c._comms[2]
    sync = WORLD.Barrier
    session = c._p2p.sealers[1].session
    coll.Send(
        bytearray(
            HEADER.pack(1, RecordType.DATA, 0, 0, c._coll.sealers[1].session, 0, 1, COLL_TAG, 5, 48)
            + os.urandom(48)
        ),
        1,
        COLL_TAG,
    )
    c.Bcast(np.full(4, 1.0), 0)
    c.Bcast(np.full(4, 2.0), 0)
    sync()
    for k in range(3):
        forged = HEADER.pack(1, RecordType.DATA, 1, 0, session, 0, 1, 14, 1 + k, 32) + os.urandom(32)
        bulk.Send(bytearray(forged), 1, 14)
    c.Send(np.full(300_000, 7, "u1"), 1, 14)
    sync()
    raw.Send(
        bytearray(
            HEADER.pack(1, RecordType.DATA, 0, 0, session, 0, 1, 15, next_counter(c), 64_000)
            + os.urandom(64_000)
        ),
        1,
        15,
    )
    forged = HEADER.pack(1, RecordType.DATA, 0, 0, session, 0, 1, 15, next_counter(c), 2**31) + bytes(16)
    raw.Send(bytearray(forged), 1, 15)
    c.Send(np.full(100, 3, "u1"), 1, 15)
    sync()
    raw.Send(
        bytearray(
            HEADER.pack(1, RecordType.DATA, 0, 0, session, 0, 1, 16, next_counter(c), 20_480 + 16)
            + os.urandom(20_480 + 16)
        ),
        1,
        16,
    )
    c.Send(np.full(100, 4, "u1"), 1, 16)
    sync()
    raw.Send(bytearray(2 << 20), 1, 17)
    c.send("after oversize", 1, 17)
    sync()
    first = c._p2p.sealers[1].next_counter(18)  # the genuine message's first record
    forged = []  # sent with Isend: a record this large is received only once its receive is posted
    for k in (1, 2):  # its first two continuation records, as an attacker would guess them
        body = BULK_CHUNK + 16
        flags = FLAG_MORE | FLAG_CONTINUATION
        header = HEADER.pack(1, RecordType.DATA, flags, 0, session, 0, 1, 18, first + k, body)
        forged.append(bytearray(header + os.urandom(body)))
    requests = [bulk.Isend(record, 1, 18) for record in forged]
    c.Send(np.full(1 << 20, 5, "u1"), 1, 18)
    MPI.Request.Waitall(requests)
    replay = bytearray(c._p2p._pool[1][: HEADER_SIZE + BULK_CHUNK + 16])  # its second continuation record
    sync()
    request = bulk.Isend(replay, 1, 18)
    c.Send(np.full(1 << 20, 6, "u1"), 1, 18)
    request.Wait()
    sync()
    attacker_moved_roles(c)


MOVED = bytes(range(256)) * 1200  # 300 KiB: a first record, a continuation of BULK_CHUNK and one of 44 KiB


def attacker_moved_roles(c: SecureComm) -> None:
    """A long message's genuine records, sealed as post_long seals them; the "network" delivers
    a copy of one on the other communicator first: (tag 19) the last continuation record (44 KiB,
    not flagged MORE: shaped like a one-record message) on the main communicator before the
    first record (tag 21: the same, received by a posted Irecv); (tag 20) the first record on the
    bulk communicator before the continuations."""
    raw, bulk = c.raw, c._comms[1]
    sealer = c._p2p.sealers[1]
    for tag in (19, 20, 21):
        first = sealer.seal(struct.pack(">Q", len(MOVED)), channel=tag, flags=FLAG_MORE)
        more = sealer.seal(MOVED[:BULK_CHUNK], channel=tag, flags=FLAG_MORE | FLAG_CONTINUATION)
        last = sealer.seal(MOVED[BULK_CHUNK:], channel=tag, flags=FLAG_CONTINUATION)
        if tag != 20:
            raw.Send(last, 1, tag)  # the captured bulk record, early on the main communicator
            raw.Send(first, 1, tag)
        else:
            raw.Send(first, 1, tag)
            bulk.Send(first, 1, tag)  # a copy of the first record, early on the bulk communicator
        bulk.Send(more, 1, tag)
        bulk.Send(last, 1, tag)
        c.send("after moved", 1, tag)  # a later genuine message on the same tag
        WORLD.Barrier()
    attacker_acks(c)


FORGED_ACKS = 7


def attacker_acks(c: SecureComm) -> None:
    """Acknowledgements that must not complete rank 1's Issend (comm/synchronous.py), sent on
    the acknowledgements' own communicator and tag, after its message was probed, not received."""
    acks, sync = c._p2p.acks, WORLD.Barrier
    assert acks is not None
    got = np.zeros(8, "u1")
    c.Recv(got, 1, 22)  # the first Issend, received: a genuine acknowledgement, captured here
    genuine = bytes(acks._sending[-1][1])
    c.Probe(1, 23)  # the second one, probed only
    counter = c._p2p._last[(1, 23)]  # its first record's counter, as the acknowledgement names it
    body = struct.pack(">IQ", 23, counter)
    flipped = bytearray(acks.sealers[1].seal(body, channel=0))
    flipped[HEADER_SIZE + 3] ^= 0x01
    forged = [
        os.urandom(len(genuine)),  # random bytes of an acknowledgement's size
        os.urandom(100),  # another size
        flipped,  # a bit flipped in an acknowledgement of the probed send
        c._p2p.sealers[1].seal(body, channel=0),  # a data-lane record moved to the acknowledgements
        acks.sealers[0].seal(body, channel=0),  # an acknowledgement of another pair (0 -> 0)
        genuine,  # a replay of the first send's genuine acknowledgement
        acks.sealers[1].seal(struct.pack(">IQ", 23, counter + 1), channel=0),  # of a send not made yet
    ]
    assert len(forged) == FORGED_ACKS
    for record in forged:
        c._comms[3].Send(bytearray(record), 1, ACK_TAG)
    sync()  # rank 1 checks that its Issend is still pending
    sync()
    c.Recv(got, 1, 23)  # now received: its genuine acknowledgement completes it
    assert np.all(got == 2)
    sync()


def victim_acks(c: SecureComm) -> None:
    sync = WORLD.Barrier
    c.Issend(np.full(8, 1, "u1"), 0, 22).Wait()
    request = c.Issend(np.full(8, 2, "u1"), 0, 23)
    sync()
    deadline = time.monotonic() + 20
    while len(REJECTED) < FORGED_ACKS:  # Test takes the acknowledgements that arrived
        assert not request.Test() and request, "a forged acknowledgement completed an Issend"
        assert time.monotonic() < deadline, REJECTED
    assert not request.Test() and request, "a forged acknowledgement completed an Issend"
    expect("forged-ack", FORGED_ACKS, (AuthenticationError, RemoteProtocolError, ReplayError))
    sync()
    request.Wait()
    sync()


def main() -> None:
    assert WORLD.Get_size() == 2, "run with mpiexec -n 2"
    # Errors are fatal here (a program's choice: mpi4py.rc.errors above, and the wrapped
    # communicator's own handler): the internal duplicates would have them too, and the oversized
    # message below (an ERR_TRUNCATE mpish drops) would end the job; secure() returns errors on
    # its own communicators whatever the program chose.
    wrapped = WORLD.Dup()
    wrapped.Set_errhandler(MPI.ERRORS_ARE_FATAL)
    c = mpish.secure(wrapped, on_reject=REJECTED.append)
    if c.rank == 0:
        attacker(c)
    else:
        victim(c)
    c.Barrier()
    assert not os.path.exists(MARKER)
    if c.rank == 1:
        print("ALL OK", flush=True)
    c.Free()
    wrapped.Free()


if __name__ == "__main__":
    run(main)
