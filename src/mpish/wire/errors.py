"""The one error tree of mpish (STYLE.md "Errors").

Every failure a caller can meet is a subclass of :class:`MpishError`, split by
cause, as h11 splits Local/RemoteProtocolError and trio splits Closed/Broken:

    MpishError
      ProtocolError
        LocalProtocolError      you misused the API (sent before the handshake, ...)
        RemoteProtocolError     the peer, or whoever writes on the wire, broke the protocol
          TruncatedError        the stream ended before the authenticated close record
          ReplayError           a record counter was seen before or is too old
      AuthenticationError       one opaque error for every failed tag, key or signature
      TransportError
        TransportClosed         you closed it
        TransportBroken         something outside did (cause in __cause__)
          SshError ...          transport/ssh.py; its AuthenticationRefused (ssh's "Permission
                                denied") is an AuthenticationError too
      RemoteError               an exception raised on the other side, with its traceback
"""

from __future__ import annotations

from .text import escape


class MpishError(Exception):
    """Root of every error mpish raises on purpose."""


class ProtocolError(MpishError):
    """The protocol was broken; the channel that saw it is now unusable."""


class LocalProtocolError(ProtocolError):
    """This side used the API in a way the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The bytes that arrived do not follow the protocol (malformed, oversize, out of place)."""


class TruncatedError(RemoteProtocolError):
    """The stream ended before the peer's authenticated close record: data may be missing."""


class ReplayError(RemoteProtocolError):
    """A record whose counter was already accepted, or is older than the replay window."""


class AuthenticationError(MpishError):
    """Authentication failed: bad tag, wrong or unauthorized key, bad handshake binding.

    Deliberately opaque (like Fernet's InvalidToken): it never says which check failed
    beyond what the caller could know anyway.
    """


class TransportError(MpishError):
    """Moving bytes failed."""


class TransportClosed(TransportError):
    """The transport was closed by this side and cannot be used any more."""


class TransportBroken(TransportError):
    """The transport was broken from outside (peer died, pipe cut); the cause is chained."""


class RemoteError(MpishError):
    """An exception raised on the remote side.

    ``remote_type`` is the qualified name of the remote exception type and
    ``remote_traceback`` the formatted remote traceback text.
    """

    def __init__(self, message: str, *, remote_type: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        # the remote's words, shown escaped (text.py): they must not drive the terminal
        text = escape(super().__str__(), keep_newlines=True)
        if self.remote_traceback:
            remote = escape(self.remote_traceback.rstrip(), keep_newlines=True)
            return f"{text}\n--- remote traceback ---\n{remote}"
        return text
