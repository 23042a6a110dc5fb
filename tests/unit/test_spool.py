"""shell/spool.py: a command's stdin, given to every target from its own first byte."""

from __future__ import annotations

import os
import tempfile

from mpish.shell.spool import StdinSpool


def drain(spool: StdinSpool, target: int, room: int = 1 << 20) -> tuple[bytes, bool]:
    got, ended = b"", False
    while (chunk := spool.next_chunk(target, room)) is not None:
        got += chunk[0]
        ended = chunk[1]
    return got, ended


def test_a_target_that_starts_late_gets_the_stream_from_its_first_byte() -> None:
    reader, writer = os.pipe()
    spool = StdinSpool(reader, chunk=4)
    try:
        os.write(writer, b"abcdefghij")
        assert spool.pump() and spool.pump() and spool.pump()  # three chunks of at most 4 bytes
        assert drain(spool, 1) == (b"abcdefghij", False)  # not the end: the pipe is open
        assert spool.caught_up(1)
        os.write(writer, b"KL")
        os.close(writer)
        assert spool.pump() and spool.pump()  # the data, then its end
        assert drain(spool, 1) == (b"KL", True)
        assert drain(spool, 2) == (b"abcdefghijKL", True)  # a later turn: all of it, from the start
        assert spool.next_chunk(1, 100) is None  # the end is sent once
    finally:
        spool.close()
        os.close(reader)


def test_stdin_is_read_only_when_there_is_something_to_read_and_chunks_fit_the_room() -> None:
    reader, writer = os.pipe()
    spool = StdinSpool(reader, chunk=8)
    try:
        assert not spool.pump()  # nothing ready: no blocking read
        os.write(writer, b"0123456789")
        spool.pump()
        assert spool.next_chunk(1, 3) == (b"012", False)  # no more than the target's credit
        assert spool.next_chunk(1, 0) is None
        assert spool.next_chunk(1, 100) == (b"34567", False)
    finally:
        os.close(writer)
        spool.close()
        os.close(reader)


def test_a_regular_file_is_its_own_spool_read_from_the_current_offset() -> None:
    with tempfile.TemporaryFile() as f:
        f.write(b"skip:payload")
        f.flush()
        os.lseek(f.fileno(), 5, os.SEEK_SET)  # `(read header; mpish ...) < file` has read 5 bytes
        spool = StdinSpool(f.fileno(), chunk=3)
        assert not spool.pump()  # nothing to read: it is all there, and its end known
        assert drain(spool, 1) == (b"payload", True)
        assert drain(spool, 2) == (b"payload", True)
        spool.close()
        assert os.read(f.fileno(), 0) == b""  # the caller's file stays open
