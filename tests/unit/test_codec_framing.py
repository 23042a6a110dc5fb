"""The msgpack codec and the stream framing: declared checks and error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import msgpack
import pytest

from mpish.wire.codec import Codec, MaxLen
from mpish.wire.errors import LocalProtocolError, RemoteProtocolError
from mpish.wire.framing import PREAMBLE_LIMIT, FrameDecoder, encode_frame

codec = Codec("test", max_bytes=100, max_items=4)


@codec.message(7)
@dataclass(frozen=True, slots=True)
class Run:
    command: Annotated[str, MaxLen(8)]
    timeout: float | None = None
    ranks: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    flag: bool = False


def test_round_trip_and_types() -> None:
    message = Run("ls", 1.5, [1, 2], {"A": "b"}, b"\x00\xff", True)
    assert codec.decode(codec.encode(message)) == message
    assert codec.types() == {7: Run}
    assert codec.decode(msgpack.packb([7, "ls", 3, [], {}, b"", False])).timeout == 3.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["x" * 9, None, [], {}, b"", False], "command: 9 long, at most 8"),
        ([1, None, [], {}, b"", False], "command: expected str, got int"),
        (["ls", True, [], {}, b"", False], "timeout: expected a number"),
        (["ls", None, [1, 2, 3, 4, 5], {}, b"", False], r"Run.ranks: 5 items"),
        (["ls", None, "12", {}, b"", False], "expected a list"),
        (["ls", None, [True], {}, b"", False], r"ranks\[0\]: expected an int, got bool"),
        (["ls", None, [], [], b"", False], "expected a map"),
        (["ls", None, [], {"a": 1}, b"", False], "expected str"),
        (["ls", None, [], {str(i): "" for i in range(5)}, b"", False], "5 entries|max_map_len"),
        (["ls", None, [], {}, "text", False], "expected bytes"),
        (["ls", None, [], {}, b"", 1], "expected a bool"),
        (["ls"], "1 fields, expected 6"),
    ],
)
def test_each_field_is_checked(fields: list[object], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        codec.decode(msgpack.packb([7, *fields], use_bin_type=True))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (msgpack.packb({"type": 7}), "not a non-empty array"),
        (msgpack.packb([]), "not a non-empty array"),
        (msgpack.packb([8, "ls"]), "unknown test message type 8"),
        (msgpack.packb([True, "ls"]), "unknown"),
        (b"\xc1", "malformed"),
        (msgpack.packb([7]) + b"extra", "malformed"),
        (msgpack.packb([7, msgpack.ExtType(1, b"x")]), "ext|malformed"),
        (bytes(2000), "too large"),
    ],
)
def test_malformed_messages(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        codec.decode(data)


def test_declaration_errors() -> None:
    other = Codec("other")
    with pytest.raises(TypeError, match="dataclass"):
        other.message(1)(int)

    @dataclass
    class Bad:
        value: set[int]

    with pytest.raises(TypeError, match="unsupported"):
        other.message(2)(Bad)

    @dataclass
    class Union2:
        value: int | str

    with pytest.raises(TypeError, match=r"only T \| None"):
        other.message(3)(Union2)

    @dataclass
    class IntKeys:
        value: dict[int, str]

    with pytest.raises(TypeError, match="dict"):
        other.message(4)(IntKeys)

    @dataclass
    class Fine:
        value: int

    other.message(5)(Fine)
    with pytest.raises(ValueError, match="already"):
        other.message(5)(Fine)
    with pytest.raises(LocalProtocolError, match="not a other message"):
        other.encode(Run("x"))


def test_framing_limits() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds"):
        encode_frame(bytes(11), max_frame=10)
    decoder = FrameDecoder(max_frame=10)
    decoder.feed(encode_frame(b"abc") + encode_frame(b"") + encode_frame(b"defg")[:5])
    assert decoder.next_frame() == b"abc"
    assert decoder.next_frame() == b""
    assert decoder.next_frame() is None and not decoder.at_boundary()
    decoder.feed(b"efg")
    assert list(decoder) == [b"defg"]
    assert decoder.at_boundary() and decoder.buffered == 0


MARK = b"\0start\0"


def test_a_login_banner_before_the_start_mark_is_set_aside_and_frames_follow_it() -> None:
    """A ``.bashrc`` that echoes writes before the remote side: those bytes are handed over
    once, whole, even when they and the mark arrive a byte at a time, and are never a frame."""
    seen: list[bytes] = []
    decoder = FrameDecoder(max_frame=1 << 20, after=MARK, on_preamble=seen.append)
    stream = b"Welcome\n\x00\xff\x1b[2J" + MARK + encode_frame(b"hello") + encode_frame(bytes(70_000))
    frames = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        frames += list(decoder)
    assert seen == [b"Welcome\n\x00\xff\x1b[2J"] and frames == [b"hello", bytes(70_000)]
    assert decoder.started and decoder.skipped == len(seen[0]) + len(MARK)


def test_a_stream_that_begins_with_its_start_mark_reports_no_preamble() -> None:
    seen: list[bytes] = []
    decoder = FrameDecoder(max_frame=100, after=MARK, on_preamble=seen.append)
    decoder.feed(MARK[:3])
    assert decoder.next_frame() is None and not decoder.started
    decoder.feed(MARK[3:] + encode_frame(b"x"))
    assert list(decoder) == [b"x"] and seen == [] and decoder.skipped == len(MARK)


def test_no_start_mark_within_the_preamble_limit_is_a_corrupt_stream() -> None:
    decoder = FrameDecoder(max_frame=100, after=MARK)
    decoder.feed(b"y" * PREAMBLE_LIMIT)
    assert decoder.next_frame() is None  # still within what a login may print
    decoder.feed(b"y" * (len(MARK) + 1))
    with pytest.raises(RemoteProtocolError, match=f"no start of mpish in the first {PREAMBLE_LIMIT} bytes"):
        decoder.next_frame()
    assert decoder.peek(3) == b"yyy"  # what it began with, for the message
    whole = FrameDecoder(max_frame=100, after=MARK)  # the same bytes in one read: refused the same
    whole.feed(b"y" * (PREAMBLE_LIMIT + 1) + MARK + encode_frame(b"x"))
    with pytest.raises(RemoteProtocolError, match="no start of mpish"):
        whole.next_frame()
