"""Objects, calls and shells over SSH: the public entry point.

    from mpish.ssh import connect, Group

    with connect("node1", python="/opt/venv/bin/python") as remote:
        print(remote.call(sum, [1, 2, 3]))          # 6, computed on node1
        remote.run(MyWorker())                       # calls MyWorker().run() there
        remote.call_data("os.getloadavg")            # no pickle: msgpack data only

    with Group(["node1", "node2"], fanout=32) as group:
        for host, outcome in group.call(platform.node).items():
            print(host, outcome.value if outcome.ok else outcome.error)

:func:`connect` starts the mpish agent on the host through the system ``ssh`` (so
``~/.ssh/config``, agents, ProxyJump and ControlMaster work as set up), with
``BatchMode=yes``: it fails with a clear error rather than prompting. The agent's code is
sent over stdin to ``python3 -c`` (:mod:`mpish.calls.bootstrap`), so the host needs only
Python 3.10+, not mpish; ``bootstrap=False`` runs an installed ``python -m mpish.calls.agent``.

Security: functions, arguments and results travel with cloudpickle. That is safe here
because only the ssh-authenticated user can write to the agent's pipes, and that user can
run code on the host anyway. ``data_only=True`` / ``call_data`` send msgpack only; a
``data_only`` agent never unpickles.

Errors (all in :mod:`mpish.wire.errors`' tree): :class:`HostUnreachable`,
:class:`AuthenticationRefused`, :class:`RemotePythonMissing`, :class:`MpishMissing`,
:class:`AgentDied`, :class:`ConnectTimeout` and :class:`CallTimeout` (both also
``TimeoutError``) are :class:`~mpish.wire.errors.TransportBroken`;
:class:`ProtocolVersionMismatch` and :class:`ResultTooLarge` (a data-only result past
its bounds) are RemoteProtocolErrors; an exception raised by the
remote code is a :class:`~mpish.wire.errors.RemoteError`, also an instance of its
original type when that is one of the builtin exceptions of
:data:`mpish.calls.serialize.REBUILT_TYPES` (``except KeyError`` works; never
StopIteration, SystemExit or mpish's own errors).
"""

from __future__ import annotations

from mpish.calls.client import (
    AgentInfo,
    OutputCallback,
    ProtocolVersionMismatch,
    Remote,
    ResultTooLarge,
    connect,
)
from mpish.calls.errors import AgentDied, CallTimeout, ConnectTimeout, MpishMissing, SshTimeout
from mpish.calls.group import Group, HostResult
from mpish.transport.ssh import (
    AuthenticationRefused,
    HostUnreachable,
    RemotePythonMissing,
    SshError,
    SshFailed,
)
from mpish.wire.errors import RemoteError, TransportBroken, TransportClosed

__all__ = [
    "AgentDied",
    "AgentInfo",
    "AuthenticationRefused",
    "CallTimeout",
    "ConnectTimeout",
    "Group",
    "HostResult",
    "HostUnreachable",
    "MpishMissing",
    "OutputCallback",
    "ProtocolVersionMismatch",
    "Remote",
    "ResultTooLarge",
    "RemoteError",
    "RemotePythonMissing",
    "SshError",
    "SshFailed",
    "SshTimeout",
    "TransportBroken",
    "TransportClosed",
    "connect",
]
