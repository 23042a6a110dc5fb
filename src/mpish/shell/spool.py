"""A command's stdin, given to every target from its own start (clush's stdin broadcast).

``-c`` broadcasts the console's stdin to every target's command. Under ``-f`` the targets
do not all run at once: a host connected in its turn must still get the stream from its
first byte. So what is read from stdin is kept in a *spool*, an unlinked temporary file
(a regular file given as stdin is its own spool: read in place), and each target has its
own offset into it: a target that starts late replays the spool, then follows the stream.

Memory stays bounded (the spool is on disk; a chunk at a time is in memory), and so does the
disk: what every target that still reads (running, or yet to start) was sent is given back
to the file system once it is :data:`TRIM` bytes or more (a hole punched in the file,
``fallocate``: nothing is copied, offsets stay), so ``tar c data | mpish ... -c 'tar x'``
with every host running keeps only the slowest host's lag, not the tar stream (a clush
user's review: 463 MB of /tmp for a 1.5 GB stream, and a traceback when it filled). Under
``-f`` with hosts yet to start it keeps everything: they need it from the first byte; so
does a file system that cannot punch holes. A spool that cannot be written (a full disk)
ends every command's stdin there, said in one line. stdin is
read only when some running target has caught up with the spool and has credit for more:
the stream is read as fast as the fastest reader takes it, never ahead of every reader (an
endless ``yes |`` fills nothing while no command reads). A pipe that never closes (ssh
without ``-n`` in a script) holds nothing back: a command that does not read its stdin ends
without it, and its host is released as any other.
"""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Collection
from typing import IO

TRIM = 32 << 20  # bytes every reader has been sent before they are given back (module doc)
_PUNCH_HOLE = 0x01 | 0x02  # fallocate(2): FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE


class StdinSpool:
    """stdin (``fd``) as seen by each target: :meth:`next_chunk` per target, :meth:`pump` to read on."""

    def __init__(self, fd: int, chunk: int) -> None:
        self.fd = fd
        self.chunk = chunk
        self.error = ""  # why reading stdin stopped early, in words (said once by the caller)
        self.offsets: dict[int, int] = {}  # target -> bytes of the spool sent to it
        self.ended: set[int] = set()  # targets that were sent the end
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):  # read in place: the file is the spool
            self._base = os.lseek(fd, 0, os.SEEK_CUR)
            self._spool: int | None = fd
            self.size, self.eof, self._own = max(0, info.st_size - self._base), True, False
        else:
            self._base, self._spool, self.size, self.eof, self._own = 0, None, 0, False, True
        self._given_back = 0  # the spool's bytes before this are a hole (sent to every reader)

    def caught_up(self, target: int) -> bool:
        """True if ``target`` was sent everything read so far and more may come."""
        return not self.eof and self.offsets.get(target, 0) >= self.size

    def pump(self, readers: Collection[int] | None = None) -> bool:
        """Read one chunk that stdin has ready into the spool; True if stdin moved (data or its
        end). ``readers``: the targets that still read it (the others' offsets hold nothing
        back); None: keep everything."""
        if self.eof or not select.select([self.fd], [], [], 0)[0]:
            return False
        try:
            data = os.read(self.fd, self.chunk)
        except OSError as exc:
            self.error = f"cannot read stdin: {exc.strerror or exc}; the command's stdin ends here"
            data = b""
        if not data:
            self.eof = True
            return True
        try:
            self._trim(readers)
            if self._spool is None:
                self._spool = _new_spool()
            os.pwrite(self._spool, data, self.size)
        except OSError as exc:
            self.error = (f"cannot keep stdin for the commands ({exc.strerror or exc}, in the temporary "
                          "directory: TMPDIR); their stdin ends here")
            self.eof = True
            return True
        self.size += len(data)
        return True

    def tell(self, err: IO[str]) -> None:
        """Say on ``err`` why reading stopped early, once."""
        if self.error:
            print(f"mpish: {self.error}", file=err)
            self.error = ""

    def _trim(self, readers: Collection[int] | None) -> None:
        """Give back what every reader was sent, once it is :data:`TRIM` bytes or more (module doc)."""
        if readers is None or not self._own or self._spool is None or self._given_back < 0:
            return
        low = min((self.offsets.get(reader, 0) for reader in readers), default=self.size)
        if low - self._given_back >= TRIM:
            punched = _punch_hole(self._spool, self._given_back, low - self._given_back)
            self._given_back = low if punched else -1  # -1: this file system keeps it all

    def next_chunk(self, target: int, room: int) -> tuple[bytes, bool] | None:
        """What ``target`` gets next, at most ``room`` bytes: (data, False), or (b"", True)
        for the end; None if it has nothing to get now (caught up, or no room)."""
        if target in self.ended:
            return None
        offset = self.offsets.get(target, 0)
        if offset >= self.size:
            if not self.eof:
                return None
            self.ended.add(target)
            return b"", True
        size = min(self.chunk, room, self.size - offset)
        if size <= 0 or self._spool is None:
            return None
        data = os.pread(self._spool, size, self._base + offset)
        if not data:  # a regular file that shrank meanwhile: its end
            self.size = offset
            return self.next_chunk(target, room)
        self.offsets[target] = offset + len(data)
        return data, False

    def close(self) -> None:
        if self._own and self._spool is not None:
            os.close(self._spool)
        self._spool = None


def _new_spool() -> int:
    """An unlinked temporary file (nothing is left behind), its descriptor."""
    import tempfile  # only for a pipe's data (a command that prints nothing loads none)

    with tempfile.TemporaryFile(prefix="mpish-stdin-") as spool:
        return os.dup(spool.fileno())


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """Give ``length`` bytes at ``offset`` of the file back to the file system (Linux's
    fallocate(2), through libc: os has no call for it); False where it cannot."""
    try:
        import ctypes

        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return False
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    return bool(fallocate(fd, _PUNCH_HOLE, offset, length) == 0)

