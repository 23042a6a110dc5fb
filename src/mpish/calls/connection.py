"""One agent's connection: the ssh process, its frame stream, and errors a user can act on.

Frames go through :class:`~mpish.transport.frames.FrameStream` on the pipes of
:class:`~mpish.transport.ssh.SshProcess`; a deadline that passes becomes
:class:`~.errors.ConnectTimeout` or :class:`~.errors.CallTimeout` (the connection is
closed: its state is unknown), the end of the pipes becomes the classified reason
(:meth:`~mpish.transport.ssh.SshProcess.failure`: host unreachable, authentication
refused, :class:`~.errors.MpishMissing`, :class:`~.errors.AgentDied`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

from mpish.report import Diagnostics
from mpish.transport.frames import EndOfStream, Expired, FrameStream
from mpish.transport.ssh import SshError, SshProcess
from mpish.wire.text import escape

from .errors import AgentDied, CallTimeout, ConnectTimeout, MpishMissing, SshTimeout

log = Diagnostics(__name__)


class AgentConnection:
    """A running ``ssh HOST <agent>`` with framed stdin/stdout."""

    def __init__(self, host: str, argv: Sequence[str], *, max_frame: int, after: bytes = b"") -> None:
        """``after``: the shipped stub's start mark; what the host's login printed before it
        (a ``.bashrc`` that echoes) is logged, not read as a frame."""
        self.host = host
        self.process = SshProcess(host, argv, what="the mpish agent", ended=AgentDied,
                                  start_failed=MpishMissing)
        self.frames = FrameStream(self.process.read_fd, self.process.write_fd, max_frame=max_frame,
                                  after=after, on_preamble=self._login_output)

    def _login_output(self, data: bytes) -> None:
        log.info("%s: its login printed %d bytes to stdout before the agent started: %s",
                 self.host, len(data), escape(data[:200]))

    @property
    def closed(self) -> bool:
        return self.process.closed

    @property
    def greeted(self) -> bool:
        return self.process.greeted

    @greeted.setter
    def greeted(self, value: bool) -> None:
        self.process.greeted = value

    def send(self, parts: Sequence[bytes | bytearray | memoryview], deadline: float | None,
             timeout_error: type[SshTimeout] = CallTimeout) -> None:
        try:
            self.frames.send(parts, deadline)
        except Expired:
            raise self._timeout(timeout_error) from None
        except EndOfStream:
            raise self.failure() from None

    def send_raw(self, data: bytes, deadline: float | None) -> None:
        """Unframed bytes to the remote command's stdin (the bootstrap's agent code)."""
        try:
            self.frames.send_raw(data, deadline)
        except Expired:
            raise self._timeout(ConnectTimeout) from None
        except EndOfStream:
            raise self.failure() from None

    def receive(
        self, deadline: float | None, timeout_error: type[SshTimeout] = CallTimeout
    ) -> bytes | bytearray:
        try:
            return self.frames.receive(deadline)
        except Expired:
            raise self._timeout(timeout_error) from None
        except EndOfStream:
            raise self.failure() from None

    def failure(self, wait: float = 5.0) -> SshError:
        return self.process.failure(wait)

    def close(self, wait: float = 5.0) -> None:
        self.process.close(wait)

    def _timeout(self, kind: type[SshTimeout]) -> SshTimeout:
        self.close(wait=0.5)
        what = ("the agent's hello" if kind is ConnectTimeout
                else "the call to finish (the agent ends it, and the processes it started)")
        return kind(
            f"{self.host}: timed out waiting for {what}; the connection was closed "
            "(its state is unknown). Connect again to go on.",
            host=self.host,
            stderr=self.process.stderr_text(),
        )
