"""The messages of the remote-call protocol, on the msgpack :class:`~mpish.wire.codec.Codec`.

Every frame on the ssh pipes carries exactly one of these messages. A call or a result
body (a pickle stream, or a msgpack document in data-only mode) travels either inline in
its :class:`Call` / :class:`Result` (when it fits in one chunk) or as the chunk stream
``Chunk* End`` that follows it, so that no frame is ever larger than ``CHUNK_SIZE`` plus a
little framing, whatever the size of the object.

Conversation (client = the side that ran ``ssh``, agent = ``python -m mpish.calls.agent``)::

    agent  -> client   Hello                                   once, first frame
    client -> agent    Call [Chunk* End]                       one call at a time
                       (a Chunk frame is 0x00 + raw bytes; an inline pickle Call or
                        Result is 0x01/0x02 + 8-byte call id + the pickle bytes;
                        every other frame is msgpack)
    agent  -> client   Output*  then  Result [Chunk* End]  |  Failure
                       (an End with aborted=True ends a body the sender could not
                        finish; a Failure follows it)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Annotated

from mpish.wire.codec import Codec, MaxLen
from mpish.wire.errors import RemoteProtocolError

PROTOCOL_VERSION = 3  # 2: binary inline pickle Call/Result frames; 3: an OSError's fields in Failure
CHUNK_SIZE = 4 * 1024 * 1024  # largest body piece per frame
MAX_FRAME = CHUNK_SIZE + 64 * 1024  # a chunk plus its message envelope
MAX_TEXT = 1024 * 1024  # tracebacks and messages are cut to this many characters

ENCODING_PICKLE = "pickle"  # body = cloudpickle stream of (function, args, kwargs) / the result
ENCODING_MSGPACK = "msgpack"  # body = msgpack [args, kwargs] / the result; never unpickled

CODEC = Codec("mpish.calls", max_bytes=CHUNK_SIZE, max_items=64)

Name = Annotated[str, MaxLen(1024)]
Text = Annotated[str, MaxLen(MAX_TEXT)]


@CODEC.message(1)
@dataclass(frozen=True, slots=True)
class Hello:
    """The agent's first frame: who it is, so the client can check and report."""

    protocol: int
    mpish_version: Name
    python: Name
    pid: int
    hostname: Name
    data_only: bool


@CODEC.message(2)
@dataclass(frozen=True, slots=True)
class Call:
    """Run a function. ``target`` is a dotted name (msgpack) or empty (pickle body)."""

    call_id: int
    encoding: Name
    target: Name
    body: bytes | None  # None: the body follows as Chunk* End


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a streamed body. Not a msgpack message: see :func:`chunk_frame`."""

    data: bytes | bytearray | memoryview


@CODEC.message(4)
@dataclass(frozen=True, slots=True)
class End:
    """The end of a streamed body; ``aborted`` if the sender gave up half way."""

    aborted: bool
    reason: Text


@CODEC.message(5)
@dataclass(frozen=True, slots=True)
class Output:
    """Bytes the remote code wrote to its stdout or stderr (file descriptors 1 and 2)."""

    stream: Name
    data: bytes


@CODEC.message(6)
@dataclass(frozen=True, slots=True)
class Result:
    """The value a call returned."""

    call_id: int
    encoding: Name
    body: bytes | None  # None: the body follows as Chunk* End


@CODEC.message(7)
@dataclass(frozen=True, slots=True)
class Failure:
    """The exception a call raised: its qualified type name, message and traceback; for an
    OSError, its errno, strerror and file names (``except OSError as e: e.errno == ENOENT``)."""

    call_id: int
    type_name: Name
    message: Text
    traceback: Text
    errno: int | None = None
    strerror: Text | None = None
    filename: Text | None = None
    filename2: Text | None = None


Message = Hello | Call | Chunk | End | Output | Result | Failure

RAW_CHUNK = b"\x00"  # first byte of a body-bytes frame; a msgpack array never starts with it
FAST_CALL = b"\x01"  # + call id + pickle bytes: a Call(id, "pickle", "", body) with an inline body
FAST_RESULT = b"\x02"  # + call id + pickle bytes: a Result(id, "pickle", body) with an inline body
CALL_ID = struct.Struct(">Q")


def chunk_frame(data: bytes | bytearray | memoryview) -> list[bytes | bytearray | memoryview]:
    """The frame parts of a Chunk: the marker byte, then the bytes as they are.

    Body bytes skip msgpack so that a 4 MiB piece is neither packed nor unpacked (one copy
    less on each side); the frame length still bounds it (``MAX_FRAME``).
    """
    return [RAW_CHUNK, data]


def encode(message: Message) -> list[bytes | bytearray | memoryview]:
    """The frame parts of any message.

    The hot path of a small call (an inline pickle Call, an inline pickle Result) is a
    fixed binary header instead of msgpack: a marker byte and the call id; the body bytes
    follow as they are. That saves a msgpack pack/unpack and the codec's field checks on
    both sides of every call; the header has nothing to check beyond its length.
    """
    if isinstance(message, Chunk):
        return chunk_frame(message.data)
    if (
        isinstance(message, (Call, Result))
        and message.encoding == ENCODING_PICKLE
        and message.body is not None
        and 0 <= message.call_id < 1 << 64
    ):
        if isinstance(message, Result):
            return [FAST_RESULT + CALL_ID.pack(message.call_id), message.body]
        if not message.target:
            return [FAST_CALL + CALL_ID.pack(message.call_id), message.body]
    return [CODEC.encode(message)]


def decode(frame: bytes | bytearray) -> Message:
    """The message in one frame: a raw Chunk, an inline pickle Call/Result, or a checked
    msgpack message."""
    kind = frame[:1]
    if kind == RAW_CHUNK:
        return Chunk(memoryview(frame)[1:])
    if kind in (FAST_CALL, FAST_RESULT):
        if len(frame) < 1 + CALL_ID.size:
            raise RemoteProtocolError(f"short inline {'call' if kind == FAST_CALL else 'result'} frame")
        (call_id,) = CALL_ID.unpack_from(frame, 1)
        body = bytes(frame[1 + CALL_ID.size :])
        if kind == FAST_CALL:
            return Call(call_id, ENCODING_PICKLE, "", body)
        return Result(call_id, ENCODING_PICKLE, body)
    message: Message = CODEC.decode(frame)
    return message
