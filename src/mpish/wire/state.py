"""Every state of a SecureChannel and every transition, in one table (h11's "Rule 1").

    IDLE --start--> HANDSHAKE --handshake_done--> OPEN
    OPEN --send_close--> CLOSE_SENT --recv_close--> CLOSED
    OPEN --recv_close--> CLOSE_RECEIVED --send_close--> CLOSED
    any state --fail--> ERROR            (terminal: every later call raises)

A responder starts in HANDSHAKE (it waits for the first message); an initiator in IDLE.
"""

from __future__ import annotations

import enum

from .errors import LocalProtocolError


class State(enum.Enum):
    IDLE = "idle"  # initiator, handshake not started
    HANDSHAKE = "handshake"  # handshake messages in flight
    OPEN = "open"  # both directions carry data
    CLOSE_SENT = "close-sent"  # we sent our close record; we may still receive
    CLOSE_RECEIVED = "close-received"  # the peer closed; we may still send
    CLOSED = "closed"  # both closed cleanly
    ERROR = "error"  # a protocol or authentication error happened; unusable


class Input(enum.Enum):
    START = "start"
    HANDSHAKE_DONE = "handshake_done"
    SEND_CLOSE = "send_close"
    RECV_CLOSE = "recv_close"
    FAIL = "fail"


TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.IDLE, Input.START): State.HANDSHAKE,
    (State.HANDSHAKE, Input.HANDSHAKE_DONE): State.OPEN,
    (State.OPEN, Input.SEND_CLOSE): State.CLOSE_SENT,
    (State.OPEN, Input.RECV_CLOSE): State.CLOSE_RECEIVED,
    (State.CLOSE_SENT, Input.RECV_CLOSE): State.CLOSED,
    (State.CLOSE_RECEIVED, Input.SEND_CLOSE): State.CLOSED,
}

CAN_SEND = frozenset({State.OPEN, State.CLOSE_RECEIVED})  # states that may seal data
CAN_RECEIVE = frozenset({State.HANDSHAKE, State.OPEN, State.CLOSE_SENT})  # that accept records


def next_state(state: State, event: Input) -> State:
    """The state after ``event``; misuse raises LocalProtocolError."""
    if event is Input.FAIL:
        return State.ERROR
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"cannot {event.value} in state {state.value}") from None
