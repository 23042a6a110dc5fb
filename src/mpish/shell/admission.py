"""Admission to an MPI shell session: who may join, before any secure channel exists.

Theory of operation
-------------------
Steps 1-3 of a session (shell/mpi_session.py), on the session communicator:

1. Each server sends the console its 32-byte public key and its host name (one
   message of :data:`ENTRY_SIZE` bytes on :data:`KEY_TAG`).
2. The console checks each key against its trusted set (own key + authorized_keys)
   and sends each server (:data:`ANNOUNCE_TAG`) a fresh random 16-byte session id,
   its own public key and that server's admission flag. A refused rank is named with
   its key's fingerprint and never handshakes, so it can never receive a command.
3. Each admitted server checks the console's key against *its* trusted set and sends
   its verdict (:data:`VERDICT_TAG`).

Point-to-point, not Gather/Bcast: in a collective's tree a rank relays other ranks'
data, and one that sends a wrong size makes the root's call fail for everyone. Here
each rank speaks only for itself (MPI names the source of every message): a message
of the wrong size is refused before allocation and names its sender, and the console
waits for each server at each step at most :func:`handshake_timeout` seconds
(``MPISH_HANDSHAKE_TIMEOUT``), then goes on without it (THREAT-MODEL attack 10: a
rank that claims the user's key and stays silent costs the start those seconds, not a
hang). Every rank has already entered the collective Dup (or Merge) of the session
communicator by then, so a genuine server answers within milliseconds. Nothing sent
here is authenticated: a host name only ever appears escaped
(:func:`mpish.wire.text.escape`), and the key a rank claims is proven only by the KK
handshake that follows.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

from mpish import keys
from mpish.report import Diagnostics, Reporter
from mpish.transport.mpi import Backoff, discard, mpi, probed_size
from mpish.wire.text import escape

if TYPE_CHECKING:  # mpi4py is imported at run time by mpi() alone: it initialises MPI
    from mpi4py import MPI

KEY_SIZE = 32
HOST_SIZE = 64
SESSION_ID_SIZE = 16
ENTRY_SIZE = KEY_SIZE + HOST_SIZE  # step 1: public key, host name (NUL-padded)
ANNOUNCE_SIZE = SESSION_ID_SIZE + KEY_SIZE + 1  # step 2: session id, console key, admitted flag
KEY_TAG, ANNOUNCE_TAG, VERDICT_TAG = 0x4B59, 0x414E, 0x5644  # "KY" "AN" "VD": steps 1-3
HANDSHAKE_TIMEOUT = 5.0  # default of handshake_timeout()

log = Diagnostics(__name__)


def host_bytes() -> bytes:
    """This host's name as sent in step 1: at most 64 bytes, NUL-padded."""
    return socket.gethostname().encode()[:HOST_SIZE].ljust(HOST_SIZE, b"\0")


def handshake_timeout(err: IO[str] | None = None) -> float:
    """Seconds the console waits for each server at each step of the start.

    ``MPISH_HANDSHAKE_TIMEOUT`` overrides the default (:data:`HANDSHAKE_TIMEOUT`); a
    value that is not a positive number is reported on ``err`` and the default used.
    """
    text = os.environ.get("MPISH_HANDSHAKE_TIMEOUT", "").strip()
    if not text:
        return HANDSHAKE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        Reporter(err).say(f"MPISH_HANDSHAKE_TIMEOUT={escape(text)} is not a number of seconds > 0; "
                          f"using {HANDSHAKE_TIMEOUT:g}")
        return HANDSHAKE_TIMEOUT
    return value


def _receive_each(
    comm: MPI.Intracomm, tag: int, size: int, ranks: set[int], timeout: float
) -> tuple[dict[int, bytes], dict[int, int]]:
    """One message of ``size`` bytes on ``tag`` from each of ``ranks``, within ``timeout`` s.

    Returns (what each rank sent, the wrong size each misbehaving rank sent). A message
    of another size is refused before allocation (received into an empty buffer); one
    from a rank not waited for is dropped. Missing ranks are in neither dict.
    """
    MPI = mpi()
    received: dict[int, bytes] = {}
    wrong: dict[int, int] = {}
    waiting = set(ranks)
    status = MPI.Status()
    backoff = Backoff()
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        message = comm.Improbe(MPI.ANY_SOURCE, tag, status)
        if message is None:
            backoff.wait()
            continue
        backoff.activity()
        source, count = status.Get_source(), probed_size(status)
        if source in waiting and count == size:
            buffer = bytearray(size)
            message.Recv([buffer, MPI.BYTE])
            received[source] = bytes(buffer)
        else:
            discard(message, count)  # received and dropped: nothing is kept
            if source in waiting:
                wrong[source] = count
        waiting.discard(source)
    return received, wrong


