"""The console: sends commands and files to shell servers and gathers what comes back.

Theory of operation
-------------------
The console is single-threaded: it calls MPI only while an operation (a command, a put, a get)
is in progress, polling the link and sleeping in its ``wait`` (over MPI the backoff of
:mod:`mpish.transport.mpi`, so it never busy-waits in MPI; over ssh in ``poll`` on the pipes).
Ctrl-C during a command raises KeyboardInterrupt in that loop; the console then sends
:class:`Interrupt` to every rank still running and keeps waiting for their ``Done`` (the
session goes on). Output that was in flight at the Ctrl-C (up to a window per server: millions
of lines of ``yes``) is discarded, as a terminal discards its output queue: from the Interrupt
until the server's :class:`Signalled` (sent once it has signalled the command, after
everything it had sent before) a rank's output is counted, not shown, and the amount is said
once the command ends. What the command writes after the signal is shown.

Bulk bytes are flow-controlled in both directions (protocol.WINDOW per server): the
console returns :class:`Credit` for output it has written to its sink, and sends a put
chunk to a server only while that server has credit left.

Each server's conversation is a :class:`~mpish.shell.conversation.Machine` on the
console's table (:data:`~mpish.shell.conversation.CONSOLE`): an operation moves its
targets from IDLE to RUNNING, PUTTING or GETTING, their answers move them back, and the
operation waits until none of its targets is still in it (or alive). Every record goes
through the one receive loop (:func:`mpish.shell.receive.receive`) and the table; a
message the table does not allow in a server's state is dropped and logged. The actions
are the ``_<action>`` methods below; what a command gathers is in its ``Running``.
Operations in modules of their own (transfers: :mod:`.console_transfer`; ``:attach``,
Tab completion) send through :meth:`Console.send` and get their answers through
:meth:`Console.routed`.

A command's stdin (``run(..., stdin=fd)``, clush's broadcast) is read in the same loop
into a spool (spool.py) that every rank gets from its first byte, also one whose turn of
``-f`` comes late; a chunk goes to a rank only when it has credit for it, so however much
comes in, at most ``WINDOW`` bytes per rank are in flight; its end is sent as
``Input(eof=True)``, which closes the command's stdin on that rank.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from mpish import report
from mpish.report import Diagnostics
from mpish.transport.link import Channel
from mpish.transport.memory import tune_malloc
from mpish.transport.procfs import peak_rss_kib
from mpish.wire.errors import MpishError, TransportBroken
from mpish.wire.text import escape

from . import protocol as p
from .conversation import CONSOLE, ConsoleState, Event, Local, Machine, Refused, first_state
from .grouping import OutputSink
from .health import FailureWatch
from .names import Result
from .operations import Running
from .ranks import format_ranks
from .receive import Output, Waiter, receive
from .session import Peer, Session
from .silence import ESCALATION_HINTS, SilenceWatch, escalation_hint
from .spool import StdinSpool
from .transfer import send_chunk
from .turns import Turns

log = Diagnostics(__name__)

CREDIT_BATCH = p.WINDOW // 4
FIRST_RUN_ID = 1  # the id of a console's first command
CLOSE_TIMEOUT = 10.0
KEY_CHECK = 0.02  # seconds between looks at the terminal's Ctrl-C key while waiting
IDLE_WAIT = 0.01  # longest sleep between looks at stdin and the keyboard (link.wait: sooner on a record)

Route = tuple[Callable[[int, object], None], Callable[[int, int, bytes], None] | None]
Payload = tuple[int, Any]  # (rank, message or output): what an action receives
BUSY = (ConsoleState.RUNNING, ConsoleState.PUTTING, ConsoleState.GETTING, ConsoleState.ATTACHED,
        ConsoleState.COMPLETING)
SENT_EVENTS: dict[type, Event] = {  # what sending each message of an operation's own module is
    p.PtyOpen: Local.ATTACH, p.PtyInput: Local.PTY_DATA, p.PtyResize: Local.PTY_DATA,
    p.PtyClose: Local.PTY_DATA, p.Complete: Local.COMPLETE,
    p.PutStart: Local.PUT, p.TreePut: Local.PUT, p.Chunk: Local.PUT_DATA, p.PutEnd: Local.PUT_DATA,
    p.Entry: Local.PUT_DATA, p.FileEnd: Local.PUT_DATA, p.TreeEnd: Local.PUT_DATA,
    p.GetStart: Local.GET, p.TreeGet: Local.GET, p.Interrupt: Local.INTERRUPT,
}


class Console:
    """Run commands and transfers on sets of shell servers over their secure channels."""

    def __init__(self, session: Session, err: IO[str] | None = None) -> None:
        self.session = session
        self.link = session.link
        self.peers: dict[int, Peer] = dict(session.peers)
        self.err = err or sys.stderr
        self.describe: Callable[[Iterable[int]], str] = lambda ranks: f"@{format_ranks(ranks)}"  # ssh: hosts
        self.lost_name: Callable[[int, str], str] = lambda rank, host: f"rank {rank} ({host})"  # ssh: host
        self.timeout = 0.0  # per-command timeout in seconds; 0 = none
        self.file_suffix: Callable[[int], str] = str  # a get's copies: NAME.<rank>; ssh: NAME.<host>
        sent = set(getattr(session, "sent_first", ()))  # ssh -c: their Run went with their code
        self.machines = {rank: Machine(CONSOLE, first_state(peer.ready, rank in sent))
                         for rank, peer in self.peers.items()}
        self._next_id = 0
        self._owed: dict[int, int] = {}  # rank -> consumed bulk bytes not yet credited
        self._run: Running | None = None
        self._silence: SilenceWatch | None = None  # while a command runs: who stopped answering
        self._route: Route | None = None  # while attached or completing (routed())
        self.peak_rss_kib: dict[int, int] = {}
        self._failures = FailureWatch(session, self.peers, self.machines)
        # set by the terminal front end: True when the user typed Ctrl-C (a key in raw mode)
        self.interrupt_key: Callable[[], bool] | None = None
        self.terminated: list[int] = []  # -c's SIGTERM once it came (keyboard.terminate_as_interrupt)
        tune_malloc()  # 1 MiB records: reused heap buffers, no page faults per record

    # -- peers

    @property
    def hosts(self) -> dict[int, str]:
        return {rank: peer.host for rank, peer in sorted(self.peers.items()) if peer.alive}

    @property
    def lost(self) -> dict[int, str]:
        """The servers lost during the session (rank -> host): named as such in target errors."""
        return {rank: peer.host for rank, peer in sorted(self.peers.items()) if peer.lost}

    def reconnect(self, ranks: Iterable[int]) -> dict[int, str]:
        """ssh: connect again to these lost ranks' hosts (SshSession.reconnect), each back idle
        with a new server; rank -> why for those that could not (they stay lost)."""
        hosts = {rank: self.peers[rank].host for rank in ranks}
        failed: dict[int, str] = self.session.reconnect(hosts, others=self._step)  # type: ignore[attr-defined]
        for rank in hosts.keys() - failed.keys():
            self.peers[rank] = self.session.peers[rank]
            self.machines[rank] = Machine(CONSOLE, ConsoleState.IDLE)
            self._owed.pop(rank, None)
        return failed

    def cwd(self, ranks: Iterable[int]) -> str:
        cwds = {self.peers[r].cwd for r in ranks if r in self.peers}
        if len(cwds) == 1:
            return escape(cwds.pop())  # a server's directory name, shown in the prompt
        return "(several)" if cwds else "?"

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _in(self, state: ConsoleState, ranks: Iterable[int]) -> list[int]:
        """The ranks of ``ranks`` whose conversation is in ``state`` and that are alive (a
        target of ``-f`` not connected yet, turns.py, has neither)."""
        return [r for r in ranks if (peer := self.peers.get(r)) is not None and peer.alive
                and self.machines[r].state is state]

    def _send_to(self, rank: int, message: object) -> None:
        peer = self.peers[rank]
        if not peer.alive:
            return
        try:
            if isinstance(message, p.Chunk):  # a file's bytes: raw on channel FILE, not msgpack
                send_chunk(self.link, peer.channel, rank, bytes(message.data))
            else:
                self.link.send_all(rank, peer.channel.send(p.CODEC.encode(message)))
        except MpishError as exc:
            self._lost(rank, f"cannot send: {exc}")

    def _lost(self, rank: int, why: str, died: bool = False) -> None:
        peer = self.peers.get(rank)
        if peer is not None and peer.alive:
            peer.alive = False
            if died:
                peer.lost = why
            report.say(f"{self.lost_name(rank, peer.host)} lost: {why}", self.err)
            self.err.flush()

    def check_failures(self) -> None:
        """Find servers that died (:mod:`.health`); TransportBroken if MPI failed otherwise."""
        self._failures.check(self._pump_once, lambda rank, why: self._lost(rank, why, died=True))

    # -- receiving: the one loop, and the table

    def _step(self, rank: int, event: Event, payload: object = None) -> None:
        """One event of one server's conversation through the table; refused ones are dropped."""
        try:
            self.machines[rank].fire(event, self, (rank, payload))
        except Refused as exc:
            log.info("rank %d: %s", rank, exc)

    def _channel_of(self, rank: int) -> Channel | None:
        peer = self.peers.get(rank)
        return peer.channel if peer is not None and peer.alive else None

    def _pump_once(self) -> bool:
        """Handle what has arrived; True if anything did."""
        return receive(self.link, self._channel_of, self._heard,
                       lambda rank, why: self._step(rank, Local.BROKEN, f"secure channel failed: {why}"))

    def _heard(self, rank: int, event: Event, payload: object) -> None:
        if self._silence is not None:
            self._silence.heard_from(rank, time.monotonic())
        self._step(rank, event, payload)

    def _wait(self, finished: Callable[[], bool], on_interrupt: Callable[[], None] | None = None,
              feed: Callable[[], bool] | None = None) -> None:
        """Pump until ``finished()``; Ctrl-C calls ``on_interrupt`` and keeps waiting.
        ``feed`` (a command's stdin) is called in every round; True if it moved bytes."""
        waiter = Waiter(self.link, IDLE_WAIT)
        next_key_check = 0.0
        while True:
            try:
                while not finished():
                    self.check_failures()
                    fed = feed() if feed is not None else False
                    looked = time.monotonic()
                    got = self._pump_once()
                    if not got and self._silence is not None:  # all there was is read (silence.py)
                        self._silence.listened(looked)
                    if got or fed:
                        waiter.activity()
                    else:
                        waiter.wait()
                    if self.interrupt_key is not None and time.monotonic() >= next_key_check:
                        next_key_check = time.monotonic() + KEY_CHECK
                        if self.interrupt_key():
                            raise KeyboardInterrupt
                return
            except KeyboardInterrupt:
                if on_interrupt is None:
                    raise
                on_interrupt()
                waiter.activity()

    def _abandon(self, ranks: Iterable[int]) -> None:
        """An operation ended early (an error here): its servers' late answers are dropped."""
        for rank in ranks:
            if self.machines[rank].state in BUSY:
                self._step(rank, Local.ABANDON)

    def _consumed(self, rank: int, nbytes: int, final: bool = False) -> None:
        owed = self._owed.get(rank, 0) + nbytes
        if owed >= CREDIT_BATCH or (final and owed):
            self._send_to(rank, p.Credit(owed))
            owed = 0
        self._owed[rank] = owed

    # -- actions (the names in conversation.CONSOLE; each gets (rank, payload))

    def _send(self, payload: Payload) -> None:
        rank, message = payload
        if message is not None:  # None: already sent (a Run pipelined with the server's code)
            self._send_to(rank, message)

    def _ignore(self, payload: Payload) -> None:
        del payload

    def _greet(self, payload: Payload) -> None:
        rank, hello = payload
        self.peers[rank].cwd, self.peers[rank].ready = hello.cwd, True
        self.session.greeted(rank)

    def _lose(self, payload: Payload) -> None:
        self._lost(*payload)

    def _ended_by_server(self, payload: Payload) -> None:
        self._lost(payload[0], "the server ended its session")

    def _credit_only(self, payload: Payload) -> None:
        """Output that nobody waits for (an abandoned command's): still return its credit."""
        rank, output = payload
        self._consumed(rank, len(output.data))

    def _show_output(self, payload: tuple[int, Output]) -> None:
        rank, output = payload
        run = self._run
        try:
            if run is not None and not run.in_flight_at_interrupt(rank, len(output.data)):
                run.sink.output(rank, output.stream, output.data)  # may raise KeyboardInterrupt (Ctrl-C)
        finally:  # credited in any case: a chunk uncredited would shrink the server's window for good
            self._consumed(rank, len(output.data))

    def _signalled(self, payload: tuple[int, p.Signalled]) -> None:
        rank, message = payload
        if self._run is None or message.cmd_id != self._run.cmd_id:
            raise Refused(f"Signalled of command {message.cmd_id} refused: it is not the one running")
        self._run.signalled(rank)

    def _route_message(self, payload: Payload) -> None:
        if self._route is not None:
            self._route[0](*payload)

    def _route_output(self, payload: tuple[int, Output]) -> None:
        rank, output = payload
        if self._route is not None and self._route[1] is not None:
            self._route[1](rank, output.stream, output.data)  # it credits what it wrote
        else:
            self._consumed(rank, len(output.data))

    def _stdin_credit(self, payload: tuple[int, p.Credit]) -> None:
        rank, credit = payload
        if self._run is not None and rank in self._run.credit:
            self._run.credit[rank] += credit.nbytes

    def _command_done(self, payload: tuple[int, p.Done]) -> None:
        rank, done = payload
        run = self._run
        if run is None or done.cmd_id != run.cmd_id:
            raise Refused(f"Done of command {done.cmd_id} refused: it is not the one running")
        peer = self.peers[rank]
        peer.cwd = done.cwd or peer.cwd
        self.peak_rss_kib[rank] = done.peak_rss_kib
        result = Result(rank, peer.host, done.exit, done.signal, done.seconds, done.timed_out,
                        escape(done.error), done.peak_rss_kib, escape(done.note), rank in run.interrupted)
        run.results[rank] = result
        run.sink.done(result)
        self._consumed(rank, 0, final=True)

    def _send_close(self, payload: Payload) -> None:
        rank = payload[0]
        peer = self.peers[rank]
        try:
            self.link.send_all(rank, peer.channel.close())
        except MpishError:
            peer.alive = False

    def _closed(self, payload: Payload) -> None:
        del payload

    def run(
        self, command: str, ranks: Iterable[int], sink: OutputSink, timeout: float | None = None,
        stdin: int | None = None, fanout: int = 0, sent: Iterable[int] = (),
        early: Iterable[tuple[int, Event, object]] = (),
    ) -> dict[int, Result]:
        """Run ``command`` on ``ranks``; output goes to ``sink`` as it arrives.

        ``stdin``: a file descriptor whose bytes, to its end, every rank's command reads
        as its stdin, each from its first byte (spool.py; else the command's stdin is
        /dev/null). ``fanout`` (clush's ``-f``): the command runs on at most that many ranks
        at once, the next starting when one ends; 0 starts it everywhere at once.

        ``sent``: ranks that already got this Run (id :data:`FIRST_RUN_ID`, the console's first
        command; ``mpish ssh -c`` sends it with the server's code), ``early`` what they
        answered before this console existed, handled first, in order."""
        cmd_id = self._id()
        sent = set(sent)
        if sent and cmd_id != FIRST_RUN_ID:
            raise ValueError("only the console's first command can have been sent ahead")
        later = sorted(set(r for r in ranks if r in self.session.later))  # connected in their turn
        targets = [r for r in sorted(set(r for r in ranks if r in self.peers))  # sent: even if lost since
                   if (self.machines[r].state is ConsoleState.IDLE and self.peers[r].alive) or r in sent]
        unsent = [rank for rank in targets if rank not in sent]
        ahead = len(targets) - len(unsent)  # sent with the code: running already, they count in -f
        waiting = unsent[max(0, fanout - ahead):] if fanout > 0 else []
        targets = sorted(targets + later)
        limit = self.timeout if timeout is None else timeout
        started = time.monotonic()
        run = self._run = Running(cmd_id, sink, dict.fromkeys(targets, p.WINDOW))
        watch = self._silence = SilenceWatch(limit, started)
        message = p.Run(cmd_id, command, limit, stdin is not None)
        turns = Turns(self, run, targets, waiting + later, fanout, message, watch)
        spool = StdinSpool(stdin, p.CHUNK) if stdin is not None else None

        def feed() -> bool:
            running = self._in(ConsoleState.RUNNING, targets)
            if spool is None or not running:
                return False
            readers = [r for r in targets if r not in run.results  # running (not lost), or yet to start
                       and getattr(self.peers.get(r), "alive", True)]
            moved = (any(spool.caught_up(r) and run.credit[r] >= p.CHUNK for r in running)
                     and spool.pump(readers))
            spool.tell(self.err)  # why reading stopped early, if it did
            for rank in running:
                chunk = spool.next_chunk(rank, run.credit[rank])
                if chunk is not None:
                    self._step(rank, Local.STDIN, p.Input(cmd_id, *chunk))
                    run.credit[rank] -= len(chunk[0])
                    moved = True
            return moved

        def feed_and_top_up() -> bool:
            # stdout's reader gone (SIGPIPE's way; `| true`), or mpish's SIGTERM: escalated a second on
            if (getattr(sink, "closed", False) or self.terminated) and time.monotonic() >= quiet_again \
                    and interrupts < 3:  # (a command deaf to SIGINT held `timeout 30 mpish -c vi` for ever)
                interrupt(quiet=True)
            for rank, why in watch.silent(on := turns.active(), self._in(ConsoleState.JOINING, on)).items():
                self.peers[rank].alive, self.peers[rank].lost = False, why  # said in its result
                self.session.give_up(rank)  # silent past its deadline (silence.py)
            return feed() | (turns.top_up() if turns.waiting or turns.open else False)

        interrupts = 0
        quiet_again = 0.0

        def interrupt(quiet: bool = False) -> None:
            nonlocal interrupts, quiet_again
            quiet_again = time.monotonic() + 1.0
            turns.skip()  # not started (or not greeted yet): never will be (reported below)
            running = turns.active()
            interrupts += 1
            if interrupts >= len(ESCALATION_HINTS):
                watch.killed(time.monotonic())
            hint = escalation_hint(interrupts, bool(self.terminated))
            if not quiet and running:
                print(f"\nmpish: interrupting {self.describe(running)} {hint}", file=self.err)
                run.interrupted.update(running)  # a command that handles it is said to (outcome.py)
            if getattr(sink, "streams", False):  # until its Signalled, what comes was in flight: dropped
                for rank in running:
                    run.unsignalled[rank] = run.unsignalled.get(rank, 0) + 1
            for rank in running:
                self._step(rank, Local.INTERRUPT, p.Interrupt(cmd_id))

        queued = set(turns.waiting)
        for rank in targets:
            if rank not in queued and self.machines[rank].state is ConsoleState.IDLE:
                self._step(rank, Local.RUN, None if rank in sent else message)
        watch.started([rank for rank in targets if rank not in queued], started)
        for rank, event, answer in early:
            if rank in self.machines:
                self._step(rank, event, answer)
        try:
            self._wait(turns.finished, interrupt, feed_and_top_up)
            turns.top_up()  # the last ones done: hung up now
        finally:
            self._abandon(r for r in targets if r in self.machines)
            self._run = self._silence = None
            if spool is not None:
                spool.close()
        for rank in targets:
            if rank not in run.results:
                why = ("not run: interrupted before its turn (-f)" if rank in turns.skipped
                       else self.peers[rank].lost or "rank lost")
                lost = Result(rank, turns.host(rank), 255, 0, time.monotonic() - started, False, why,
                              interrupted=rank in turns.skipped or rank in turns.given_up)
                run.results[rank] = lost
                sink.done(lost)
        sink.finish()
        if run.discarded and run.interrupted and not getattr(sink, "closed", False):
            print(f"mpish: {self.describe(sorted(run.discarded))}: {run.discarded_amount()}", file=self.err)
        return run.results

    # -- for operations defined in their own modules (console_transfer.py, attach.py, completion.py)

    def new_id(self) -> int:
        return self._id()

    def send_run(self, rank: int, message: p.Run) -> None:
        """A waiting target's turn (turns.py)."""
        self._step(rank, Local.RUN, message)

    def send_event(self, rank: int, event: Event) -> None:  # a table's event (turns.py's CLOSE)
        self._step(rank, event)

    def joining(self, rank: int, state: ConsoleState = ConsoleState.JOINING) -> None:
        """A target the session has just connected, its Run sent with its code (turns.py; GREETING: none)."""
        self.peers[rank] = self.session.peers[rank]
        self.machines[rank] = Machine(CONSOLE, state)
        self._owed.pop(rank, None)

    def idle(self, ranks: Iterable[int]) -> list[int]:
        """The ranks of ``ranks`` that are alive and idle (an operation's targets), sorted."""
        return self._in(ConsoleState.IDLE, sorted(set(r for r in ranks if r in self.peers)))

    def in_state(self, state: ConsoleState, ranks: Iterable[int]) -> list[int]:
        return self._in(state, ranks)

    def wait(self, finished: Callable[[], bool], on_interrupt: Callable[[], None] | None = None) -> None:
        """Handle what arrives until ``finished()``; Ctrl-C calls ``on_interrupt`` (or raises)."""
        self._wait(finished, on_interrupt)

    def send(self, rank: int, message: object) -> None:
        """Send an operation's message through the rank's conversation table."""
        self._step(rank, SENT_EVENTS[type(message)], message)

    def consumed(self, rank: int, nbytes: int, final: bool = False) -> None:
        """``nbytes`` of the rank's bulk bytes were written out: credit them (in batches;
        ``final``: the operation ends, return what is owed now)."""
        self._consumed(rank, nbytes, final)

    def pump(self) -> bool:
        """Check for dead servers, handle what has arrived; True if anything did."""
        self.check_failures()
        return self._pump_once()

    @contextlib.contextmanager
    def routed(self, handler: Callable[[int, object], None],
               output: Callable[[int, int, bytes], None] | None = None) -> Iterator[None]:
        """While attached or completing, the servers' answers go to ``handler`` and their
        output to ``output`` (the table's ``route_*`` actions); then late ones are dropped."""
        self._route = (handler, output)
        try:
            yield
        finally:
            self._route = None
            self._abandon(list(self.peers))

    # -- end

    def close(self) -> None:
        """End the session: close every channel, wait for the servers' close records."""
        closing = [rank for rank, peer in self.peers.items() if peer.alive and peer.channel.is_open]
        for rank in closing:
            self._step(rank, Local.CLOSE)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        waiter = Waiter(self.link, IDLE_WAIT)
        if not self.session.awaits_close:  # finish() waits for the servers' ends instead (ssh)
            closing = []
        while self._in(ConsoleState.CLOSING, closing) and time.monotonic() < deadline:
            with contextlib.suppress(TransportBroken):
                self.check_failures()
            if self._pump_once():
                waiter.activity()
            else:
                waiter.wait()
        for rank in self._in(ConsoleState.CLOSING, closing):
            report.say(f"rank {rank} did not confirm the end of the session", self.err)
        try:
            self.session.finish()
        except TransportBroken as exc:
            report.say(str(exc), self.err)


def console_rss_kib() -> int:
    return peak_rss_kib()
