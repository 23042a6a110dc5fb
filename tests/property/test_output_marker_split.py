"""A server's output pipe, read in pieces of any size: the command's bytes come out exactly,
up to its end marker, whatever the bytes hold (\\x1f, a marker's beginning, binary)."""

from __future__ import annotations

import fcntl
import os

from fuzz_settings import SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from mpish.shell import protocol as p
from mpish.shell.server.bash import FIRST_BUFFER, OutputStream

MARKER = b"\x1f" + b"0123456789abcdef0123456789abcdef" + b"\x1e"
PIECES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"\x1f", MARKER[:1], MARKER[:5], MARKER[:-1], b"\x1f\x1f0", bytes(1000)]),
)


def read_until_marker(data: bytes, after: bytes, limits: list[int],
                      sizes: list[int] | None = None) -> tuple[bytes, bool]:
    """Write ``data``, the marker and ``after`` into a pipe; read as the server does
    (``sizes``: the buffer's size after each read is appended)."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)  # room for all of it before any read
        os.write(write_end, data + MARKER + after)
        os.close(write_end)
        write_end = -1
        stream = OutputStream(1, read_end)
        out = bytearray()
        step = 0
        while not stream.ended and not stream.eof:
            total = stream.read(limits[step % len(limits)])
            step += 1
            if sizes is not None:
                sizes.append(len(stream.buffer))
            count = stream.split(total, MARKER)
            out += stream.view[:count]
            stream.keep_tail(total)
        return bytes(out), stream.ended
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


@SETTINGS
@given(st.lists(PIECES, max_size=40), st.binary(max_size=50),
       st.lists(st.integers(min_value=1, max_value=4096), min_size=1, max_size=8))
def test_output_before_the_marker_comes_out_exactly_for_any_bytes_and_read_sizes(
    pieces: list[bytes], after: bytes, limits: list[int]
) -> None:
    data = b"".join(pieces)
    if (data + MARKER).find(MARKER) != len(data):  # the command printed the marker itself
        return
    assert read_until_marker(data, after, limits) == (data, True)


def test_text_without_a_unit_separator_is_forwarded_whole() -> None:
    data = b"a log line with 0123456789abcdef in it\n" * 1000
    assert read_until_marker(data, b"late", [len(data) + len(MARKER)]) == (data, True)


def test_the_buffer_grows_to_a_record_once_a_read_fills_it_keeping_a_held_marker_start() -> None:
    data = os.urandom(FIRST_BUFFER - 5).replace(b"\x1f", b"x")  # the marker straddles the first buffer
    sizes: list[int] = []
    assert read_until_marker(data, b"late", [512 << 10], sizes) == (data, True)
    assert sizes == [FIRST_BUFFER, p.CHUNK]


def test_short_output_never_grows_the_buffer() -> None:
    sizes: list[int] = []
    assert read_until_marker(b"hello\n", b"", [512 << 10], sizes) == (b"hello\n", True)
    assert sizes == [FIRST_BUFFER]
