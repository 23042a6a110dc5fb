"""Frames over the pipes of the system ``ssh`` binary.

Theory of operation
-------------------
:func:`start` runs ``ssh [user options] -T -o BatchMode=yes -- HOST COMMAND`` as a
subprocess with three pipes. Going through the user's own ``ssh`` keeps everything the
user set up (``~/.ssh/config``, agents, ``ProxyJump``, ``ControlMaster``, certificates);
``BatchMode=yes`` makes it fail instead of prompting, so nothing can hang on a password
or host-key question. ``stdin``/``stdout`` carry length-prefixed frames (the format of
:mod:`mpish.wire.framing`: 4-byte big-endian length, checked against a maximum before any
buffer is reserved); ``stderr`` is collected by a thread (the last 64 KiB) for error
messages.

:class:`FrameStream` does the framed I/O on a pair of file descriptors and is used on both
ends (the client on ssh's pipes, the agent on its own stdin/stdout). Frames of a few bytes
are cut out of a read buffer; a large frame (a 4 MiB body chunk) is read straight into one
buffer of its exact size with ``readv``, and sent with ``writev`` from the caller's buffers,
so bulk data is not copied through an intermediate buffer on either side.

Every wait takes a deadline (``None``: wait for the peer, which ends in EOF when ssh or
the agent dies, so a dead process is always noticed). When the pipes end, :meth:`SshProcess.
failure` reads ssh's exit status and stderr and turns them into one of the error classes
below, each saying what happened and what to do.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import math
import os
import select
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence

from mpish.wire.errors import LocalProtocolError, RemoteProtocolError, TransportBroken
from mpish.wire.framing import LENGTH
from mpish.wire.text import escape

__all__ = [
    "AgentDied",
    "AuthenticationRefused",
    "CallTimeout",
    "ConnectTimeout",
    "EndOfStream",
    "FrameStream",
    "HostUnreachable",
    "MpishMissing",
    "RemotePythonMissing",
    "SshError",
    "SshFailed",
    "SshProcess",
    "SshTimeout",
    "ssh_argv",
]

READ_SIZE = 256 * 1024  # one read() into the small-frame buffer
PIPE_SIZE = 1024 * 1024  # asked of the kernel for our pipes (fewer wakeups on bulk data)
F_SETPIPE_SZ = 1031  # Linux fcntl; ignored elsewhere
STDERR_KEEP = 64 * 1024
BOOTSTRAP_MARK = "mpish-bootstrap:"  # starts the bootstrap's own error lines on stderr


# --- errors a user meets --------------------------------------------------------------


class SshError(TransportBroken):
    """ssh or the remote agent failed; ``host``, ``exit_status`` and ``stderr`` say how."""

    def __init__(
        self, message: str, *, host: str = "", exit_status: int | None = None, stderr: str = ""
    ) -> None:
        super().__init__(message)
        self.host = host
        self.exit_status = exit_status
        self.stderr = stderr


class HostUnreachable(SshError):
    """ssh could not reach the host (refused, no route, unknown name, timed out)."""


class AuthenticationRefused(SshError):
    """The host refused every key ssh offered (``Permission denied``)."""


class RemotePythonMissing(SshError):
    """The Python interpreter named by ``python=`` does not exist on the host (exit 127)."""


class MpishMissing(SshError):
    """The remote Python cannot import mpish (or one of its dependencies)."""


class AgentDied(SshError):
    """The remote agent, or the ssh connection, ended while it was in use."""


class SshFailed(SshError):
    """ssh or the agent failed before the handshake in a way not classified above."""


class SshTimeout(SshError, TimeoutError):
    """A deadline passed; the connection was closed because its state is unknown."""


class ConnectTimeout(SshTimeout):
    """No hello from the agent within the connect timeout."""


class CallTimeout(SshTimeout):
    """A call did not finish within its timeout."""


class _Expired(Exception):
    """Internal: a deadline passed in FrameStream."""


class EndOfStream(Exception):
    """FrameStream: the peer closed its end of the pipe (EOF, or a broken pipe)."""


# --- framed I/O on two file descriptors -----------------------------------------------


def grow_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (fewer wakeups on bulk data); harmless if refused."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)


class FrameStream:
    """Length-prefixed frames on a readable and a writable file descriptor.

    Blocking or non-blocking descriptors both work: a non-blocking one is waited on
    with ``select`` until the deadline (``time.monotonic()`` value, or None for ever).
    ``send`` may be called from several threads; ``receive`` from one at a time.
    """

    def __init__(self, read_fd: int, write_fd: int, *, max_frame: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._pos = 0
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
        size = sum(len(v) for v in views)
        if size > self.max_frame:
            raise LocalProtocolError(f"frame of {size} bytes exceeds the maximum of {self.max_frame}")
        self._write_all([memoryview(LENGTH.pack(size)), *[v for v in views if len(v)]], deadline)

    def send_raw(self, data: bytes, deadline: float | None = None) -> None:
        """Write bytes with no frame header (the agent bootstrap's code, read by length)."""
        self._write_all([memoryview(data)], deadline)

    def _write_all(self, pending: list[memoryview], deadline: float | None) -> None:
        with self._send_lock:
            while pending:
                try:
                    written = os.writev(self.write_fd, pending)
                except BlockingIOError:
                    self._wait(self.write_fd, deadline, writable=True)
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

    # -- receiving

    def receive(self, deadline: float | None = None) -> bytes | bytearray:
        """Read one frame's payload; raise RemoteProtocolError on an oversize length."""
        while len(self._buffer) - self._pos < LENGTH.size:
            self._fill(deadline)
        (size,) = LENGTH.unpack_from(self._buffer, self._pos)
        if size > self.max_frame:
            raise RemoteProtocolError(
                f"frame length {size} exceeds the maximum of {self.max_frame}; "
                "the stream is corrupt or the peer is not mpish"
            )
        start = self._pos + LENGTH.size
        have = len(self._buffer) - start
        if have >= size:
            frame = bytes(self._buffer[start : start + size])
            self._pos = start + size
            if self._pos == len(self._buffer):
                self._buffer.clear()
                self._pos = 0
            elif self._pos > READ_SIZE:
                del self._buffer[: self._pos]
                self._pos = 0
            return frame
        large = bytearray(size)  # size was checked against max_frame above
        large[:have] = self._buffer[start:]
        self._buffer.clear()
        self._pos = 0
        view = memoryview(large)
        got = have
        while got < size:
            got += self._readinto(view[got:], deadline)
        return large

    def raw_prefix(self, limit: int = 200) -> bytes:
        """The first unparsed bytes (to show what a non-mpish peer sent)."""
        return bytes(self._buffer[self._pos : self._pos + limit])

    def _fill(self, deadline: float | None) -> None:
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        if self._wait_first and not self._buffer:
            self._wait(self.read_fd, deadline, writable=False)
        n = self._readinto(self._scratch, deadline)
        self._buffer += self._scratch[:n]

    def _readinto(self, view: memoryview, deadline: float | None) -> int:
        while True:
            try:
                n = os.readv(self.read_fd, [view])
            except BlockingIOError:
                self._wait(self.read_fd, deadline, writable=False)
                continue
            except ConnectionResetError as exc:
                raise EndOfStream from exc
            if n == 0:
                raise EndOfStream
            self.received_any = True
            return n

    def _wait(self, fd: int, deadline: float | None, *, writable: bool) -> None:
        """poll() (not select: descriptors above 1024 are common with many hosts)."""
        poller = self._write_poll if writable else self._read_poll
        timeout = None if deadline is None else max(0, math.ceil((deadline - time.monotonic()) * 1000))
        if not poller.poll(timeout) and deadline is not None and time.monotonic() >= deadline:
            raise _Expired


# --- the ssh process --------------------------------------------------------------------


def ssh_argv(
    host: str,
    command: Sequence[str],
    *,
    ssh: str = "ssh",
    options: Sequence[str] = (),
    batch_mode: bool = True,
    connect_timeout: float | None = None,
) -> list[str]:
    """The ssh command line: user options first (ssh keeps the first value it sees)."""
    argv = [ssh, *options, "-T"]
    if batch_mode:
        argv += ["-o", "BatchMode=yes"]
    if connect_timeout is not None:
        argv += ["-o", f"ConnectTimeout={max(1, round(connect_timeout))}"]
    # "--" ends the options: a host name can never be read as an option.
    return [*argv, "--", host, shlex.join(command)]


class SshProcess:
    """A running ``ssh HOST COMMAND`` with framed stdin/stdout and captured stderr."""

    def __init__(self, host: str, argv: Sequence[str], *, max_frame: int = 0) -> None:
        self.host = host
        self.argv = list(argv)
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise SshFailed(
                f"cannot run {self.argv[0]!r}: {exc.strerror}; install the OpenSSH client or pass ssh=",
                host=host,
            ) from exc
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout
        self._stderr = self.process.stderr
        for pipe in (self._stdin, self._stdout):
            grow_pipe(pipe.fileno())
            os.set_blocking(pipe.fileno(), False)
        self._stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_thread = threading.Thread(
            target=self._collect_stderr, name=f"mpish-ssh-stderr-{host}", daemon=True
        )
        self._stderr_thread.start()
        self.read_fd = self._stdout.fileno()  # ssh's stdout: what the remote side writes
        self.write_fd = self._stdin.fileno()
        self.frames = FrameStream(self.read_fd, self.write_fd, max_frame=max_frame)
        self.greeted = False  # set by the caller once the agent's hello arrived
        self.closed = False

    def _collect_stderr(self) -> None:
        fd = self._stderr.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            self._stderr_tail.append(data)
            self._stderr_size += len(data)
            while self._stderr_size > STDERR_KEEP and len(self._stderr_tail) > 1:
                self._stderr_size -= len(self._stderr_tail.popleft())

    def stderr_text(self) -> str:
        """The end of ssh's stderr (the remote's too), escaped: it goes into our messages."""
        return escape(b"".join(self._stderr_tail).replace(b"\r\n", b"\n").strip(), keep_newlines=True)

    # -- frames with error translation

    def send(
        self,
        parts: Sequence[bytes | bytearray | memoryview],
        deadline: float | None,
        timeout_error: type[SshTimeout] = CallTimeout,
    ) -> None:
        try:
            self.frames.send(parts, deadline)
        except _Expired:
            raise self._timeout(timeout_error) from None
        except EndOfStream:
            raise self.failure() from None

    def send_raw(self, data: bytes, deadline: float | None) -> None:
        """Unframed bytes to the remote command's stdin (the bootstrap's agent code)."""
        try:
            self.frames.send_raw(data, deadline)
        except _Expired:
            raise self._timeout(ConnectTimeout) from None
        except EndOfStream:
            raise self.failure() from None

    def receive(
        self, deadline: float | None, timeout_error: type[SshTimeout] = CallTimeout
    ) -> bytes | bytearray:
        try:
            return self.frames.receive(deadline)
        except _Expired:
            raise self._timeout(timeout_error) from None
        except EndOfStream:
            raise self.failure() from None

    def _timeout(self, kind: type[SshTimeout]) -> SshTimeout:
        self.close(wait=0.5)
        what = "the agent's hello" if kind is ConnectTimeout else "the call to finish"
        return kind(
            f"{self.host}: timed out waiting for {what}; the connection was closed "
            "(its state is unknown). Connect again to go on.",
            host=self.host,
            stderr=self.stderr_text(),
        )

    def failure(self, wait: float = 5.0) -> SshError:
        """The error that explains why the pipes ended (waits a bounded time for ssh)."""
        try:
            status: int | None = self.process.wait(wait)
        except subprocess.TimeoutExpired:
            status = None
        self._stderr_thread.join(1.0)
        return classify(self.host, status, self.stderr_text(), greeted=self.greeted)

    def close(self, wait: float = 5.0) -> None:
        """End ssh: close its stdin (the agent exits on EOF), then terminate, then kill."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr_thread.join(2.0)
        for pipe in (self._stdout, self._stderr):
            with contextlib.suppress(OSError):
                pipe.close()


def classify(host: str, status: int | None, stderr: str, *, greeted: bool) -> SshError:
    """Turn ssh's exit status and stderr into the error a user can act on."""
    detail = f"\n--- ssh stderr ---\n{stderr}" if stderr else ""

    def make(kind: type[SshError], text: str) -> SshError:
        return kind(text + detail, host=host, exit_status=status, stderr=stderr)

    lowered = stderr.lower()
    if greeted:
        how = "still running" if status is None else f"exit status {status}"
        return make(
            AgentDied,
            f"{host}: the mpish agent ended while in use ({how}); it was killed, "
            f"crashed, or the connection dropped. Connect again.",
        )
    if status == 255 and "permission denied" in lowered:
        return make(
            AuthenticationRefused,
            f"{host}: authentication refused: the host accepted none of the keys ssh offered. "
            f"Check `ssh {host} true` works without a prompt (ssh-copy-id, ssh-add, "
            f"IdentityFile in ~/.ssh/config).",
        )
    if status == 255 and any(
        s in lowered
        for s in (
            "connection refused",
            "could not resolve",
            "no route to host",
            "timed out",
            "network is unreachable",
            "name or service not known",
            "connection closed",
            "host is down",
            "connect to host",
        )
    ):
        return make(
            HostUnreachable,
            f"{host}: host unreachable: ssh could not connect. Check the name, that sshd runs "
            f"there and the network/ProxyJump path (`ssh {host} true`).",
        )
    if status == 127:
        return make(
            RemotePythonMissing,
            f"{host}: the remote Python was not found (exit 127). Pass python= with a "
            f"path that exists on {host} (e.g. python='/usr/bin/python3').",
        )
    if BOOTSTRAP_MARK in stderr:
        reason = next(line for line in stderr.splitlines() if BOOTSTRAP_MARK in line)
        return make(
            MpishMissing,
            f"{host}: the mpish agent could not start there ({reason.split(BOOTSTRAP_MARK, 1)[1].strip()}). "
            f"Point python= at a Python 3.10 or later, or install mpish there "
            f"(`ssh {host} python3 -m pip install --user mpish`).",
        )
    if "no module named" in lowered:
        return make(
            MpishMissing,
            f"{host}: mpish is not installed for the remote Python. Install it there: "
            f"`ssh {host} python3 -m pip install --user mpish` (or point python= at a "
            f"virtualenv that has it).",
        )
    if status == 255:
        return make(SshFailed, f"{host}: ssh failed (exit status 255).")
    how = "did not exit" if status is None else f"exit status {status}"
    return make(
        SshFailed,
        f"{host}: the remote side ended before the mpish handshake ({how}).",
    )
