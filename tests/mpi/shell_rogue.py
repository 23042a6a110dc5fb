"""A rogue rank in an MPMD job with the MPI shell.

Run as the last part of ``mpiexec -n 1 mpish -c CMD : -n 1 mpish -c CMD : -n 1 python
shell_rogue.py MODE MARKER``.

It plays the server's side of the start (key, announce, verdict) as an attacker would,
with the victim's public key where the mode says so (``id_x25519.pub`` is public), but
never its private key. Modes:

``evil-host``   an unknown key and a host name that would erase lines and print a
                fake "all ranks verified" if the console printed it raw.
``silent``      the user's own public key (so it is admitted), then no handshake.
``forge``       the user's public key (admitted); then, while the session runs, forged records (random
                bytes, well-formed headers impersonating the console or server 1, a
                plaintext Run command and a pickle that would create the marker) and
                oversize messages to the console and to server 1, plus forged start
                messages (a second key, an announce to server 1).
``long``/``short``  a key message of the wrong size (200 / 10 bytes).

It always ends the way a server does (non-blocking barrier, free), so mpiexec ends.
``sys.argv[2]`` is the marker file that anything run or unpickled would create.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from mpi4py import MPI

from mpish import keys
from mpish.shell import protocol as p
from mpish.shell.admission import ANNOUNCE_SIZE, ANNOUNCE_TAG, ENTRY_SIZE, HOST_SIZE, KEY_TAG, VERDICT_TAG
from mpish.transport.mpi import MAX_RECORD, SHELL_TAG
from mpish.wire.noise import public_bytes
from mpish.wire.record import HEADER, RecordType

FORGED_HOST = b"\r\x1b[2K\x1b[1A\x1b[2Kok\nmpish: all ranks verified\n"
MODE = sys.argv[1]
MARKER = sys.argv[2] if len(sys.argv) > 2 else "/nonexistent/marker"


class Evil:
    """Unpickling this creates the marker file."""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (MARKER, "w"))


def entry(pub: bytes, host: bytes) -> bytes:
    return pub + host[:HOST_SIZE].ljust(HOST_SIZE, b"\0")


def unknown_key() -> bytes:
    return public_bytes(X25519PrivateKey.generate())


def users_key() -> bytes:
    line = (keys.mpish_home() / keys.PUBLIC_KEY_NAME).read_text()
    return keys.parse_public_key(line)[0]


def forged_records(session: bytes, rank: int) -> list[bytes]:
    """Records a rank without the keys can make: each must be refused where it lands."""
    run = p.CODEC.encode(p.Run(1, f"touch {MARKER}", 0.0, False))
    evil = pickle.dumps(Evil())
    out = [os.urandom(120)]
    for sender, receiver in ((0, 1), (1, 0), (rank, 0)):
        for channel, body in ((p.CONTROL, run), (p.STDOUT, evil), (p.STDERR, FORGED_HOST)):
            for counter in (0, 1, 2**40):
                header = HEADER.pack(1, RecordType.DATA, 0, 0, session, sender, receiver, channel, counter,
                                     len(body) + 16)
                out.append(header + body + os.urandom(16))
    out.append(run)  # a plaintext command, no record at all
    return out


def attack(comm: MPI.Intracomm, session: bytes, rank: int, *, oversize: bool) -> None:
    records = forged_records(session, rank)
    for dest in (0, 1):
        for record in records:
            comm.Send([record, MPI.BYTE], dest, SHELL_TAG)
        if oversize:  # blocking sends: both receivers probe this tag until the end
            for size in (MAX_RECORD + 1, 8 << 20):
                comm.Send([bytearray(size), MPI.BYTE], dest, SHELL_TAG)
    # a second key message to the console; an announce to server 1 in the console's place
    comm.Send([entry(users_key(), b"second"), MPI.BYTE], 0, KEY_TAG)
    comm.Send([bytes(ANNOUNCE_SIZE - 1) + b"\1", MPI.BYTE], 1, ANNOUNCE_TAG)
    comm.Send([b"\1", MPI.BYTE], 0, VERDICT_TAG)


def main() -> None:
    comm = MPI.COMM_WORLD.Dup()  # the console and the servers Dup COMM_WORLD too
    rank = comm.Get_rank()
    mine = {
        "evil-host": lambda: entry(unknown_key(), FORGED_HOST),
        "silent": lambda: entry(users_key(), b"rogue-silent"),
        "forge": lambda: entry(users_key(), b"rogue-forge"),
        "long": lambda: os.urandom(ENTRY_SIZE + 104),
        "short": lambda: os.urandom(10),
    }[MODE]()
    comm.Send([mine, MPI.BYTE], 0, KEY_TAG)
    announce = bytearray(ANNOUNCE_SIZE)
    comm.Recv([announce, MPI.BYTE], 0, ANNOUNCE_TAG)
    session, admitted = bytes(announce[:16]), announce[-1]
    print(f"rogue rank {rank} ({MODE}): admitted={admitted}", file=sys.stderr, flush=True)
    if MODE in ("silent", "forge") and admitted:
        comm.Send([b"\1", MPI.BYTE], 0, VERDICT_TAG)  # "I trust you", then nothing more
    if MODE == "forge":
        attack(comm, session, rank, oversize=True)
        # more while the command runs: the console and server 1 probe SHELL_TAG until this
        # rank joins the final barrier below, so these blocking sends always complete
        for _ in range(8):
            time.sleep(0.2)
            attack(comm, session, rank, oversize=False)
    request = comm.Ibarrier()  # completes when the console and servers end their session
    while not request.Test():
        time.sleep(0.01)
    with contextlib.suppress(MPI.Exception):  # unmatched records from the console: not our problem
        comm.Free()


if __name__ == "__main__":
    main()
