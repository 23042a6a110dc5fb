"""A file's bytes travel raw on their own channel (protocol 7): no msgpack, no copy behind a
header over ssh, exact both ways over the plain channel (ssh) and the secure one (MPI);
what is forged, truncated or out of place is refused with a clear error."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mpish.shell import console_transfer as transfer
from mpish.shell import protocol as p
from mpish.shell.conversation import Event, Local
from mpish.shell.greeting import _Greeter
from mpish.shell.receive import receive
from mpish.transport.pipe import PipeLink
from mpish.wire.errors import AuthenticationError, RemoteProtocolError
from mpish.wire.events import Message
from wirepair import pipe_pair, served_console

EVERY_BYTE = bytes(range(256)) * 64 + b"\x00\r\n\x1b[2J\xff"  # binary, NULs, escapes, no final newline


@pytest.mark.parametrize("plain", [True, False], ids=["plain (ssh)", "secure (MPI)"])
@pytest.mark.parametrize("size", [0, 1, len(EVERY_BYTE), p.CHUNK, 2 * p.CHUNK + 3])
def test_a_file_goes_there_and_back_exact_as_raw_chunks(tmp_path: Path, plain: bool, size: int) -> None:
    data = (EVERY_BYTE * (size // len(EVERY_BYTE) + 1))[:size] if size < p.CHUNK else os.urandom(size)
    (tmp_path / "f.bin").write_bytes(data)
    (tmp_path / "remote").mkdir()
    with served_console(plain=plain) as console:
        assert transfer.put(console, tmp_path / "f.bin", str(tmp_path / "remote"), [1]).verdicts == {1: ""}
        assert (tmp_path / "remote" / "f.bin").read_bytes() == data
        got = transfer.get(console, str(tmp_path / "remote" / "f.bin"), str(tmp_path / "back.bin"), [1])
        assert got == {1: ""} and (tmp_path / "back.bin").read_bytes() == data


def test_over_ssh_a_chunk_is_written_as_header_and_the_same_bytes_not_a_copy() -> None:
    with pipe_pair() as pipes:
        channel = pipes.console_link.plain_channel()
        data = os.urandom(p.CHUNK)
        header, body = channel.send_parts(data, p.FILE)
        assert body is data and len(header) == 5  # no msgpack, no header + data concatenation
        pipes.console_link.send_frame(1, [header, body])
        record = _one_record(pipes.console_link, pipes.server_link)
        [message] = pipes.server_link.plain_channel().receive_record(record)
        assert message == Message(p.FILE, data) and isinstance(message.data, memoryview)  # not copied


def _one_record(sender: PipeLink, receiver: PipeLink) -> object:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sender.progress()  # the pipe holds 64 KiB: the frame goes out as the other end reads
        item = receiver.poll()
        if item is not None:
            return item[1]
        receiver.wait(0.01)
    raise AssertionError("no record arrived")


def _delivered(pipes_console: PipeLink, channel: object) -> list[tuple[Event, object]]:
    seen: list[tuple[Event, object]] = []
    receive(pipes_console, lambda rank: channel,  # type: ignore[arg-type,return-value]
            lambda rank, event, payload: seen.append((event, payload)), lambda rank, why: None)
    return seen


@pytest.mark.parametrize("plain", [True, False], ids=["plain (ssh)", "secure (MPI)"])
def test_a_record_on_the_file_channel_is_delivered_as_a_chunk_not_decoded_as_a_message(plain: bool) -> None:
    with pipe_pair() as pipes:
        sender = pipes.console_link.plain_channel() if plain else pipes.console
        receiver = pipes.server_link.plain_channel() if plain else pipes.server
        raw = b"\x93\x08\x01\xc4"  # would be the start of a msgpack PutChunk: it is only bytes here
        pipes.console_link.send_all(1, sender.send(raw + EVERY_BYTE, p.FILE))
        pipes.console_link.flush()
        pipes.server_link.wait(1.0)
        [(event, chunk)] = _delivered(pipes.server_link, receiver)
        assert event is p.Chunk and isinstance(chunk, p.Chunk) and bytes(chunk.data) == raw + EVERY_BYTE


@pytest.mark.parametrize("change", ["a flipped byte of data", "moved to the stdout channel"])
def test_a_forged_chunk_over_the_secure_channel_is_refused_by_its_tag(change: str) -> None:
    with pipe_pair() as pipes:
        [record] = pipes.console.send(EVERY_BYTE, p.FILE)
        forged = bytearray(record)
        if change == "a flipped byte of data":
            forged[-20] ^= 1
        else:  # the header (channel at offset 28) is covered by the tag
            forged[28:32] = p.STDOUT.to_bytes(4, "big")
        with pytest.raises(AuthenticationError):
            pipes.server.receive_record(bytes(forged))


def test_a_truncated_chunk_record_over_ssh_is_refused_with_a_clear_error() -> None:
    with pipe_pair() as pipes:
        receiver = pipes.server_link.plain_channel()
        with pytest.raises(RemoteProtocolError, match="record of 3 bytes is shorter than its header"):
            receiver.receive_record(b"\x00\x00\x00")
        assert not receiver.is_open  # the stream is broken: nothing after it is trusted


@pytest.mark.parametrize("plain", [True, False], ids=["plain (ssh)", "secure (MPI)"])
def test_a_put_whose_chunks_fall_short_of_its_size_is_discarded_with_an_error(
        tmp_path: Path, plain: bool) -> None:
    (tmp_path / "remote").mkdir()
    with served_console(plain=plain) as console:
        done: list[p.PutDone] = []

        def answer(rank: int, message: object) -> None:
            if isinstance(message, p.PutDone):
                done.append(message)

        with console.routed(answer):
            xfer = console.new_id()
            console.send(1, p.PutStart(xfer, str(tmp_path / "remote"), 1000, 0o644, "short.bin"))
            console.send(1, p.Chunk(EVERY_BYTE[:999]))
            console.send(1, p.PutEnd(xfer, 1000, b"", False))
            console.wait(lambda: bool(done))
    assert done[0].error == f"checksum mismatch for {tmp_path}/remote/short.bin"
    assert list((tmp_path / "remote").iterdir()) == []  # no copy, no part file


def test_a_server_of_another_protocol_version_is_left_out_with_a_clear_error() -> None:
    greeted: list[int] = []
    failed: list[tuple[int, str]] = []
    greeter = _Greeter(lambda rank, hello: greeted.append(rank), lambda rank, why: failed.append((rank, why)))
    greeter._greet((3, p.Hello(p.PROTOCOL_VERSION - 1, "old", 1, "/")))
    greeter._greet((4, p.Hello(p.PROTOCOL_VERSION, "new", 1, "/")))
    assert greeted == [4]
    assert failed == [(3, f"its mpish speaks shell protocol {p.PROTOCOL_VERSION - 1}, this console "
                          f"{p.PROTOCOL_VERSION}: install the same mpish version on both sides")]


def test_file_bytes_have_a_channel_of_their_own_and_the_protocol_says_so() -> None:
    assert p.FILE not in (p.CONTROL, p.STDOUT, p.STDERR)
    assert p.PROTOCOL_VERSION >= 7
    assert Local.OUTPUT is not p.Chunk
