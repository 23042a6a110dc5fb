"""Every state of the shell conversation and every transition, one table per side (no I/O).

As :mod:`mpish.wire.state` does for the secure channel: the server (``shell/server/``) and
the console (``shell/console.py``) each keep a :class:`Machine` and act only on what its
table says. An event is a protocol message's class (:mod:`mpish.shell.protocol`) or a
local event (:class:`Local`: output read, the command ended, a timeout, Ctrl-C, ...).
A table maps (state, event) to a :class:`Step`: the name of the action to run and the next
state. A pair that is not in the table is illegal: :meth:`Machine.step` raises
:class:`Refused` and the state does not change; the session goes on (the server answers
a refused Run, PutStart, GetStart, TreePut or TreeGet with an error, so that the console
never waits for it; anything else is dropped and logged).

Server, one conversation with the console::

    IDLE --Run--> RUNNING --COMMAND_ENDED (Done sent)--> IDLE
    IDLE --PutStart--> RECEIVING_PUT --PutEnd (PutDone sent)--> IDLE
    IDLE --TreePut--> RECEIVING_TREE --TreeEnd (PutDone sent)--> IDLE   (:put -r, shell/tree.py)
    IDLE --GetStart | TreeGet--> SENDING_GET --GET_ENDED (GetEnd sent)--> IDLE
    any state --CLOSED (close record) | CLOSE (console gone) | BROKEN (channel failed)--> CLOSED
    (the pty of :attach and path completion are served in any state: a pty's output
    shares the credit; PtyOpen while a command or another pty runs gets a PtyExit error,
    and a Run while a pty runs is refused)

Console, one conversation per server::

    GREETING --Hello--> IDLE
    IDLE --RUN (Run sent)--> RUNNING --Done--> IDLE
    JOINING --Hello--> RUNNING   (a host connected in its turn of -f, its Run sent with its code)
    IDLE --PUT (PutStart or TreePut sent)--> PUTTING --PutDone--> IDLE
    IDLE --GET (GetStart or TreeGet sent)--> GETTING --GetEnd--> IDLE
    (a transfer's answers go to the operation of shell/console_transfer.py: route_message)
    IDLE --ATTACH (PtyOpen sent)--> ATTACHED --PtyExit--> IDLE   (:attach, shell/attach.py)
    IDLE --COMPLETE (Complete sent)--> COMPLETING --Completions--> IDLE   (Tab)
    any state --CLOSE (close record sent)--> CLOSING --CLOSED--> CLOSED
    any other state --CLOSED | MALFORMED | BROKEN--> CLOSED   (the server is lost)
    RUNNING, PUTTING, GETTING --ABANDON--> IDLE   (an error here ended the operation)

A new message is a new row of its side's table (the states that accept it, the action,
the next state) and a ``_<action>`` method on that side.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from mpish.wire.errors import ProtocolError
from mpish.wire.message import Frozen, frozen

from . import protocol as p


class Refused(ProtocolError):
    """A message or local event that the conversation's state does not allow.

    Unlike other protocol errors it leaves the secure channel and the session usable:
    the event is refused (answered with an error, or dropped) and the state is unchanged.
    """


class Local(enum.Enum):
    """Events that are not messages from the other side."""

    READ = "read"  # server: bytes were read from the command's pipes
    OUTPUT = "output"  # console: raw output arrived
    MALFORMED = "malformed"  # a control message that does not decode
    BROKEN = "broken"  # the channel failed (a record it could not accept left it unusable)
    COMMAND_ENDED = "command ended"  # the command's end marker came, or its shell ended
    TIMEOUT = "timeout"  # the command's deadline passed (again: the escalation goes on)
    GET_ENDED = "get ended"  # the file was sent to its end, failed or was interrupted
    CLOSE = "close"  # server: the console is gone; console: close sent
    CLOSED = "closed"  # the other side's close record arrived
    RUN = "run"  # console: Run sent
    STDIN = "stdin"  # console: Input sent
    INTERRUPT = "interrupt"  # console: Ctrl-C, Interrupt sent
    PUT = "put"  # console: PutStart sent
    PUT_DATA = "put data"  # console: a Chunk, Entry, FileEnd, PutEnd or TreeEnd sent
    GET = "get"  # console: GetStart sent
    ATTACH = "attach"  # console: PtyOpen sent
    PTY_DATA = "pty data"  # console: PtyInput, PtyResize or PtyClose sent
    COMPLETE = "complete"  # console: Complete sent (Tab)
    ABANDON = "abandon"  # console: the operation ended early (an error on our side); late answers are dropped


Event = type | Local


class ServerState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running a command"
    RECEIVING_PUT = "receiving a file"
    RECEIVING_TREE = "receiving a tree"
    SENDING_GET = "sending a file"
    CLOSED = "closed"


class ConsoleState(enum.Enum):
    GREETING = "waiting for its Hello"
    JOINING = "connecting, its command sent with its code"
    IDLE = "idle"
    RUNNING = "running a command"
    PUTTING = "sending it a file"
    GETTING = "getting a file from it"
    ATTACHED = "attached to a program on its pty"
    COMPLETING = "completing a path"
    CLOSING = "closing"
    CLOSED = "closed"


def first_state(ready: bool, sent_run: bool) -> ConsoleState:
    """A server's state when the console starts: IDLE once greeted, else GREETING, or JOINING
    if its Run went with its code (a host connected in its turn of -f)."""
    return ConsoleState.IDLE if ready else ConsoleState.JOINING if sent_run else ConsoleState.GREETING


StateT = TypeVar("StateT", bound=enum.Enum)


@frozen
class Step(Frozen, Generic[StateT]):
    action: str  # the name of the side's method that acts (see Machine.fire)
    next: StateT
    method: str  # "_" + action: the attribute looked up, made once (output is on the hot path)


def _table(entries: Iterable[tuple[Iterable[StateT], Event, str, StateT | None]]
           ) -> dict[tuple[StateT, Event], Step[StateT]]:
    """Expand rows (states, event, action, next state; None = the same state)."""
    table: dict[tuple[StateT, Event], Step[StateT]] = {}
    for states, event, action, following in entries:
        for state in states:
            assert (state, event) not in table, (state, event)
            table[(state, event)] = Step(action, state if following is None else following, f"_{action}")
    return table


_S = ServerState
_NO_COMMAND = (_S.IDLE, _S.RECEIVING_PUT, _S.RECEIVING_TREE, _S.SENDING_GET)
_SERVING = (*_NO_COMMAND, _S.RUNNING)

SERVER: dict[tuple[ServerState, Event], Step[ServerState]] = _table([
    ((_S.IDLE,), p.Run, "start_command", _S.RUNNING),
    ((_S.IDLE,), p.PutStart, "start_put", _S.RECEIVING_PUT),
    ((_S.IDLE,), p.GetStart, "start_get", _S.SENDING_GET),
    ((_S.IDLE,), p.TreePut, "start_tree_put", _S.RECEIVING_TREE),
    ((_S.IDLE,), p.TreeGet, "start_tree_get", _S.SENDING_GET),
    ((_S.IDLE,), p.Input, "drop_stale", None),  # stdin sent while the command ended
    ((_S.IDLE,), p.Interrupt, "drop_stale", None),  # a Ctrl-C that crossed the Done
    (_SERVING, p.Credit, "add_credit", None),
    ((_S.RUNNING,), p.Input, "feed_stdin", None),
    ((_S.RUNNING,), p.Interrupt, "interrupt_command", None),
    ((_S.RUNNING,), Local.READ, "forward_output", None),
    (_NO_COMMAND, Local.READ, "drop_output", None),  # late job output
    ((_S.RUNNING,), Local.TIMEOUT, "time_out", None),
    ((_S.RUNNING,), Local.COMMAND_ENDED, "report_done", _S.IDLE),
    ((_S.RECEIVING_PUT,), p.Chunk, "write_chunk", None),
    ((_S.RECEIVING_PUT,), p.PutEnd, "end_put", _S.IDLE),
    ((_S.RECEIVING_TREE,), p.Entry, "tree_entry", None),
    ((_S.RECEIVING_TREE,), p.Chunk, "tree_chunk", None),
    ((_S.RECEIVING_TREE,), p.FileEnd, "tree_file_end", None),
    ((_S.RECEIVING_TREE,), p.TreeEnd, "end_tree_put", _S.IDLE),
    ((_S.SENDING_GET,), p.Interrupt, "interrupt_get", None),
    ((_S.SENDING_GET,), Local.GET_ENDED, "end_get", _S.IDLE),
    (_SERVING, p.PtyOpen, "open_pty", None),  # refused with a PtyExit unless idle (pty_session.py)
    (_SERVING, p.PtyInput, "pty_input", None),
    (_SERVING, p.PtyResize, "pty_resize", None),
    (_SERVING, p.PtyClose, "pty_close", None),
    (_SERVING, p.Complete, "complete", None),
    (_SERVING, Local.MALFORMED, "drop_malformed", None),
    (_SERVING, Local.CLOSED, "close", _S.CLOSED),
    (_SERVING, Local.CLOSE, "close", _S.CLOSED),
    (_SERVING, Local.BROKEN, "close", _S.CLOSED),
])

_C = ConsoleState
_OPEN = (_C.IDLE, _C.RUNNING, _C.PUTTING, _C.GETTING, _C.ATTACHED, _C.COMPLETING)

CONSOLE: dict[tuple[ConsoleState, Event], Step[ConsoleState]] = _table([
    ((_C.GREETING,), p.Hello, "greet", _C.IDLE),
    ((_C.JOINING,), p.Hello, "greet", _C.RUNNING),
    ((_C.JOINING,), Local.INTERRUPT, "send", None),  # queued behind its Run
    ((_C.IDLE,), Local.RUN, "send", _C.RUNNING),
    ((_C.IDLE,), Local.PUT, "send", _C.PUTTING),
    ((_C.IDLE,), Local.GET, "send", _C.GETTING),
    ((_C.IDLE, _C.PUTTING, _C.GETTING), Local.OUTPUT, "credit_only", None),  # nobody waits for it
    ((_C.RUNNING,), Local.OUTPUT, "show_output", None),
    ((_C.RUNNING,), Local.STDIN, "send", None),
    ((_C.RUNNING,), p.Credit, "stdin_credit", None),
    ((_C.RUNNING,), p.Done, "command_done", _C.IDLE),
    ((_C.RUNNING,), p.Signalled, "signalled", None),
    ((_C.RUNNING, _C.GETTING), Local.INTERRUPT, "send", None),
    ((_C.PUTTING,), Local.PUT_DATA, "send", None),
    ((_C.PUTTING,), p.Credit, "route_message", None),
    ((_C.PUTTING,), p.PutDone, "route_message", _C.IDLE),
    ((_C.GETTING,), p.Chunk, "route_message", None),
    ((_C.GETTING,), p.Entry, "route_message", None),
    ((_C.GETTING,), p.FileEnd, "route_message", None),
    ((_C.GETTING,), p.GetEnd, "route_message", _C.IDLE),
    ((_C.IDLE,), Local.ATTACH, "send", _C.ATTACHED),
    ((_C.ATTACHED,), Local.PTY_DATA, "send", None),
    ((_C.ATTACHED,), Local.OUTPUT, "route_output", None),
    ((_C.ATTACHED,), p.Credit, "route_message", None),
    ((_C.ATTACHED,), p.PtyExit, "route_message", _C.IDLE),
    ((_C.IDLE,), Local.COMPLETE, "send", _C.COMPLETING),
    ((_C.COMPLETING,), Local.OUTPUT, "credit_only", None),
    ((_C.COMPLETING,), p.Completions, "route_message", _C.IDLE),
    ((_C.GREETING, _C.JOINING, *_OPEN), Local.CLOSE, "send_close", _C.CLOSING),
    ((_C.GREETING, _C.JOINING, *_OPEN), Local.CLOSED, "ended_by_server", _C.CLOSED),
    ((_C.GREETING, _C.JOINING, *_OPEN), Local.MALFORMED, "lose", _C.CLOSED),
    ((_C.GREETING, _C.JOINING, *_OPEN), Local.BROKEN, "lose", _C.CLOSED),
    ((_C.RUNNING, _C.PUTTING, _C.GETTING, _C.ATTACHED, _C.COMPLETING), Local.ABANDON, "ignore", _C.IDLE),
    ((_C.CLOSING,), Local.CLOSED, "closed", _C.CLOSED),
    ((_C.CLOSING,), Local.OUTPUT, "ignore", None),  # what was in flight when we closed
    ((_C.CLOSING,), Local.MALFORMED, "ignore", None),
    ((_C.CLOSING,), Local.BROKEN, "ignore", _C.CLOSED),
    ((_C.CLOSING,), p.Credit, "ignore", None),
    ((_C.CLOSING,), p.Done, "ignore", None),
    ((_C.CLOSING,), p.PutDone, "ignore", None),
    ((_C.CLOSING,), p.Chunk, "ignore", None),
    ((_C.CLOSING,), p.GetEnd, "ignore", None),
    ((_C.CLOSING,), p.Entry, "ignore", None),
    ((_C.CLOSING,), p.FileEnd, "ignore", None),
    ((_C.CLOSING,), p.PtyExit, "ignore", None),
    ((_C.CLOSING,), p.Completions, "ignore", None),
])


def event_name(event: Event) -> str:
    return event.value if isinstance(event, Local) else event.__name__


class Machine(Generic[StateT]):
    """One conversation's state; :meth:`fire` runs an event's action and moves on."""

    def __init__(self, table: dict[tuple[StateT, Event], Step[StateT]], state: StateT) -> None:
        self.table = table
        self.state = state

    def step(self, event: Event) -> Step[StateT]:
        """What ``event`` does now; :class:`Refused` if the table does not allow it."""
        try:
            return self.table[(self.state, event)]
        except KeyError:
            raise Refused(f"{event_name(event)} refused: the conversation is {self.state.value}") from None

    def fire(self, event: Event, actor: object, payload: object = None) -> None:
        """Run the action of ``event`` (``actor._<action>(payload)``), then change state.

        The action may raise :class:`Refused` (an id that is not the current one): the
        state then stays as it was."""
        step = self.step(event)
        act: Callable[[object], None] = getattr(actor, step.method)
        act(payload)
        self.state = step.next


def actions(table: dict[tuple[StateT, Event], Step[StateT]]) -> set[str]:
    """Every action name a side must implement (as ``_<name>``)."""
    return {step.action for step in table.values()}
