"""Which stdin ``-c`` broadcasts (clush's rule): data to send, yes; a terminal, /dev/null or an
empty file, no. cron and CI give /dev/null, and broadcasting it started every host at once,
so ``mpish ssh -f N`` lost its fan-out limit (new-user review)."""

from __future__ import annotations

import os
from pathlib import Path

from mpish.shell.options import stdin_to_send


def test_dev_null_and_an_empty_or_consumed_file_are_nothing_to_broadcast(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    read = tmp_path / "read"
    read.write_bytes(b"already read\n")
    with open(os.devnull, "rb") as null, open(empty, "rb") as nothing, open(read, "rb") as consumed:
        consumed.read()
        assert stdin_to_send(False, null.fileno()) is None
        assert stdin_to_send(False, nothing.fileno()) is None
        assert stdin_to_send(False, consumed.fileno()) is None


def test_a_file_or_pipe_with_data_is_broadcast_unless_nostdin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"hi\n")
    r, w = os.pipe()
    try:
        with open(data, "rb") as f:
            assert stdin_to_send(False, f.fileno()) == f.fileno()
            assert stdin_to_send(True, f.fileno()) is None
        assert stdin_to_send(False, r) == r  # a pipe may still bring data: it is sent
    finally:
        os.close(r)
        os.close(w)


def test_a_closed_descriptor_is_nothing_to_broadcast() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert stdin_to_send(False, r) is None
