"""Frames on two file descriptors, waited for with deadlines: the calls agent's stream.

:class:`FrameStream` does blocking-style framed I/O (the calls client on ssh's pipes,
the agent on its own stdin/stdout); the frames are cut by
:class:`~mpish.wire.framing.FrameDecoder`, the one frame cutter (the shell's pipe links
use it too). A large frame (a 4 MiB body chunk) is read straight into one buffer of its
exact size (``readv`` into the decoder's :meth:`~mpish.wire.framing.FrameDecoder.direct_view`),
and sent with ``writev`` from the caller's buffers, so bulk data is not copied through
an intermediate buffer on either side.

Every wait takes a deadline (``None``: wait for the peer, which ends in EOF when ssh or
the agent dies, so a dead process is always noticed).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
import os
import select
import threading
import time
from collections.abc import Callable, Sequence

from mpish.wire.framing import FrameDecoder, frame_header

READ_SIZE = 256 * 1024  # one read() into the small-frame buffer
PIPE_SIZE = 1024 * 1024  # asked of the kernel for our pipes (fewer wakeups on bulk data)
F_SETPIPE_SZ = 1031  # Linux fcntl; ignored elsewhere


class Expired(Exception):
    """A deadline passed in FrameStream."""


class EndOfStream(Exception):
    """FrameStream: the peer closed its end of the pipe (EOF, or a broken pipe)."""


def grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (fewer wakeups on bulk data); harmless if refused."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


class FrameStream:
    """Length-prefixed frames on a readable and a writable file descriptor.

    Blocking or non-blocking descriptors both work: a non-blocking one is waited on
    with ``poll`` until the deadline (``time.monotonic()`` value, or None for ever).
    ``send`` may be called from several threads; ``receive`` from one at a time.
    """

    def __init__(
        self, read_fd: int, write_fd: int, *, max_frame: int, mid_frame: mmap.mmap | None = None,
        after: bytes = b"", on_preamble: Callable[[bytes], None] | None = None,
    ) -> None:
        """``after``, ``on_preamble``: frames start after that mark; what precedes it goes to
        ``on_preamble`` (:class:`~mpish.wire.framing.FrameDecoder`: a host's login output)."""
        self.read_fd = read_fd
        # A byte that is 1 while a frame is being written: shared with a process that outlives
        # this one (calls/front.py), it tells whether the stream was cut in the middle of a frame.
        self._mid_frame = mid_frame
        self.write_fd = write_fd
        self.max_frame = max_frame
        self._frames = FrameDecoder(max_frame=max_frame, after=after, on_preamble=on_preamble)
        self._scratch = memoryview(bytearray(READ_SIZE))  # reused by every small read
        self._send_lock = threading.Lock()
        self.received_any = False
        self._read_poll = select.poll()
        self._read_poll.register(read_fd, select.POLLIN)
        self._write_poll = select.poll()
        self._write_poll.register(write_fd, select.POLLOUT)
        # A non-blocking reader waits before reading an empty buffer: a reply is never there
        # yet right after a request, so trying the read first would only fail (EAGAIN).
        self._wait_first = not os.get_blocking(read_fd)

    # -- sending

    def send(self, parts: Sequence[bytes | bytearray | memoryview], deadline: float | None = None) -> None:
        """Write one frame whose payload is the concatenation of ``parts``."""
        views = [memoryview(p).cast("B") for p in parts]
        header = frame_header(sum(len(v) for v in views), self.max_frame)
        self._write_all([memoryview(header), *[v for v in views if len(v)]], deadline)

    def send_raw(self, data: bytes, deadline: float | None = None) -> None:
        """Write bytes with no frame header (the bootstrap's code, read by length)."""
        self._write_all([memoryview(data)], deadline)

    def _write_all(self, pending: list[memoryview], deadline: float | None) -> None:
        with self._send_lock:
            if self._mid_frame is not None:
                self._mid_frame[0] = 1
            while pending:
                try:
                    written = os.writev(self.write_fd, pending)
                except BlockingIOError:
                    self._wait(deadline, writable=True)
                    continue
                except (BrokenPipeError, ConnectionResetError) as exc:
                    raise EndOfStream from exc
                while written:
                    if written >= len(pending[0]):
                        written -= len(pending[0])
                        pending.pop(0)
                    else:
                        pending[0] = pending[0][written:]
                        written = 0
            if self._mid_frame is not None:
                self._mid_frame[0] = 0

    # -- receiving

    def receive(self, deadline: float | None = None) -> bytes | bytearray:
        """Read one frame's payload; RemoteProtocolError on an oversize length."""
        while True:
            frame = self._frames.next_frame()
            if frame is not None:
                return frame
            direct = self._frames.direct_view()
            if direct is not None:
                self._frames.direct_filled(self._readinto(direct, deadline))
                continue
            if self._wait_first and not self._frames.buffered:
                self._wait(deadline, writable=False)
            count = self._readinto(self._scratch, deadline)
            self._frames.feed(self._scratch[:count])

    @property
    def started(self) -> bool:
        """The start mark was read (or none was awaited): what follows are frames."""
        return self._frames.started

    def raw_prefix(self, limit: int = 200) -> bytes:
        """The first bytes not yet cut (to show what a peer that is not mpish sent)."""
        return self._frames.peek(limit)

    def _readinto(self, view: memoryview, deadline: float | None) -> int:
        while True:
            try:
                n = os.readv(self.read_fd, [view])
            except BlockingIOError:
                self._wait(deadline, writable=False)
                continue
            except ConnectionResetError as exc:
                raise EndOfStream from exc
            if n == 0:
                raise EndOfStream
            self.received_any = True
            return n

    def _wait(self, deadline: float | None, *, writable: bool) -> None:
        """poll() (not select: descriptors above 1024 are common with many hosts)."""
        poller = self._write_poll if writable else self._read_poll
        timeout = None if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))
        if not poller.poll(timeout) and deadline is not None and time.monotonic() >= deadline:
            raise Expired
