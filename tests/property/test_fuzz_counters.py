"""Fuzzing forged records whose counters lie far in the future or whose channels were
never used (issue 10, finding 1: such records made the receiver derive and keep keys).

Contract: into a drop_forged channel, any such record raises only ProtocolError or
AuthenticationError, leaves every piece of receive state exactly as it was (channels,
epochs, kept keys, replay windows, partial messages), and genuine records still open.
"""

from __future__ import annotations

from fuzz_settings import SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.errors import AuthenticationError, ProtocolError
from mpish.wire.events import Message
from mpish.wire.noise import generate_keypair, public_bytes
from mpish.wire.record import (
    DEFAULT_LIMITS,
    FLAG_MORE,
    HEADER,
    MAX_CHANNEL,
    TAGLEN,
    VERSION,
    Limits,
    RecordType,
)

K_INIT, K_RESP = generate_keypair(), generate_keypair()
BINDING = Binding(bytes(range(16)), 0, 1, "fuzz-counters")
SMALL_LIMITS = Limits(rekey_shift=4)  # a key epoch every 16 records: the window spans 512 epochs
GENUINE_CHANNELS = (0, 1, 2)
COUNTER_MAX = 2**64 - 1


def far_counters(limits: Limits) -> st.SearchStrategy[int]:
    """Counters a receiver has not reached: the next epochs, any later one, the limits."""
    shift = limits.rekey_shift
    return st.one_of(
        st.integers(1, 8).map(lambda k: k << shift),  # first counter of one of the next epochs
        st.tuples(st.integers(1, (COUNTER_MAX >> shift)), st.integers(0, (1 << shift) - 1)).map(
            lambda t: (t[0] << shift) + t[1]  # anywhere in any later epoch
        ),
        st.sampled_from([limits.max_counter, limits.max_counter + 1, COUNTER_MAX]),
        st.integers(0, COUNTER_MAX),
    )


channels = st.one_of(st.sampled_from(GENUINE_CHANNELS), st.integers(0, MAX_CHANNEL))


def forged_records(limits: Limits) -> st.SearchStrategy[bytes]:
    """Well-formed records of the right session and endpoints whose tag cannot verify."""
    return st.builds(
        lambda kind, flags, channel, counter, body: HEADER.pack(
            VERSION, kind, flags, 0, BINDING.session, 0, 1, channel, counter, len(body)
        )
        + body,
        st.sampled_from([RecordType.DATA, RecordType.CLOSE]),
        st.sampled_from([0, FLAG_MORE]),
        channels,
        far_counters(limits),
        st.binary(min_size=TAGLEN, max_size=80),
    )


def _open_pair(limits: Limits) -> tuple[SecureChannel, SecureChannel]:
    init = SecureChannel(
        role=Role.INITIATOR,
        binding=BINDING,
        static_key=K_INIT,
        remote_static=public_bytes(K_RESP),
        limits=limits,
    )
    resp = SecureChannel(
        role=Role.RESPONDER,
        binding=BINDING,
        static_key=K_RESP,
        remote_static=public_bytes(K_INIT),
        limits=limits,
        drop_forged=True,
    )
    for record in init.initiate():
        resp.receive_record(record)
    for record in resp.records_to_send():
        init.receive_record(record)
    return init, resp


def _set_bits(ring: bytearray | None) -> list[int] | None:
    return None if ring is None else [i for i in range(len(ring) * 8) if ring[i >> 3] & (1 << (i & 7))]


def _receive_state(channel: SecureChannel) -> object:
    """Everything a record can change on the receiving side, as comparable values."""
    opener = channel._opener
    assert opener is not None
    return (
        {
            number: (state.epoch, state.keys.epochs(), state.keys._aeads is None, state.keys._floor,
                     state.window.top, _set_bits(state.window.ring))
            for number, state in opener._channels.items()
        },
        {number: bytes(data) for number, data in channel._pending.items()},
        dict(channel._pending_next),
        channel.state,
    )


def _forged_records_leave_no_state(limits: Limits, sent: int, forged: list[bytes]) -> None:
    init, resp = _open_pair(limits)
    for i in range(sent):  # genuine traffic first, so there are epochs and windows to disturb
        for number in GENUINE_CHANNELS:
            (record,) = init.send(b"%d" % i, number)
            assert resp.receive_record(record) == [Message(number, b"%d" % i)]
    before = _receive_state(resp)
    for record in forged:
        try:
            events = resp.receive_record(record)
        except (ProtocolError, AuthenticationError):
            continue
        raise AssertionError(f"a forged record was accepted: {events}")
    assert _receive_state(resp) == before
    assert resp.rejected == len(forged)
    for number in GENUINE_CHANNELS:
        (record,) = init.send(b"after", number)
        assert resp.receive_record(record) == [Message(number, b"after")]


@SETTINGS
@given(sent=st.integers(0, 40), forged=st.lists(forged_records(SMALL_LIMITS), min_size=1, max_size=12))
def test_far_counters_and_unknown_channels_leave_no_state_small_epochs(
    sent: int, forged: list[bytes]
) -> None:
    _forged_records_leave_no_state(SMALL_LIMITS, sent, forged)


@SETTINGS
@given(sent=st.integers(0, 3), forged=st.lists(forged_records(DEFAULT_LIMITS), min_size=1, max_size=12))
def test_far_counters_and_unknown_channels_leave_no_state_real_epochs(
    sent: int, forged: list[bytes]
) -> None:
    _forged_records_leave_no_state(DEFAULT_LIMITS, sent, forged)
