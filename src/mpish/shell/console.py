"""The console: sends commands and files to shell servers and gathers what comes back.

Theory of operation
-------------------
The console is single-threaded: it calls MPI only while an operation (a command, a
put, a get) is in progress, polling with ``Improbe`` and the backoff of
:mod:`mpish.transport.mpi`, so it never busy-waits in MPI. Ctrl-C during a command
raises KeyboardInterrupt in that loop; the console then sends :class:`Interrupt` to
every rank still running and keeps waiting for their ``Done`` (the session goes on).

Bulk bytes are flow-controlled in both directions (protocol.WINDOW per server): the
console returns :class:`Credit` for output it has written to its sink, and sends a put
chunk to a server only while that server has credit left.

A command's stdin (``run(..., stdin=fd)``, clush's broadcast) is read in the same loop,
one chunk at a time and only when every rank still running has credit for it, so
however much comes in, at most ``WINDOW`` bytes per rank are in flight; its end is sent
as ``Input(eof=True)``, which closes the command's stdin on every rank.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from mpish.transport.mpi import Backoff, tune_malloc
from mpish.transport.procfs import alive as local_process_alive
from mpish.transport.procfs import peak_rss_kib
from mpish.wire.errors import MpishError, ProtocolError, TransportBroken
from mpish.wire.events import CloseReceived, Message
from mpish.wire.text import escape

from . import protocol as p
from .grouping import OutputSink, Result
from .ranks import format_ranks
from .session import Peer, Session
from .transfer import PartFile, destination, umask

CREDIT_BATCH = p.WINDOW // 4
CLOSE_TIMEOUT = 10.0
FAILURE_GRACE = 2.0  # seconds to find the dead server after a failure notice
PID_CHECK = 0.5  # seconds between looks at the servers' pids while waiting

Progress = Callable[[int, int], None]  # (bytes done, total)


class TransferError(MpishError):
    """A put or get failed on some rank (checksum, file system)."""


class Console:
    """Run commands and transfers on sets of shell servers over their secure channels."""

    def __init__(self, session: Session, err: IO[str] | None = None) -> None:
        self.session = session
        self.link = session.link
        self.peers: dict[int, Peer] = dict(session.peers)
        self.err = err or sys.stderr
        # how messages name a set of servers: "@1-3" over MPI, host names over ssh
        self.describe: Callable[[Iterable[int]], str] = lambda ranks: f"@{format_ranks(ranks)}"
        self.timeout = 0.0  # per-command timeout in seconds; 0 = none
        self.file_suffix: Callable[[int], str] = str  # a get's copies: NAME.<rank>; ssh: NAME.<host>
        self._next_id = 0
        self._owed: dict[int, int] = {}  # rank -> consumed bulk bytes not yet credited
        self._put_credit: dict[int, int] = {}
        self._handler: Callable[[int, object], None] = self._ignore
        self._output: Callable[[int, int, bytes], None] = self._credit_only
        self.peak_rss_kib: dict[int, int] = {}
        self._next_pid_check = 0.0
        self._suspect_since = 0.0  # when a failure notice came that no dead server explains yet
        # set by the terminal front end: True when the user typed Ctrl-C (the terminal is
        # in raw mode during operations, so Ctrl-C is a key here, not a signal to the group)
        self.interrupt_key: Callable[[], bool] | None = None
        tune_malloc()  # 1 MiB records: reused heap buffers, no page faults per record

    # -- peers

    @property
    def hosts(self) -> dict[int, str]:
        return {rank: peer.host for rank, peer in sorted(self.peers.items()) if peer.alive}

    def cwd(self, ranks: Iterable[int]) -> str:
        cwds = {self.peers[r].cwd for r in ranks if r in self.peers}
        if len(cwds) == 1:
            return escape(cwds.pop())  # a server's directory name, shown in the prompt
        return "(several)" if cwds else "?"

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _send(self, rank: int, message: object) -> None:
        peer = self.peers[rank]
        if not peer.alive:
            return
        try:
            self.link.send_all(rank, peer.channel.send(p.CODEC.encode(message)))
        except MpishError as exc:
            self._lost(rank, f"cannot send: {exc}")

    def _lost(self, rank: int, why: str, died: bool = False) -> None:
        peer = self.peers.get(rank)
        if peer is not None and peer.alive:
            peer.alive = False
            if died:
                peer.lost = why
            print(f"mpish: rank {rank} ({peer.host}) lost: {why}", file=self.err)
            self.err.flush()

    def check_failures(self) -> None:
        """Find servers that died (pid on this host); after mpiexec's failure notice with no
        dead server found within FAILURE_GRACE seconds, give up on MPI (TransportBroken)."""
        now = time.monotonic()
        if self.session.failure_notice():
            self._suspect_since = self._suspect_since or now
        elif now < self._next_pid_check and not self._suspect_since:
            return
        self._next_pid_check = now + PID_CHECK
        here = socket.gethostname()
        dead = [rank for rank, peer in self.peers.items()
                if peer.alive and peer.pid and peer.host == here and not local_process_alive(peer.pid)]
        for rank in dead:
            self._lost(rank, f"its server process {self.peers[rank].pid} died", died=True)
        if dead:
            self._suspect_since = 0.0
        elif self._suspect_since and now - self._suspect_since > FAILURE_GRACE:
            self._suspect_since = 0.0
            if not any(peer.lost for peer in self.peers.values()):
                # not one of ours on this host: which rank failed, and MPI's state, are unknown
                raise TransportBroken("mpiexec reports that a process of the job failed")

    # -- receiving

    @staticmethod
    def _ignore(rank: int, message: object) -> None:
        del rank, message

    def _credit_only(self, rank: int, stream: int, data: bytes) -> None:
        """Output that nobody waits for (cannot happen in order): still return its credit."""
        del stream
        self._consumed(rank, len(data))

    def _pump_once(self) -> bool:
        """Handle what has arrived; True if anything did."""
        busy = False
        for source, record in self.link.drain():
            busy = True
            peer = self.peers.get(source)
            if peer is None or not peer.alive:
                continue
            try:
                events = peer.channel.receive_record(record)
            except MpishError as exc:
                if not peer.channel.is_open:
                    self._lost(source, f"secure channel failed: {exc}")
                continue  # a forged record is dropped and counted by the channel
            for event in events:
                if isinstance(event, Message):
                    if event.channel != p.CONTROL:
                        if event.channel in (p.STDOUT, p.STDERR):
                            self._output(source, event.channel, event.data)
                        continue
                    try:
                        message = p.CODEC.decode(event.data)
                    except ProtocolError as exc:
                        self._lost(source, f"malformed message: {exc}")
                        break
                    self._handler(source, message)
                elif isinstance(event, CloseReceived):
                    self._lost(source, "the server ended its session")
        return busy

    def _wait(self, finished: Callable[[], bool], on_interrupt: Callable[[], None] | None = None,
              feed: Callable[[], bool] | None = None) -> None:
        """Pump until ``finished()``; Ctrl-C calls ``on_interrupt`` and keeps waiting.
        ``feed`` (a command's stdin) is called in every round; True if it moved bytes."""
        backoff = Backoff()
        next_key_check = 0.0
        while True:
            try:
                while not finished():
                    self.check_failures()
                    fed = feed() if feed is not None else False
                    if self._pump_once() or fed:
                        backoff.activity()
                    else:
                        backoff.wait()
                    if self.interrupt_key is not None and time.monotonic() >= next_key_check:
                        next_key_check = time.monotonic() + 0.02
                        if self.interrupt_key():
                            raise KeyboardInterrupt
                return
            except KeyboardInterrupt:
                if on_interrupt is None:
                    raise
                on_interrupt()
                backoff.activity()

    def _consumed(self, rank: int, nbytes: int, final: bool = False) -> None:
        owed = self._owed.get(rank, 0) + nbytes
        if owed >= CREDIT_BATCH or (final and owed):
            self._send(rank, p.Credit(owed))
            owed = 0
        self._owed[rank] = owed

    # -- commands

    def run(
        self, command: str, ranks: Iterable[int], sink: OutputSink, timeout: float | None = None,
        stdin: int | None = None, fanout: int = 0,
    ) -> dict[int, Result]:
        """Run ``command`` on ``ranks``; output goes to ``sink`` as it arrives.

        ``stdin``: a file descriptor whose bytes, to its end, every rank's command reads
        as its stdin (else the command's stdin is /dev/null). ``fanout`` (clush's ``-f``):
        the command runs on at most that many ranks at once, the next starting when one
        ends; 0, or a stdin to broadcast (one stream for all), starts it everywhere at once."""
        cmd_id = self._id()
        targets = [r for r in sorted(set(ranks)) if r in self.peers and self.peers[r].alive]
        waiting = targets[fanout:] if fanout > 0 and stdin is None else []
        limit = self.timeout if timeout is None else timeout
        results: dict[int, Result] = {}
        started = time.monotonic()

        def output(rank: int, stream: int, data: bytes) -> None:
            sink.output(rank, stream, data)
            self._consumed(rank, len(data))

        credit = dict.fromkeys(targets, p.WINDOW)  # stdin bytes each rank may still be sent
        stdin_open = stdin is not None

        def feed() -> bool:
            nonlocal stdin_open
            running = [r for r in targets if r not in results and self.peers[r].alive]
            if not stdin_open or stdin is None or not running:
                return False
            if min(credit[r] for r in running) < p.CHUNK or not select.select([stdin], [], [], 0)[0]:
                return False
            try:
                data = os.read(stdin, p.CHUNK)
            except OSError as exc:
                print(f"mpish: cannot read stdin: {exc.strerror}; the command's stdin ends here",
                      file=self.err)
                data = b""
            for rank in running:
                self._send(rank, p.Input(cmd_id, data, not data))
                credit[rank] -= len(data)
            stdin_open = bool(data)
            return True

        def handle(rank: int, message: object) -> None:
            if isinstance(message, p.Credit) and rank in credit:
                credit[rank] += message.nbytes
            elif isinstance(message, p.Done) and message.cmd_id == cmd_id:
                peer = self.peers[rank]
                peer.cwd = message.cwd or peer.cwd
                self.peak_rss_kib[rank] = message.peak_rss_kib
                result = Result(rank, peer.host, message.exit, message.signal, message.seconds,
                                message.timed_out, escape(message.error), message.peak_rss_kib,
                                escape(message.note))
                results[rank] = result
                sink.done(result)
                self._consumed(rank, 0, final=True)
                top_up()

        skipped: list[int] = []  # never started: the user interrupted first

        def top_up() -> bool:
            """-f: start waiting ranks while fewer than ``fanout`` run (a lost one frees its place)."""
            running = sum(1 for r in targets if r not in waiting and r not in results and self.peers[r].alive)
            moved = False
            while waiting and running < fanout:
                rank = waiting.pop(0)
                if self.peers[rank].alive:
                    self._send(rank, p.Run(cmd_id, command, limit, False))
                    running += 1
                    moved = True
            return moved

        def finished() -> bool:
            return all(r in results or r in skipped or not self.peers[r].alive for r in targets)

        def feed_and_top_up() -> bool:
            return feed() | (top_up() if waiting else False)

        def interrupt() -> None:
            skipped.extend(waiting)  # not started: never will be (reported below)
            waiting.clear()
            running = [r for r in targets if r not in results and self.peers[r].alive]
            print(f"\nmpish: interrupting {self.describe(running)}", file=self.err)
            for rank in running:
                self._send(rank, p.Interrupt(cmd_id))

        self._handler = handle
        self._output = output
        for rank in targets[: len(targets) - len(waiting)]:
            self._send(rank, p.Run(cmd_id, command, limit, stdin is not None))
        try:
            self._wait(finished, interrupt, feed_and_top_up)
        finally:
            self._handler = self._ignore
            self._output = self._credit_only
        for rank in targets:
            if rank not in results:
                why = "not run: interrupted before its turn (-f)" if rank in skipped else "rank lost"
                lost = Result(rank, self.peers[rank].host, 255, 0, time.monotonic() - started,
                              False, why)
                results[rank] = lost
                sink.done(lost)
        sink.finish()
        return results

    # -- file transfer

    def put(self, local: str | os.PathLike[str], remote: str, ranks: Iterable[int],
            progress: Progress | None = None) -> dict[int, str]:
        """Copy a local file to ``remote`` on ``ranks``; rank -> error ('' = verified)."""
        path = Path(local)
        size = path.stat().st_size
        mode = path.stat().st_mode & 0o777
        xfer_id = self._id()
        targets = [r for r in sorted(set(ranks)) if r in self.peers and self.peers[r].alive]
        verdicts: dict[int, str] = {}
        for rank in targets:
            self._put_credit[rank] = p.WINDOW

        def handle(rank: int, message: object) -> None:
            if isinstance(message, p.Credit):
                self._put_credit[rank] = self._put_credit.get(rank, 0) + message.nbytes
            elif isinstance(message, p.PutDone) and message.xfer_id == xfer_id:
                verdicts[rank] = escape(message.error) or (
                    "" if message.sha256 == digest.digest() else "checksum mismatch"
                )

        self._handler = handle
        digest = hashlib.sha256()
        sent = 0
        aborted = False
        try:
            for rank in targets:
                self._send(rank, p.PutStart(xfer_id, remote, size, mode, path.name))
            with path.open("rb") as handle_file:
                while chunk := handle_file.read(p.CHUNK):
                    digest.update(chunk)
                    needed = len(chunk)
                    self._wait(lambda n=needed: all(  # type: ignore[misc]
                        self._put_credit[r] >= n or not self.peers[r].alive for r in targets))
                    for rank in targets:
                        self._send(rank, p.PutChunk(xfer_id, chunk))
                        self._put_credit[rank] -= needed
                    sent += needed
                    if progress:
                        progress(sent, size)
        except KeyboardInterrupt:
            aborted = True
        finally:
            try:
                for rank in targets:
                    self._send(rank, p.PutEnd(xfer_id, digest.digest(), aborted))
                self._wait(lambda: all(r in verdicts or not self.peers[r].alive for r in targets))
            finally:
                self._handler = self._ignore
        for rank in targets:
            verdicts.setdefault(rank, "rank lost")
        return verdicts

    def get_destinations(
        self, remote: str, local: str | os.PathLike[str], ranks: Iterable[int]
    ) -> dict[int, Path]:
        """Where ``get`` writes each rank's copy: LOCAL (a directory: LOCAL/NAME), and with
        several ranks ``NAME.<suffix>`` (rank over MPI, host over ssh), as clush --rcopy."""
        targets = sorted(set(ranks))
        base = destination(Path(local), Path(remote).name or "unnamed", str(local).endswith("/"))
        if len(targets) == 1:
            return {targets[0]: base}
        return {r: base.with_name(f"{base.name}.{self.file_suffix(r)}") for r in targets}

    def get(self, remote: str, local: str | os.PathLike[str], ranks: Iterable[int],
            progress: Progress | None = None) -> dict[int, str]:
        """Copy ``remote`` from ``ranks`` to ``local`` (``local.<rank>`` for several ranks)."""
        xfer_id = self._id()
        targets = [r for r in sorted(set(ranks)) if r in self.peers and self.peers[r].alive]
        finals = self.get_destinations(remote, local, targets)
        handles: dict[int, PartFile] = {}
        digests = {r: hashlib.sha256() for r in targets}
        sizes = dict.fromkeys(targets, 0)
        verdicts: dict[int, str] = {}
        received = 0
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            if not interrupted:
                print("\nmpish: interrupting the get", file=self.err)
                interrupted = True
                for rank in targets:
                    self._send(rank, p.Interrupt(xfer_id))

        def handle(rank: int, message: object) -> None:
            nonlocal received
            if isinstance(message, p.GetChunk) and message.xfer_id == xfer_id:
                if rank not in handles:
                    handles[rank] = PartFile(finals[rank])
                handles[rank].write(message.data)
                digests[rank].update(message.data)
                sizes[rank] += len(message.data)
                received += len(message.data)
                self._consumed(rank, len(message.data))
                if progress:
                    progress(received, 0)
            elif isinstance(message, p.GetEnd) and message.xfer_id == xfer_id:
                self._consumed(rank, 0, final=True)
                if rank not in handles and not message.error:
                    handles[rank] = PartFile(finals[rank])
                if message.error:
                    verdicts[rank] = escape(message.error)
                elif message.sha256 != digests[rank].digest() or message.size != sizes[rank]:
                    verdicts[rank] = "checksum mismatch"
                else:
                    verdicts[rank] = ""
                file = handles.pop(rank, None)
                if file is not None and verdicts[rank]:
                    file.discard()
                elif file is not None:  # verified again on the part file's own descriptor
                    verdicts[rank] = file.commit(message.sha256, message.size, 0o666 & ~umask())

        self._handler = handle
        try:
            for rank in targets:
                self._send(rank, p.GetStart(xfer_id, remote))
            self._wait(lambda: all(r in verdicts or not self.peers[r].alive for r in targets), interrupt)
        finally:
            self._handler = self._ignore
            for file in handles.values():
                file.discard()
        for rank in targets:
            verdicts.setdefault(rank, "rank lost")
        return verdicts

    # -- end

    def close(self) -> None:
        """End the session: close every channel, wait for the servers' close records."""
        closing: set[int] = set()
        for rank, peer in self.peers.items():
            if peer.alive and peer.channel.is_open:
                try:
                    self.link.send_all(rank, peer.channel.close())
                    closing.add(rank)
                except MpishError:
                    peer.alive = False

        closed: set[int] = set()
        deadline = time.monotonic() + CLOSE_TIMEOUT
        backoff = Backoff()
        while closing - closed and time.monotonic() < deadline:
            with contextlib.suppress(TransportBroken):
                self.check_failures()
            closing = {rank for rank in closing if self.peers[rank].alive}
            item = self.link.poll()
            if item is None:
                backoff.wait()
                continue
            backoff.activity()
            source, record = item
            closing_peer = self.peers.get(source)
            if closing_peer is None or source not in closing:
                continue
            try:
                events = closing_peer.channel.receive_record(record)
            except MpishError:
                if not closing_peer.channel.is_open:
                    closed.add(source)
                continue
            if any(isinstance(e, CloseReceived) for e in events):
                closed.add(source)
        for rank in closing - closed:
            print(f"mpish: rank {rank} did not confirm the end of the session", file=self.err)
        try:
            self.session.finish()
        except TransportBroken as exc:
            print(f"mpish: {exc}", file=self.err)


def console_rss_kib() -> int:
    return peak_rss_kib()
