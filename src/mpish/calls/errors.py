"""The calls agent's own failures over ssh (the transport's are in :mod:`mpish.transport.ssh`)."""

from __future__ import annotations

from mpish.transport.ssh import RemoteEnded, RemoteStartFailed, SshError

__all__ = ["AgentDied", "CallTimeout", "ConnectTimeout", "MpishMissing", "SshTimeout"]


class MpishMissing(RemoteStartFailed):
    """The remote Python cannot run the agent (too old, or mpish missing without bootstrap)."""


class AgentDied(RemoteEnded):
    """The remote agent, or the ssh connection, ended while it was in use."""


class SshTimeout(SshError, TimeoutError):
    """A deadline passed; the connection was closed because its state is unknown."""


class ConnectTimeout(SshTimeout):
    """No hello from the agent within the connect timeout."""


class CallTimeout(SshTimeout):
    """A call did not finish within its timeout."""
