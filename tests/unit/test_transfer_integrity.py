"""The end-to-end SHA-256 of :put and :get: the receiver hashes what it writes, once, and a
file whose bytes are not the sender's never appears under its final name."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mpish.shell import protocol as p
from mpish.shell.console_transfer import FileCopy
from mpish.shell.server.transfer_files import Put
from mpish.shell.transfer import PartFile


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_a_put_whose_bytes_are_not_the_senders_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    put = Put(p.PutStart(1, str(tmp_path / "f"), 3, 0o644, "f"), str(tmp_path))
    put.write(b"abd")  # one byte changed on the way
    done = put.finish(p.PutEnd(1, 3, sha(b"abc"), False))
    assert done.error == f"checksum mismatch for {tmp_path / 'f'}"
    assert done.sha256 == sha(b"abd")  # what arrived, for the console's own comparison
    assert os.listdir(tmp_path) == []


def test_a_put_that_arrived_intact_is_committed_with_the_digest_of_its_bytes(tmp_path: Path) -> None:
    put = Put(p.PutStart(1, str(tmp_path), 6, 0o640, "f"), str(tmp_path))
    put.write(b"abc")
    put.write(b"def")
    done = put.finish(p.PutEnd(1, 6, sha(b"abcdef"), False))
    assert (done.error, done.size, done.sha256) == ("", 6, sha(b"abcdef"))
    assert (tmp_path / "f").read_bytes() == b"abcdef" and os.listdir(tmp_path) == ["f"]


def test_a_get_whose_bytes_are_not_the_senders_is_refused_and_leaves_no_file(tmp_path: Path) -> None:
    copy = FileCopy(tmp_path / "f")
    copy.write(b"abd")
    verdict = copy.finish(p.GetEnd(1, 3, sha(b"abc"), "", 0o644))
    assert verdict == f"checksum mismatch for {tmp_path / 'f'}"
    assert os.listdir(tmp_path) == []


def test_a_part_file_cut_short_behind_its_writer_is_refused(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "f")
    part.write(b"abcdef")
    os.ftruncate(part.fd, 3)  # the bytes hashed are no longer what the file holds
    assert part.commit(sha(b"abcdef"), 6, 0o644) == f"checksum mismatch for {tmp_path / 'f'}"
    assert os.listdir(tmp_path) == []


def test_a_received_file_is_hashed_as_it_is_written_and_not_read_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a 1 GiB file back to hash it again cost a second digest and a second pass."""
    data = os.urandom(3 << 20)
    part = PartFile(tmp_path / "f")
    for start in range(0, len(data), 1 << 20):
        part.write(data[start:start + (1 << 20)])

    def no_read_back(*args: object) -> bytes:
        raise AssertionError("the part file was read back")

    monkeypatch.setattr(os, "pread", no_read_back)
    monkeypatch.setattr(os, "read", no_read_back)
    assert part.commit(sha(data), len(data), 0o600) == ""
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.skipif(not hasattr(__import__("fcntl"), "F_GETPIPE_SZ"), reason="Linux pipes only")
def test_a_remote_servers_pipes_to_ssh_get_a_1_mib_buffer() -> None:
    """With 64 KiB pipes sshd stopped every 64 KiB while the server hashed and wrote a chunk."""
    import fcntl

    from mpish.transport.pipe import PIPE_SIZE, PipeLink

    ours, theirs = os.pipe(), os.pipe()
    try:
        PipeLink(ours[0], theirs[1], rank=1, size=2, peer=0, pipe_size=PIPE_SIZE)
        sizes = {fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) for fd in (ours[0], theirs[1])}
        assert sizes == {1 << 20}
    finally:
        for fd in (*ours, *theirs):
            os.close(fd)
