"""MPMD, ``<role> <case> [key hex]``: honest ranks run ``mpish.secure``; the rogue rank holds no
mpish key (it imports no mpish) and fakes its part of the tree setup (comm/setup.py).

Cases (world ranks; ``R`` is the rogue):

- ``lie`` (0 honest, 1 R): R answers DOWN1 with a garbage hello, then sends -1 failures
  to the agreement's ``Allreduce`` (op=SUM cancelled its parent's failure count).
- ``withhold`` (0 R, 1 honest): R, as the tree parent, offers the user's public key
  (``key hex``, read off the wire in a real attack), answers the hello with an ABORT
  status instead of the secret, and sends -1 "ranks without the secret".
- ``oversize`` (0 honest, 1 R, 2 honest): R sends a 4096-byte UP slot to its parent.
- ``splice`` (0 V honest, 1 R, 2 Y honest): V secures ``{V, R}``, Y secures ``{R, Y}`` at
  the same time; R relays V's setup messages to Y and back, as if both were one edge
  (its key reports too, when the setup has them).

R also sends one garbage message where the setup could expect a key report, so that it
fakes the setup before and after the key reports exist; R never joins the duplicates a
successful ``secure()`` makes, so an honest rank whose setup wrongly succeeds blocks there.
Each honest rank prints ``RAISED <rank> <type>: <message>``; a rank blocked for 30 s
prints ``BLOCKED <rank>`` and exits.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from array import array

from mpi4py import MPI

WORLD = MPI.COMM_WORLD
RANK = WORLD.Get_rank()
ROLE, CASE = sys.argv[1], sys.argv[2]
SLOT, TAG = 160, 1  # the setup's slot size and tag at the time of these attacks


def watchdog() -> None:
    time.sleep(30)
    print(f"BLOCKED {RANK}", flush=True)
    os._exit(3)


def pair_comms() -> tuple[MPI.Comm, MPI.Comm]:
    """splice: comm_a = {V, R}, comm_b = {R, Y} (R is rank 1 of comm_a and rank 0 of comm_b)."""
    comm_a = WORLD.Split(0 if RANK in (0, 1) else MPI.UNDEFINED, RANK)
    comm_b = WORLD.Split(0 if RANK in (1, 2) else MPI.UNDEFINED, RANK)
    return comm_a, comm_b


def honest() -> None:
    import mpish

    comm: MPI.Comm = WORLD
    if CASE == "splice":
        comm_a, comm_b = pair_comms()
        comm = comm_a if RANK == 0 else comm_b
    try:
        mpish.secure(comm)
    except Exception as exc:  # the case under test: which error, on which rank
        print(f"RAISED {RANK} {type(exc).__name__}: {exc}", flush=True)
    else:
        print(f"RETURNED {RANK}", flush=True)
    WORLD.Barrier()


def receive(comm: MPI.Comm, source: int) -> bytes:
    buf = bytearray(SLOT)
    comm.Recv([buf, MPI.BYTE], source, TAG)
    return bytes(buf)


def send(comm: MPI.Comm, data: bytes, dest: int) -> None:
    comm.Send([data.ljust(SLOT, b"\0"), MPI.BYTE], dest, TAG)


def agree(comm: MPI.Comm, counts: list[int]) -> None:
    """The rogue's part in secure()'s agreement (five flags; those not given are 0)."""
    counts = counts + [0] * (5 - len(counts))
    comm.Allreduce([array("q", counts), MPI.INT64_T], [array("q", [0] * 5), MPI.INT64_T], op=MPI.SUM)


def garbage() -> bytes:
    return os.urandom(100)


def relay(src: MPI.Comm, source: int, dst: MPI.Comm, dest: int) -> None:
    """Pass the next setup message of any size on, if one comes within 5 s."""
    deadline = time.monotonic() + 5
    while (message := src.improbe(source, TAG, status := MPI.Status())) is None:
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    buf = bytearray(status.Get_count(MPI.BYTE))
    message.Recv([buf, MPI.BYTE])
    dst.Send([buf, MPI.BYTE], dest, TAG)


def rogue() -> None:
    if CASE == "splice":
        comm_a, comm_b = pair_comms()
        pa, pb = comm_a.Dup(), comm_b.Dup()
        send(pb, receive(pa, 0), 1)  # V's DOWN1 -> Y, as comm_b's rank 0
        send(pa, receive(pb, 1), 0)  # Y's UP (hello) -> V
        send(pb, receive(pa, 0), 1)  # V's DOWN2 (the secret for Y's ephemeral key) -> Y
        relay(pb, 1, pa, 0)  # Y's key report, if the setup has them -> V
        relay(pa, 0, pb, 1)  # V's union of the keys -> Y
        agree(pa, [0, 0, 0, 0])  # nothing to cancel: the splice itself succeeded before
        agree(pb, [0, 0, 0, 0])
        WORLD.Barrier()
        return
    p2p = WORLD.Dup()
    if CASE == "lie":
        user_key = receive(p2p, 0)[17:49]  # DOWN1: status, job id, the parent's key
        send(p2p, bytes([1]) + user_key + os.urandom(SLOT - 33), 0)  # UP: OK, a key, garbage hello
        receive(p2p, 0)
        send(p2p, garbage(), 0)
        agree(p2p, [0, 0, -1, 0])
    elif CASE == "withhold":
        send(p2p, bytes([1]) + os.urandom(16) + bytes.fromhex(sys.argv[3]), 1)  # DOWN1 with the user's key
        receive(p2p, 1)
        send(p2p, bytes([0]), 1)  # DOWN2: ABORT, no secret
        send(p2p, garbage(), 1)
        agree(p2p, [0, 0, 0, -1])
    elif CASE == "oversize":
        receive(p2p, 0)
        p2p.Send([bytearray(4096), MPI.BYTE], 0, TAG)
        send(p2p, garbage(), 0)
        agree(p2p, [0, 0, 0, 0])
    WORLD.Barrier()


if __name__ == "__main__":
    threading.Thread(target=watchdog, daemon=True).start()
    honest() if ROLE == "honest" else rogue()
