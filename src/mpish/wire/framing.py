"""Length-prefixed framing for byte streams (pipes, ssh), sans-I/O.

A frame is a 4-byte big-endian length followed by that many payload bytes. The
length is checked against ``max_frame`` as soon as its 4 bytes arrive, before any
buffer for the payload is reserved (THREAT-MODEL "Framing"), so a hostile or broken
peer cannot make the reader allocate more than ``max_frame`` + one read chunk.

The secure channel's records carry their own length in an authenticated header and
do not use this module; it serves transports that are already authenticated (the
pipes of an ssh session) and tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .errors import LocalProtocolError, RemoteProtocolError

LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


def encode_frame(payload: bytes | bytearray | memoryview, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the frame for ``payload``; refuse one the peer would reject."""
    size = len(payload)
    if size > max_frame:
        raise LocalProtocolError(f"frame of {size} bytes exceeds the maximum of {max_frame}")
    return LENGTH.pack(size) + bytes(payload)


class FrameDecoder:
    """Cut a byte stream, in chunks of any size, into frames."""

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # payload length of the frame being read, once known

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the stream."""
        self._buffer += data

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> bytes | None:
        """Return the next complete frame, or None until more bytes arrive."""
        if self._need is None:
            if len(self._buffer) < LENGTH.size:
                return None
            (size,) = LENGTH.unpack_from(self._buffer)
            if size > self.max_frame:
                raise RemoteProtocolError(
                    f"frame length {size} exceeds the maximum of {self.max_frame}; "
                    "the stream is corrupt or the peer is not mpish"
                )
            self._need = size
        end = LENGTH.size + self._need
        if len(self._buffer) < end:
            return None
        frame = bytes(self._buffer[LENGTH.size : end])
        del self._buffer[:end]
        self._need = None
        return frame

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer)

    def at_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the stream to end)."""
        return not self._buffer
