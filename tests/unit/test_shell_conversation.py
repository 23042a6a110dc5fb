"""The shell conversation's tables (shell/conversation.py), without any I/O."""

from __future__ import annotations

import enum

import pytest

from mpish.shell import protocol as p
from mpish.shell.console import Console
from mpish.shell.conversation import (
    CONSOLE,
    SERVER,
    ConsoleState,
    Event,
    Local,
    Machine,
    Refused,
    ServerState,
    Step,
    actions,
)
from mpish.shell.server import ShellServer
from mpish.wire.errors import ProtocolError

MESSAGES: list[Event] = [
    p.Hello, p.Run, p.Interrupt, p.Credit, p.Done, p.PutStart, p.Chunk, p.PutEnd, p.PutDone,
    p.GetStart, p.GetEnd, p.Input,
]
EVENTS: list[Event] = [*MESSAGES, *Local]
SIDES = {"server": (SERVER, ServerState), "console": (CONSOLE, ConsoleState)}


class Recorder:
    """An actor that records which action ran with which payload."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name: str) -> object:
        if not name.startswith("_"):
            raise AttributeError(name)
        return lambda payload: self.calls.append((name[1:], payload))


def _transitions(table: dict[tuple[enum.Enum, Event], Step[enum.Enum]]) -> list[object]:
    return [pytest.param(state, event, step, id=f"{state.name}-{getattr(event, '__name__', event)}")
            for (state, event), step in table.items()]


@pytest.mark.parametrize(("state", "event", "step"), _transitions(SERVER))  # type: ignore[arg-type]
def test_every_legal_server_transition_runs_its_action_and_moves_on(
        state: ServerState, event: Event, step: Step[ServerState]) -> None:
    machine = Machine(SERVER, state)
    actor = Recorder()
    machine.fire(event, actor, "payload")
    assert actor.calls == [(step.action, "payload")]
    assert machine.state is step.next


@pytest.mark.parametrize(("state", "event", "step"), _transitions(CONSOLE))  # type: ignore[arg-type]
def test_every_legal_console_transition_runs_its_action_and_moves_on(
        state: ConsoleState, event: Event, step: Step[ConsoleState]) -> None:
    machine = Machine(CONSOLE, state)
    actor = Recorder()
    machine.fire(event, actor, "payload")
    assert actor.calls == [(step.action, "payload")]
    assert machine.state is step.next


@pytest.mark.parametrize("side", SIDES)
def test_an_illegal_event_in_each_state_is_refused_and_the_state_stays_usable(side: str) -> None:
    table, states = SIDES[side]
    for state in states:
        legal = [event for (s, event) in table if s is state]
        for event in EVENTS:
            if event in legal:
                continue
            machine: Machine[enum.Enum] = Machine(table, state)  # type: ignore[arg-type]
            actor = Recorder()
            with pytest.raises(Refused, match=state.value):
                machine.fire(event, actor, None)
            assert machine.state is state and actor.calls == []
            if legal:  # the conversation goes on: the next legal event still acts
                machine.fire(legal[0], actor, None)
                assert actor.calls


def test_refused_is_a_protocol_error_naming_the_event_and_the_state() -> None:
    machine = Machine(SERVER, ServerState.RUNNING)
    with pytest.raises(ProtocolError, match="Run refused: the conversation is running a command"):
        machine.step(p.Run)


def test_an_action_that_refuses_leaves_the_state_unchanged() -> None:
    class Stale:
        def _command_done(self, payload: object) -> None:
            raise Refused("Done of another command")

    machine = Machine(CONSOLE, ConsoleState.RUNNING)
    with pytest.raises(Refused):
        machine.fire(p.Done, Stale(), None)
    assert machine.state is ConsoleState.RUNNING


def test_a_closed_conversation_accepts_nothing() -> None:
    for table, state in ((SERVER, ServerState.CLOSED), (CONSOLE, ConsoleState.CLOSED)):
        assert not [event for (s, event) in table if s is state]


def test_each_side_implements_every_action_of_its_table() -> None:
    needed: list[tuple[set[str], type]] = [(actions(SERVER), ShellServer), (actions(CONSOLE), Console)]
    for names, side in needed:
        missing = {name for name in names if not callable(getattr(side, f"_{name}", None))}
        assert not missing, f"{side.__name__} lacks {missing}"


def test_the_server_takes_one_command_or_one_transfer_at_a_time() -> None:
    for busy in (ServerState.RUNNING, ServerState.RECEIVING_PUT, ServerState.SENDING_GET):
        for start in (p.Run, p.PutStart, p.GetStart):
            assert (busy, start) not in SERVER


SERVER_PATH = [p.Run, Local.READ, p.Credit, p.Input, p.Interrupt, Local.TIMEOUT, Local.COMMAND_ENDED,
               p.Interrupt, p.PutStart, p.Chunk, p.PutEnd, p.GetStart, p.Credit, Local.GET_ENDED,
               Local.CLOSED]
CONSOLE_PATH = [p.Hello, Local.RUN, Local.STDIN, Local.OUTPUT, p.Credit, Local.INTERRUPT, p.Done, Local.PUT,
                Local.PUT_DATA, p.Credit, p.PutDone, Local.GET, p.Chunk, p.GetEnd, Local.CLOSE, p.Done,
                Local.CLOSED]


@pytest.mark.parametrize(("table", "start", "path", "end"), [
    (SERVER, ServerState.IDLE, SERVER_PATH, ServerState.CLOSED),
    (CONSOLE, ConsoleState.GREETING, CONSOLE_PATH, ConsoleState.CLOSED),
], ids=["server", "console"])
def test_a_whole_session_goes_from_its_start_to_closed(
        table: dict[tuple[enum.Enum, Event], Step[enum.Enum]], start: enum.Enum, path: list[Event],
        end: enum.Enum) -> None:
    machine = Machine(table, start)
    for event in path:
        machine.fire(event, Recorder())
    assert machine.state is end


def test_an_abandoned_operation_lets_the_next_one_start_and_drops_its_late_answers() -> None:
    machine = Machine(CONSOLE, ConsoleState.RUNNING)
    machine.fire(Local.ABANDON, Recorder())
    with pytest.raises(Refused):
        machine.fire(p.Done, Recorder())  # the abandoned command's Done
    machine.fire(Local.OUTPUT, Recorder())  # its late output: credited, not shown
    machine.fire(Local.PUT, Recorder())
    assert machine.state is ConsoleState.PUTTING
