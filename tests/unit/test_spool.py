"""shell/spool.py: a command's stdin, given to every target from its own first byte."""

from __future__ import annotations

import io
import os
import resource
import signal
import tempfile

import pytest

from mpish.shell import spool as spool_module
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


def test_what_every_reader_was_sent_is_given_back_and_the_rest_reads_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A clush user's review: every host running, the spool still kept the whole stream on
    disk (463 MB of /tmp for 1.5 GB of `tar c | mpish -c 'tar x'`). Now it keeps only what a
    reader still lacks (a hole punched behind the slowest): a reader yet to start (offset 0)
    keeps everything; then only the lagging reader's backlog stays, nothing copied."""
    chunk = 64 << 10
    monkeypatch.setattr(spool_module, "TRIM", 4 * chunk)
    reader, writer = os.pipe()
    spool = StdinSpool(reader, chunk=chunk)
    stream = os.urandom(64 * chunk)
    got = {1: b"", 2: b""}
    try:
        for at in range(0, len(stream), chunk):
            os.write(writer, stream[at : at + chunk])
            starting = at < 16 * chunk  # 3 has not started yet: it will need it all
            assert spool.pump(readers=[1, 2, 3] if starting else [1, 2])
            for target, room in ((1, chunk), (2, chunk // 2)):  # 2 lags: half a chunk a round
                piece = spool.next_chunk(target, room)
                got[target] += piece[0] if piece else b""
            assert spool._spool is not None
            kept = os.fstat(spool._spool).st_blocks * 512
            bound = len(got[1]) if starting else len(got[1]) - len(got[2]) + 5 * chunk
            assert kept <= bound + 8192, (at, kept, bound)
        os.close(writer)
        spool.pump(readers=[1, 2])
        got[1] += drain(spool, 1)[0]
        got[2] += drain(spool, 2, room=chunk)[0]
        assert got[1] == got[2] == stream
    finally:
        spool.close()
        os.close(reader)


def test_a_spool_pumped_without_its_readers_keeps_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "TRIM", 4096)
    reader, writer = os.pipe()
    spool = StdinSpool(reader, chunk=4096)
    try:
        for _ in range(8):
            os.write(writer, b"z" * 4096)
            spool.pump()
            drain(spool, 1)
        assert drain(spool, 2) == (b"z" * 8 * 4096, False)  # a late reader: all of it
    finally:
        os.close(writer)
        spool.close()
        os.close(reader)


def test_a_spool_that_cannot_be_written_ends_stdin_with_one_message() -> None:
    """A full /tmp raised OSError out of the console (a traceback, a clush user's review)."""
    reader, writer = os.pipe()
    spool = StdinSpool(reader, chunk=1 << 16)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        os.write(writer, bytes(1 << 16))
        assert spool.pump()  # the first chunk is kept
        os.write(writer, bytes(1 << 16))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, limits[1]))
        assert spool.pump() and spool.eof
        err = io.StringIO()
        spool.tell(err)
        spool.tell(err)
        assert err.getvalue() == ("mpish: cannot keep stdin for the commands (File too large, in the "
                                  "temporary directory: TMPDIR); their stdin ends here\n")
        assert drain(spool, 1) == (bytes(1 << 16), True)  # what was kept, then the end
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
        spool.close()
        os.close(writer)
        os.close(reader)