def wait_request(request: MPI.Request) -> None:
    """Wait for one MPI request with backoff (MPICH's blocking calls would spin a core)."""
    backoff = Backoff()
    while not request.Test():
        backoff.wait()


@dataclass
class Admission:
    """The console's outcome of steps 1-3."""

    session_id: bytes
    server_keys: dict[int, bytes] = field(default_factory=dict)  # admitted rank -> its key
    hosts: dict[int, str] = field(default_factory=dict)  # rank -> host name, escaped
    refused: dict[int, str] = field(default_factory=dict)  # rank -> why it is left out


def admit_servers(comm: MPI.Intracomm, identity: keys.Identity | None, timeout: float) -> Admission:
    """Steps 1-3 on the console (rank 0); without an identity every server is told no."""
    MPI = mpi()
    servers = set(range(1, comm.Get_size()))
    entries, wrong = _receive_each(comm, KEY_TAG, ENTRY_SIZE, servers, timeout)
    log.debug("step 1: keys from %d of %d server(s), %d malformed", len(entries), len(servers), len(wrong))
    admission = Admission(secrets.token_bytes(SESSION_ID_SIZE))
    trusted = keys.trusted_keys(identity) if identity else frozenset()
    refused, hosts = admission.refused, admission.hosts
    for rank in sorted(servers):
        if rank in wrong:
            refused[rank] = (f"rank {rank} sent a malformed key exchange ({wrong[rank]} bytes, "
                             f"not {ENTRY_SIZE}); it is left out")
            continue
        if rank not in entries:
            refused[rank] = f"rank {rank} sent no key within {timeout:g} s; it is left out"
            continue
        pub, host = entries[rank][:KEY_SIZE], escape(entries[rank][KEY_SIZE:].rstrip(b"\0"))
        hosts[rank] = host
        if pub == bytes(KEY_SIZE):
            refused[rank] = f"rank {rank} ({host}) has no usable mpish key; it is left out"
        elif pub not in trusted:
            refused[rank] = (
                f"rank {rank} ({host}) refused: its key {keys.fingerprint(pub)} is not yours and "
                "not in authorized_keys; it will run no command"
            )
        elif identity is not None:
            admission.server_keys[rank] = pub
    console_pub = identity.public if identity else bytes(KEY_SIZE)
    announces = [
        comm.Isend([admission.session_id + console_pub + bytes([rank in admission.server_keys]), MPI.BYTE],
                   rank, ANNOUNCE_TAG)
        for rank in sorted(servers)
    ]
    verdicts, wrong = _receive_each(comm, VERDICT_TAG, 1, set(admission.server_keys), timeout)
    for rank in list(admission.server_keys):
        why = ""
        if rank in wrong:
            why = f"sent a malformed verdict ({wrong[rank]} bytes)"
        elif rank not in verdicts:
            why = (f"gave no answer within {timeout:g} s (it claimed the key "
                   f"{keys.fingerprint(admission.server_keys[rank])})")
        elif verdicts[rank] != b"\1":
            why = f"refused the console's key {keys.fingerprint(console_pub)} (not in its trusted keys)"
        if why:
            refused[rank] = f"rank {rank} ({hosts[rank]}) {why}; it is left out"
            del admission.server_keys[rank]
    for request in announces:
        wait_request(request)
    log.debug("steps 2-3: admitted rank(s) %s, refused %s", sorted(admission.server_keys), sorted(refused))
    return admission


@dataclass(frozen=True)
class Invitation:
    """A server's outcome of steps 1-3."""

    session_id: bytes
    console_pub: bytes
    admitted: bool  # the console trusts this server's key
    accepted: bool  # ... and this server trusts the console's


def join_console(comm: MPI.Intracomm, identity: keys.Identity | None) -> Invitation:
    """Steps 1-3 on a server: send the key, read the announce, answer it if admitted."""
    MPI = mpi()
    mine = (identity.public if identity else bytes(KEY_SIZE)) + host_bytes()
    sent = comm.Isend([mine, MPI.BYTE], 0, KEY_TAG)
    announce = bytearray(ANNOUNCE_SIZE)
    wait_request(comm.Irecv([announce, MPI.BYTE], 0, ANNOUNCE_TAG))
    wait_request(sent)
    session_id = bytes(announce[:SESSION_ID_SIZE])
    console_pub = bytes(announce[SESSION_ID_SIZE : SESSION_ID_SIZE + KEY_SIZE])
    admitted = bool(announce[-1])
    accepted = admitted and identity is not None and console_pub in keys.trusted_keys(identity)
    if admitted:
        wait_request(comm.Isend([bytes([accepted]), MPI.BYTE], 0, VERDICT_TAG))
    log.debug("rank %d: admitted by the console: %s; the console's key trusted here: %s",
              comm.Get_rank(), admitted, accepted)
    return Invitation(session_id, console_pub, admitted, accepted)
