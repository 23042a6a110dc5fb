"""Length-prefixed framing for byte streams (pipes, ssh), sans-I/O: the one frame cutter.

A frame is a 4-byte big-endian length followed by that many payload bytes. The
length is checked against ``max_frame`` as soon as its 4 bytes arrive, before any
buffer for the payload is reserved (THREAT-MODEL "Framing"), so a hostile or broken
peer cannot make the reader allocate more than ``max_frame`` + one read chunk.

Every byte stream of mpish is cut here: the shell's pipe links
(:mod:`mpish.transport.pipe`) and the calls agent's stream
(:mod:`mpish.transport.frames`). Both run only inside ssh, which already authenticates
and encrypts; the secure channel's records over MPI never use this module.

A stream may begin with bytes that are not mpish's: a host's login (a ``.bashrc`` that
echoes, a forced command's banner) writes to the same stdout before the remote side
starts. A decoder made with ``after=MARK`` sets aside everything before the first ``MARK``
(which the remote side writes first; :mod:`mpish.transport.ship`), at most
:data:`PREAMBLE_LIMIT` bytes, and hands it to ``on_preamble`` once the mark is found;
frames start right after it. No mark in the first :data:`PREAMBLE_LIMIT` bytes is a
corrupt stream, as an oversize length is. Those bytes travel inside ssh, as the frames do.

Large frames are not copied through the small-frame buffer: once the length of a frame
larger than :data:`DIRECT` is known, the decoder allocates its exact size and
:meth:`FrameDecoder.direct_view` tells the reader where to read the rest straight in
(``readv``), so bulk data is copied once, by the kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from .errors import LocalProtocolError, RemoteProtocolError

LENGTH = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
DIRECT = 64 * 1024  # a frame larger than this is filled in place (see the module doc)
PREAMBLE_LIMIT = 64 * 1024  # bytes a stream may carry before its start mark (module doc)
NO_START = f"no start of mpish in the first {PREAMBLE_LIMIT} bytes"  # how that refusal begins


def encode_frame(payload: bytes | bytearray | memoryview, *, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Return the frame for ``payload``; refuse one the peer would reject."""
    return frame_header(len(payload), max_frame) + bytes(payload)


def frame_header(size: int, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """The 4 bytes that precede a payload of ``size`` bytes (sent with writev, no copy)."""
    if size > max_frame:
        raise LocalProtocolError(f"frame of {size} bytes exceeds the maximum of {max_frame}")
    return LENGTH.pack(size)


class FrameDecoder:
    """Cut a byte stream, in chunks of any size, into frames."""

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME, after: bytes = b"",
                 on_preamble: Callable[[bytes], None] | None = None) -> None:
        self.max_frame = max_frame
        self._mark = after  # frames begin after this (b"": at once); cleared once found
        self._on_preamble = on_preamble
        self.skipped = 0  # bytes read before the frames: the preamble and the mark
        self._buffer = bytearray()
        self._pos = 0  # first byte of _buffer not yet cut
        self._large: bytearray | None = None  # a large frame being filled in place
        self._filled = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the stream."""
        large = self._large
        if large is not None and self._filled < len(large):
            view = memoryview(data).cast("B")
            take = min(len(view), len(large) - self._filled)
            large[self._filled : self._filled + take] = view[:take]
            self._filled += take
            data = view[take:]
        if data:
            self._buffer += data

    def direct_view(self) -> memoryview | None:
        """Where the rest of a large frame may be read straight in, or None (then feed)."""
        if self._large is None or self._filled == len(self._large):
            return None
        return memoryview(self._large)[self._filled :]

    def direct_filled(self, count: int) -> None:
        """``count`` bytes were read into :meth:`direct_view`."""
        self._filled += count

    def __iter__(self) -> Iterator[bytes | bytearray]:
        return self

    def __next__(self) -> bytes | bytearray:
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def next_frame(self) -> bytes | bytearray | None:
        """Return the next complete frame, or None until more bytes arrive."""
        if self._mark and not self._found_mark():
            return None
        large = self._large
        if large is not None:
            if self._filled < len(large):
                return None
            self._large = None
            return large
        available = len(self._buffer) - self._pos
        if available < LENGTH.size:
            self._compact()
            return None
        (size,) = LENGTH.unpack_from(self._buffer, self._pos)
        if size > self.max_frame:
            raise RemoteProtocolError(
                f"frame length {size} exceeds the maximum of {self.max_frame}; "
                "the stream is corrupt or the peer is not mpish"
            )
        start = self._pos + LENGTH.size
        if available - LENGTH.size >= size:
            self._pos = start + size
            frame = bytes(self._buffer[start : self._pos])
            self._compact()
            return frame
        if size > DIRECT:  # allocate the frame once (size was bounded above), fill in place
            self._large = bytearray(size)
            self._filled = len(self._buffer) - start
            self._large[: self._filled] = self._buffer[start:]
            self._buffer.clear()
            self._pos = 0
        return None

    def _found_mark(self) -> bool:
        """Set aside what precedes the start mark; False while it has not arrived."""
        at = self._buffer.find(self._mark)
        if at > PREAMBLE_LIMIT or (at < 0 and len(self._buffer) > PREAMBLE_LIMIT + len(self._mark)):
            raise RemoteProtocolError(f"{NO_START}; the stream is corrupt or the peer is not mpish")
        if at < 0:
            return False
        preamble = bytes(self._buffer[:at])
        self.skipped = at + len(self._mark)
        del self._buffer[: self.skipped]
        self._mark = b""
        if preamble and self._on_preamble is not None:
            self._on_preamble(preamble)
        return True

    @property
    def started(self) -> bool:
        """The start mark was found (or none was awaited)."""
        return not self._mark

    def _compact(self) -> None:
        if self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        elif self._pos > DIRECT:
            del self._buffer[: self._pos]
            self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer) - self._pos + (self._filled if self._large is not None else 0)

    def at_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the stream to end)."""
        return self.buffered == 0

    def peek(self, limit: int = 200) -> bytes:
        """The first bytes not yet cut (to show what a peer that is not mpish sent)."""
        return bytes(self._buffer[self._pos : self._pos + limit])
