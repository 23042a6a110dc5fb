"""A command's stdin on a server: the console's bytes fed to it through a private FIFO.

Theory of operation
-------------------
bash is started once, so a pipe made for one command cannot be handed to it; instead
the server makes a FIFO in its private state directory (0700) and the command's line
reads it (``{ ...; } < FIFO``, see :func:`mpish.shell.server.bash.command_line`). Opening a
FIFO for reading blocks until it has a writer, and opening it for writing without
``O_NONBLOCK`` blocks until it has a reader: the server opens a read end first (it
keeps the FIFO open), then the write end, both non-blocking, so bash's open never
blocks. Once bash has opened its end it says so on the status pipe (``stdin
<marker>``); only then are the server's read end and the FIFO's name dropped, and only
then may EOF close the write end (closing it earlier would leave bash's open waiting
for a writer forever).

The console sends :class:`~mpish.shell.protocol.Input` chunks within a window of
credit; a chunk is credited back once it is written into the FIFO (or dropped, when
the command no longer reads: ``EPIPE``), so at most ``WINDOW`` bytes wait here.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections import deque


class StdinFeed:
    """The write side of one command's stdin FIFO."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path, 0o600)
        self.path = path
        self.reader = -1
        self.fd = -1
        try:
            self.reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            self.fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            self.close()
            raise
        self.pending: deque[memoryview] = deque()
        self.opened = False  # bash has opened its end
        self.eof = False  # the console sent the end of its stdin
        self.broken = False  # nobody reads any more: later bytes are dropped

    def push(self, data: bytes) -> int:
        """Queue ``data``; bytes that may be credited back at once (dropped ones)."""
        if self.broken or self.fd < 0:
            return len(data)
        if data:
            self.pending.append(memoryview(data))
        return 0

    def end(self) -> None:
        self.eof = True
        self._close_if_done()

    def bash_opened(self) -> None:
        self.opened = True
        self._close_reader()
        self._close_if_done()

    def flush(self) -> int:
        """Write what the FIFO takes now; bytes done with (written or dropped)."""
        done = 0
        while self.pending and self.fd >= 0:
            chunk = self.pending[0]
            try:
                count = os.write(self.fd, chunk)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.EPIPE:
                    raise
                self.broken = True
                done += sum(len(c) for c in self.pending)
                self.pending.clear()
                self._close_writer()
                break
            done += count
            if count == len(chunk):
                self.pending.popleft()
            else:
                self.pending[0] = chunk[count:]
        self._close_if_done()
        return done

    @property
    def wants_write(self) -> bool:
        return bool(self.pending) and self.fd >= 0

    def _close_if_done(self) -> None:
        if self.eof and self.opened and not self.pending:
            self._close_writer()

    def _close_reader(self) -> None:
        if self.reader >= 0:
            with contextlib.suppress(OSError):
                os.close(self.reader)
            self.reader = -1
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _close_writer(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.pending.clear()
        self._close_writer()
        self._close_reader()
