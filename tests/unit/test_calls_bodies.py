"""Bodies of data-only calls: a hostile msgpack body is refused before it exhausts memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import msgpack
import pytest

from mpish.calls.messages import CHUNK_SIZE, Chunk, End, Message
from mpish.calls.serialize import DATA_ALLOWANCE, DATA_EXPANSION, DataLimitExceeded, read_msgpack

MIB = 1 << 20


def _streamed(body: bytes) -> Callable[[], Message]:
    """next_message for ``body`` sent as Chunk* End."""
    frames: list[Message] = [Chunk(body[i : i + CHUNK_SIZE]) for i in range(0, len(body), CHUNK_SIZE)]
    frames.append(End(False, ""))
    return iter(frames).__next__


def _empty_arrays(size: int) -> bytes:
    """A msgpack array of ``size - 5`` empty arrays: ``size`` bytes, ~72 bytes each decoded."""
    return b"\xdd" + (size - 5).to_bytes(4, "big") + b"\x90" * (size - 5)


def test_body_of_empty_arrays_is_refused_with_bounded_memory() -> None:
    body = _empty_arrays(2 * MIB)  # decoded in full: 2 million lists, ~150 MiB
    tracemalloc.start()
    try:
        with pytest.raises(DataLimitExceeded, match="expands to more than"):
            read_msgpack(None, _streamed(body))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the budget, the outer list's 8-byte slots and the body itself, with some slack
    assert peak < DATA_EXPANSION * len(body) + DATA_ALLOWANCE + 8 * len(body) + 2 * len(body) + 8 * MIB


@pytest.mark.parametrize(
    "body",
    [
        b"\xdd\xff\xff\xff\xff\x90",  # an array claiming 2**32-1 items: nothing preallocated
        b"\xdf\xff\xff\xff\xff\x90\x90",  # the same for a map
        b"\xdb\xff\xff\xff\xff" + b"x" * 10,  # a string claiming 4 GiB
        b"\xc6\xff\xff\xff\xff" + b"x" * 10,  # bytes claiming 4 GiB
    ],
    ids=["array", "map", "str", "bin"],
)
def test_lengths_claiming_more_than_the_body_are_refused_before_allocating(body: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"exceeds max_|incomplete input"):
            read_msgpack(body, _streamed(b""))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MIB


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(DataLimitExceeded, match="nests deeper"):
        read_msgpack(b"\x91" * 5000 + b"\xc0", _streamed(b""))


def test_ext_types_trailing_bytes_and_truncation_are_malformed() -> None:
    for body in (b"\xd4\x01\x00", b"\xc0\xc0", b"\x92\xc0"):
        with pytest.raises(ValueError, match="malformed"):
            read_msgpack(body, _streamed(b""))


def test_plain_data_within_bounds_loads_unchanged() -> None:
    records = [{"name": f"f{i}", "size": 99 * i, "mtime": 1.5e9 + i, "tags": ["a"]} for i in range(50_000)]
    mixed = [None, True, -7, 2**63, 1.5, "é", b"\x00" * 10, {1: [2, {"k": b""}]}]
    for value in (records, mixed, list(range(300_000)), b"x" * (9 * MIB)):
        body = msgpack.packb(value, use_bin_type=True)
        inline = body if len(body) <= CHUNK_SIZE else None
        assert read_msgpack(inline, _streamed(body)) == value
