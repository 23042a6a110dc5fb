"""The shell's channel inside ssh: framing only, SecureChannel's end-of-session rules, never over MPI."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mpish.transport.mpi import MpiLink
from mpish.transport.pipe import PipeLink, PlainChannel
from mpish.transport.ship import closure
from mpish.wire.errors import LocalProtocolError, RemoteProtocolError
from mpish.wire.events import CloseReceived, Message

SRC = Path(__file__).resolve().parents[2] / "src" / "mpish"


def _pair() -> tuple[PlainChannel, PlainChannel]:
    r, w = os.pipe()
    link = PipeLink(r, w, rank=0, size=2, peer=1)
    try:
        return link.plain_channel(), link.plain_channel()
    finally:
        link.close()


def test_messages_keep_their_channel_and_bytes_and_close_ends_the_sender() -> None:
    console, server = _pair()
    assert console.is_open and console.initiate() == [] and console.records_to_send() == []
    big = os.urandom(1 << 20)
    events = [e for r in console.send(b"ls", 0) + console.send(big, 1) + console.send(b"", 2)
              for e in server.receive_record(r)]
    assert events == [Message(0, b"ls"), Message(1, big), Message(2, b"")]
    [close] = console.close()
    assert not console.is_open
    with pytest.raises(LocalProtocolError):
        console.send(b"late")
    assert server.receive_record(close) == [CloseReceived()]
    assert server.is_open  # like SecureChannel: the side that was closed may still answer
    with pytest.raises(RemoteProtocolError, match="after the peer's close"):
        server.receive_record(b"\x00\x00\x00\x00\x00x")  # data after the close


def test_a_malformed_record_makes_the_channel_unusable() -> None:
    _, server = _pair()
    with pytest.raises(RemoteProtocolError):
        server.receive_record(b"\x07\x00\x00\x00\x00")
    assert not server.is_open
    with pytest.raises(LocalProtocolError):
        server.receive_record(b"\x00\x00\x00\x00\x00ok")


def test_only_a_pipe_link_makes_a_plain_channel_so_none_reaches_mpi() -> None:
    assert not hasattr(MpiLink, "plain_channel")
    makers = [path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py")
              if re.search(r"PlainChannel\(", path.read_text(encoding="utf-8"))]
    assert makers == ["transport/pipe.py"]


def test_the_shipped_shell_server_imports_no_cryptography_and_no_mpi() -> None:
    shipped = closure(["mpish.shell.remote"])
    assert "mpish.shell.server" in shipped and "mpish.transport.pipe" in shipped
    for name in ("mpish.wire.channel", "mpish.wire.record", "mpish.wire.noise", "mpish.transport.mpi",
                 "mpish.keys", "mpish.shell.console"):
        assert name not in shipped
