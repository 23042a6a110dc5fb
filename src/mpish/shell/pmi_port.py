"""Whose is the embedded console's connection on MPICH's singleton PMI port.

MPICH's singleton init (``pmi_v1.c``, ``PMII_singinit``), run by the console's
``MPI_Comm_spawn``, listens on a TCP port of every address (compiled in, no
authentication; its "key" is the constant ``default_key``), forks the launcher
(``mpiexec -pmi_args PORT ...``: the wrapper of ``shell/launch_env.py``) and accepts the
first connection as its process manager. Another local user who polls the world-readable
``/proc/net/tcp`` for the new port and connects before the launcher does becomes that
process manager: it learns the servers' command line, can make the spawn fail or hang
(MPICH asserts on a short reply), and by answering ``stdio=yes`` has MPICH accept three
more of its connections as the console's stdin, stdout and stderr (``dup2``), so that
the user's terminal shows nothing and the stranger reads what the console says. mpish
cannot change MPICH's port (the attack was measured to win 13 times in 15 from a C loop).

What it does instead: while the spawn runs, the console's start-up watch
(:class:`~mpish.shell.launch_env.SpawnWatch`) asks :func:`foreign_peer` whether the
connection the console holds on that port comes from its own launcher (the socket at the
other end is one of the launcher's descriptors, found through ``/proc/net/tcp`` and
``/proc/PID/fd``), and whether descriptors 0-2 are still what they were (MPICH's
launchers answer ``stdio=no``). If not, the console's descriptors 0-2 are put back and
its message goes to a copy of stderr taken before the spawn (:class:`Stdio`: MPICH may
still ``dup2`` the stranger's connections over them meanwhile), and the start ends at once with one line
naming the stranger: no session starts (the servers the stranger could have made start
would have failed mpish's key admission anyway), and the user is told, instead of a 20 s
wait in silence. The launcher, refused, may add a line of its own ("Unexpected cmd").
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import sys
import time

from mpish.report import owner
from mpish.transport.procfs import descendants

LISTEN, ESTABLISHED, CLOSE_WAIT = "0A", "01", "08"


class Socket:
    """One line of /proc/net/tcp(6): addresses as (ip, port), state, owner, inode."""

    __slots__ = ("inode", "local", "remote", "state", "uid")

    def __init__(self, local: tuple[str, int], remote: tuple[str, int], state: str, uid: int,
                 inode: int) -> None:
        self.local, self.remote, self.state, self.uid, self.inode = local, remote, state, uid, inode


def _address(text: str) -> tuple[str, int]:
    raw, port = text.split(":")
    data = bytes.fromhex(raw)
    if len(data) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(raw, 16))), int(port, 16)
    words = struct.unpack("<4I", data)  # four host-order words
    address = ipaddress.IPv6Address(struct.pack(">4I", *words))
    mapped = address.ipv4_mapped  # ::ffff:a.b.c.d: the IPv4 peer's line says a.b.c.d
    return str(mapped) if mapped is not None else str(address), int(port, 16)


def tcp_sockets() -> dict[int, Socket]:
    """Every TCP socket of this host's network namespace, by inode."""
    found: dict[int, Socket] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(name) as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                with contextlib.suppress(ValueError, IndexError):
                    entry = Socket(_address(fields[1]), _address(fields[2]), fields[3], int(fields[7]),
                                   int(fields[9]))
                    if entry.inode:
                        found[entry.inode] = entry
    return found


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets ``pid`` holds (empty if it cannot be read)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _wildcard(address: tuple[str, int]) -> bool:
    return address[0] in ("0.0.0.0", "::")  # noqa: S104 (read, not bound)


def foreign_peer(console: int, launcher: int, looks: int = 3) -> str:
    """Who holds the other end of ``console``'s connection on its singleton PMI port, if that
    is not ``launcher`` (0: not started yet, so any connection is foreign); "" if there is
    none yet or it is the launcher's. The port is the console's listening socket on the
    wildcard address (its transports listen on loopback only: ``launch_env.LOOPBACK``).
    A stranger is named only if ``looks`` reads of the socket table, 5 ms apart, agree: the
    kernel writes /proc/net/tcp in pieces, and a read while sockets come and go can miss a
    line (measured: the launcher's own socket, once in about 20 starts)."""
    verdict = ""
    for look in range(looks):
        if look:
            time.sleep(0.005)
        verdict = _peer(console, launcher)
        if not verdict:
            return ""
    return verdict


def _peer(console: int, launcher: int) -> str:
    table = tcp_sockets()
    mine = [table[inode] for inode in socket_inodes(console) if inode in table]
    ports = {entry.local[1] for entry in mine if entry.state == LISTEN and _wildcard(entry.local)}
    accepted = [entry for entry in mine
                if entry.state in (ESTABLISHED, CLOSE_WAIT) and entry.local[1] in ports]
    if not accepted:
        return ""
    ours: set[int] = set()  # the launcher's and its children's (hydra's proxy is the one that connects)
    for pid in [launcher, *descendants(launcher)] if launcher else []:
        ours |= socket_inodes(pid)
    for entry in accepted:
        peers = [other for other in table.values()
                 if other.local == entry.remote and other.remote == entry.local]
        if not peers:
            # closed by the other end and gone, or a line the read missed (a loopback peer is
            # always in this host's table): nothing to say yet; the next look decides
            if entry.state == CLOSE_WAIT or ipaddress.ip_address(entry.remote[0]).is_loopback:
                continue
            return f"a process at {entry.remote[0]} port {entry.remote[1]} (not of this host's)"
        peer = peers[0]
        if peer.inode not in ours:
            who = owner(peer.uid)
            if peer.uid == os.geteuid():
                return f"a process of {who} other than its launcher"
            return f"{who}"
    return ""


class Stdio:
    """Copies of descriptors 0-2 taken before the spawn, to put back if MPICH replaced them
    with a stranger's connections (``stdio=yes`` from a process manager that is not ours)."""

    def __init__(self) -> None:
        self.saved: list[tuple[int, int, os.stat_result]] = []
        for fd in (0, 1, 2):
            with contextlib.suppress(OSError):
                copy = os.dup(fd)  # close-on-exec: no launcher or server inherits it
                self.saved.append((fd, copy, os.fstat(copy)))

    def restore(self) -> bool:
        """Put back any of 0-2 that is no longer what it was; True if any was replaced."""
        replaced = False
        for fd, copy, before in self.saved:
            try:
                now = os.fstat(fd)
                same = (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino)
            except OSError:
                same = False
            if not same:
                with contextlib.suppress(OSError):
                    os.dup2(copy, fd)
                    replaced = True
        return replaced

    def take_back(self) -> None:
        """After a stranger was found: put 0-2 back, and send what Python writes to stderr to
        the saved copy, which no late ``dup2`` of MPICH's (still accepting the stranger's
        stdio connections in the main thread) can replace. The process is about to end. The
        listening socket is left alone: MPICH exits (status 255, its own words) on an accept
        that fails, which would race the console's line."""
        self.restore()
        for fd, copy, _ in self.saved:
            if fd == 2:
                with contextlib.suppress(OSError):
                    sys.stderr = open(os.dup(copy), "w", encoding=sys.stderr.encoding,  # noqa: SIM115
                                      errors="backslashreplace", closefd=True)

    def close(self) -> None:
        for _, copy, _ in self.saved:
            with contextlib.suppress(OSError):
                os.close(copy)
        self.saved = []
