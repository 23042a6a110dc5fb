"""Property tests (h11's fuzz contract): chunking never matters, garbage only ever
raises ProtocolError or AuthenticationError, and buffered memory stays bounded."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from fuzz_settings import SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.codec import Codec
from mpish.wire.errors import AuthenticationError, ProtocolError, RemoteProtocolError
from mpish.wire.events import Event
from mpish.wire.framing import FrameDecoder, encode_frame
from mpish.wire.noise import generate_keypair, public_bytes
from mpish.wire.record import HEADER_SIZE, MAX_RECORD_PAYLOAD

K_INIT, K_RESP = generate_keypair(), generate_keypair()
BINDING = Binding(bytes(range(16)), 0, 1, "fuzz")
MAX_BUFFERED = HEADER_SIZE + MAX_RECORD_PAYLOAD + 16


def _open_pair(**options: object) -> tuple[SecureChannel, SecureChannel]:
    init = SecureChannel(
        role=Role.INITIATOR,
        binding=BINDING,
        static_key=K_INIT,
        remote_static=public_bytes(K_RESP),
        **options,  # type: ignore[arg-type]
    )
    resp = SecureChannel(
        role=Role.RESPONDER,
        binding=BINDING,
        static_key=K_RESP,
        remote_static=public_bytes(K_INIT),
        **options,  # type: ignore[arg-type]
    )
    for record in init.initiate():
        resp.receive_record(record)
    for record in resp.records_to_send():
        init.receive_record(record)
    return init, resp


def _stream(messages: list[tuple[int, bytes]], close: bool) -> tuple[bytes, SecureChannel]:
    init, resp = _open_pair()
    records = [r for channel, data in messages for r in init.send(data, channel)]
    if close:
        records += init.close()
    return b"".join(bytes(r) for r in records), resp


messages_strategy = st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=300)), min_size=1, max_size=6)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@SETTINGS
@given(messages=messages_strategy, cuts=st.lists(st.integers(0, 10_000), max_size=30), close=st.booleans())
def test_any_chunking_gives_the_same_events(
    messages: list[tuple[int, bytes]], cuts: list[int], close: bool
) -> None:
    stream, whole_reader = _stream(messages, close)
    expected = whole_reader.receive_data(stream)
    assert len(expected) == len(messages) + int(close)
    # The same bytes again, cut anywhere, to a second reader in the same state: keys are
    # per session, so rebuild an identical reader by replaying the handshake it saw.
    stream2, chunk_reader = _stream(messages, close)
    got: list[Event] = []
    for chunk in _chunks(stream2, cuts):
        got += chunk_reader.receive_data(chunk)
    assert got == expected


@SETTINGS
@given(data=st.binary(max_size=2000), drop=st.booleans())
def test_random_records_raise_only_protocol_or_auth_errors(data: bytes, drop: bool) -> None:
    _, resp = _open_pair(drop_forged=drop)
    try:
        events = resp.receive_record(data)
    except (ProtocolError, AuthenticationError):
        return
    raise AssertionError(f"random bytes were accepted: {events}")


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=600), max_size=8))
def test_random_stream_raises_only_protocol_errors_and_stays_bounded(chunks: list[bytes]) -> None:
    _, resp = _open_pair()
    with pytest.raises((ProtocolError, AuthenticationError)):
        for chunk in chunks:
            assert resp.receive_data(chunk) == []  # garbage never becomes an event
            assert len(resp._stream) <= MAX_BUFFERED
        resp.receive_eof()  # and a stream without the authenticated close is truncated


@SETTINGS
@given(
    messages=messages_strategy,
    mutations=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_mutated_stream_never_delivers_a_changed_message(
    messages: list[tuple[int, bytes]], mutations: list[tuple[int, int]]
) -> None:
    init, resp = _open_pair()
    records = [r for channel, data in messages for r in init.send(data, channel)]
    stream = bytearray(b"".join(bytes(r) for r in records))
    for position, xor in mutations:
        stream[position % len(stream)] ^= xor
    delivered: list[Event] = []
    try:
        delivered += resp.receive_data(bytes(stream))
        resp.receive_eof()
    except (ProtocolError, AuthenticationError):
        pass
    sent = [(channel, data) for channel, data in messages]
    got = [(e.channel, e.data) for e in delivered]  # type: ignore[union-attr]
    assert got == sent[: len(got)]  # only genuine messages, in order, before the damage


def test_fuzz_pair_helper_really_streams() -> None:
    stream, resp = _stream([(1, b"abc")], True)
    assert len(resp.receive_data(stream)) == 2


# -- framing and codec ----------------------------------------------------------------------------


@SETTINGS
@given(frames=st.lists(st.binary(max_size=500), max_size=8), cuts=st.lists(st.integers(0, 5000), max_size=20))
def test_framing_any_chunking(frames: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder(max_frame=1000)
    got = []
    for chunk in _chunks(stream, cuts) if stream else []:
        decoder.feed(chunk)
        got += list(decoder)
    assert got == frames
    assert decoder.at_boundary()


@SETTINGS
@given(data=st.binary(max_size=100))
def test_framing_garbage_is_bounded(data: bytes) -> None:
    decoder = FrameDecoder(max_frame=64)
    decoder.feed(data)
    try:
        frames = list(decoder)
    except RemoteProtocolError:
        return
    assert sum(len(f) + 4 for f in frames) + decoder.buffered == len(data)


codec = Codec("fuzz", max_bytes=1000, max_items=50)


@codec.message(1)
@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    count: int
    blob: bytes
    ratio: float | None = None
    tags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


sample_strategy = st.builds(
    Sample,
    name=st.text(max_size=50),
    count=st.integers(-(2**63), 2**64 - 1),
    blob=st.binary(max_size=100),
    ratio=st.none() | st.floats(allow_nan=False),
    tags=st.lists(st.text(max_size=10), max_size=5),
    env=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
)


@SETTINGS
@given(message=sample_strategy)
def test_codec_round_trip(message: Sample) -> None:
    assert codec.decode(codec.encode(message)) == message


@SETTINGS
@given(data=st.binary(max_size=300))
def test_codec_random_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    try:
        decoded = codec.decode(data)
    except RemoteProtocolError:
        return
    assert isinstance(decoded, Sample)  # only a fully valid message may come out


@SETTINGS
@given(message=sample_strategy, position=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_codec_mutations_raise_only_remote_protocol_error(message: Sample, position: int, xor: int) -> None:
    data = bytearray(codec.encode(message))
    data[position % len(data)] ^= xor
    try:
        decoded = codec.decode(bytes(data))
    except RemoteProtocolError:
        return
    assert isinstance(decoded, Sample)
