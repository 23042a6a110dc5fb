"""StdinFeed: the FIFO that carries the console's stdin to a command (shell/server/stdin.py)."""

from __future__ import annotations

import os
from pathlib import Path

from mpish.shell.server.stdin import StdinFeed


def test_end_before_the_command_opens_its_stdin_delivers_bytes_then_eof(tmp_path: Path) -> None:
    fifo = tmp_path / "stdin.marker"
    feed = StdinFeed(fifo)  # EOF may come before bash opens the FIFO: closing the writer
    assert feed.push(b"hello\n") == 0
    feed.end()
    assert feed.flush() == 6
    assert feed.fd >= 0  # then would leave bash's open() waiting for a writer forever
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # what bash's "< FIFO" does
    try:
        feed.bash_opened()
        assert feed.fd < 0 and not fifo.exists()
        assert os.read(reader, 100) == b"hello\n"
        assert os.read(reader, 100) == b""  # EOF: no writer left
    finally:
        os.close(reader)


def test_bytes_nobody_reads_are_dropped_and_credited(tmp_path: Path) -> None:
    feed = StdinFeed(tmp_path / "stdin.marker")
    reader = os.open(feed.path, os.O_RDONLY | os.O_NONBLOCK)
    feed.bash_opened()
    os.close(reader)  # the command ended without reading
    assert feed.push(b"x" * 1000) == 0
    assert feed.flush() == 1000 and feed.broken
    assert feed.push(b"y" * 10) == 10  # later chunks: credited back at once
    feed.close()
