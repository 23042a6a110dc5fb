"""The client side: a live agent on one host, and the calls made through it.

:func:`connect` starts ``python -m mpish.calls.agent`` through the system ``ssh``
(:mod:`mpish.transport.ssh`, :mod:`.connection`), waits for the agent's :class:`~.messages.Hello` and checks
its protocol version. :class:`Remote` then makes one call at a time (a lock serialises
callers): it sends a :class:`~.messages.Call` and reads frames until the
:class:`~.messages.Result` or :class:`~.messages.Failure`, handing every
:class:`~.messages.Output` frame to the output callback as soon as it arrives.

A timeout, an interrupt or a broken pipe in the middle of a call leaves the stream in an
unknown state, so the connection is closed and later calls raise
:class:`~mpish.wire.errors.TransportClosed`; connect again.
"""

from __future__ import annotations

import itertools
import platform
import shlex
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mpish.transport.ssh import SshError, ssh_argv
from mpish.wire.errors import (
    ProtocolError,
    RemoteProtocolError,
    TransportBroken,
    TransportClosed,
    TransportError,
)
from mpish.wire.text import escape

from . import bootstrap as _bootstrap
from .connection import AgentConnection
from .errors import CallTimeout, ConnectTimeout
from .messages import (
    ENCODING_MSGPACK,
    ENCODING_PICKLE,
    MAX_FRAME,
    PROTOCOL_VERSION,
    Call,
    Failure,
    Hello,
    Message,
    Output,
    Result,
    decode,
    encode,
)
from .serialize import (
    BodyAborted,
    BodyWriter,
    DataLimitExceeded,
    OsErrorFields,
    read_msgpack,
    read_pickle,
    remote_error,
    write_msgpack,
    write_pickle,
)

OutputCallback = Callable[[str, bytes], None]
"""``on_output(stream, data)``: ``stream`` is ``"stdout"`` or ``"stderr"``."""


class ProtocolVersionMismatch(RemoteProtocolError):
    """The remote mpish speaks another protocol version than this one."""


class ResultTooLarge(RemoteProtocolError):
    """A data-only result breaks the bounds of :func:`~.serialize.read_msgpack` (too large,
    too long, too deep, or expanding to too much memory); the connection is closed."""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What the agent said about itself in its hello."""

    host: str
    protocol: int
    mpish_version: str
    python: str
    pid: int
    hostname: str
    data_only: bool


def write_output(stream: str, data: bytes) -> None:
    """The default output callback: write to the local sys.stdout / sys.stderr."""
    target = sys.stderr if stream == "stderr" else sys.stdout
    binary = getattr(target, "buffer", None)
    if binary is not None:
        target.flush()
        binary.write(data)
        binary.flush()
    else:
        target.write(data.decode("utf-8", "replace"))
        target.flush()


class _Guarded:
    """An output callback whose exceptions are kept, not raised in the middle of a reply: the
    reply is read to its end (the connection stays usable), then the first one is raised."""

    __slots__ = ("callback", "error")

    def __init__(self, callback: OutputCallback) -> None:
        self.callback = callback
        self.error: Exception | None = None

    def __call__(self, stream: str, data: bytes) -> None:
        if self.error is None:
            try:
                self.callback(stream, data)
            except Exception as exc:  # a KeyboardInterrupt goes through: the call is abandoned
                self.error = exc

    def raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _os_error(failure: Failure) -> OsErrorFields:
    return failure.errno, failure.strerror, failure.filename, failure.filename2


def run_object(obj: Any) -> Any:
    """Call ``obj.run()`` (what :meth:`Remote.run` sends; imported by the agent)."""
    return obj.run()


class Remote:
    """A connected agent on one host. Use :func:`connect` to make one."""

    def __init__(
        self,
        host: str,
        process: AgentConnection,
        info: AgentInfo,
        *,
        on_output: OutputCallback | None = None,
        data_only: bool = False,
    ) -> None:
        self.host = host
        self.info = info
        self.data_only = data_only  # what the caller asked for, not what the agent says
        self.on_output: OutputCallback = on_output or write_output
        self._process = process
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._broken: BaseException | None = None

    # -- life cycle

    @property
    def closed(self) -> bool:
        return self._process.closed

    def close(self, wait: float = 5.0) -> None:
        """End the agent (EOF on its stdin) and ssh; bounded by ``wait`` then killed."""
        self._process.close(wait)

    def __enter__(self) -> Remote:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pid {self.info.pid}"
        where = f"{escape(self.info.hostname)}, python {escape(self.info.python)}"  # the agent's words
        return f"<Remote {self.host} ({where}, {state})>"

    # -- calls

    def call(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the host and return its result.

        ``fn`` and the arguments travel with cloudpickle (functions, lambdas, closures and
        classes of ``__main__`` go by value). A remote exception is raised here as a
        :class:`~mpish.wire.errors.RemoteError` (see :func:`~.serialize.remote_error`).
        ``timeout`` (seconds) bounds the whole call; on expiry :class:`CallTimeout` is
        raised and the connection closed. To pass a keyword argument named ``timeout`` to
        ``fn``, use :meth:`invoke`.
        """
        return self.invoke(fn, args, kwargs, timeout=timeout)

    def invoke(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Any:
        """:meth:`call` with explicit ``args``/``kwargs`` and a per-call output callback."""
        if self.data_only:  # a hostile agent could answer a pickled call with a pickled result
            raise PermissionError(
                f"{self.host}: connected data-only (data_only=True): nothing is pickled or "
                "unpickled here; use call_data with an importable function name"
            )
        payload = (fn, tuple(args), dict(kwargs or {}))
        python = self.info.python  # code by value is refused for another Python X.Y (serialize.py)
        return self._call(ENCODING_PICKLE, "", lambda w: write_pickle(payload, w, peer_python=python),
                          timeout, on_output)

    def run(self, obj: Any, *, timeout: float | None = None) -> Any:
        """Send ``obj`` and call its ``run()`` there; return what ``run()`` returned."""
        if not callable(getattr(obj, "run", None)):  # checked here: a remote AttributeError says less
            raise TypeError(
                f"Remote.run sends an object and calls its run() method there; "
                f"{type(obj).__name__} has none. To run a shell command, use remote.shell('echo hi') "
                "(its output streams back, its exit status is returned); for a function, remote.call(fn, ...)"
            )
        return self.invoke(run_object, (obj,), timeout=timeout)

    def call_data(self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call the function importable as ``name`` (``"pkg.mod.func"`` or
        ``"pkg.mod:func"``) on the host, with msgpack-only arguments and result.

        No code travels and nothing is unpickled on either side: arguments and result
        must be plain data (None, bool, int, float, str, bytes, list, dict).
        """
        return self.invoke_data(name, args, kwargs, timeout=timeout)

    def invoke_data(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> Any:
        """:meth:`call_data` with explicit ``args``/``kwargs`` and an output callback."""
        payload = [list(args), dict(kwargs or {})]
        return self._call(ENCODING_MSGPACK, name, lambda w: write_msgpack(payload, w), timeout, on_output)

    def shell(
        self, command: str, *, timeout: float | None = None, on_output: OutputCallback | None = None
    ) -> int:
        """Run a shell command there (``/bin/sh -c``); its output streams back like any
        call's. Returns its exit status (negative: killed by that signal)."""
        status = self.invoke_data(
            "mpish.calls.agent:run_shell", (command,), timeout=timeout, on_output=on_output
        )
        return int(status)

    # -- the exchange

    def _call(
        self,
        encoding: str,
        target: str,
        write_body: Callable[[BodyWriter], None],
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        output = _Guarded(on_output or self.on_output)
        if not self._lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            raise CallTimeout(
                f"{self.host}: timed out after {timeout:g} s waiting for another thread's call on "
                "this connection (calls on one Remote run one at a time; nothing was sent and "
                "the connection is unchanged)", host=self.host)
        try:
            self._check_usable()
            call_id = next(self._ids)
            clean = False
            try:
                writer = BodyWriter(
                    lambda body: self._send(Call(call_id, encoding, target, body), deadline),
                    lambda message: self._send(message, deadline),
                )
                try:
                    write_body(writer)
                except (TransportBroken, TransportClosed):
                    raise
                except BaseException as exc:
                    if not writer.started:  # nothing was sent: the connection is fine
                        clean = True
                        raise
                    writer.abort(f"the client could not serialise the call: {exc!r}")
                    self._receive_outcome(call_id, encoding, deadline, output, discard=True)
                    clean = True
                    raise
                writer.close()
                try:
                    value = self._receive_outcome(call_id, encoding, deadline, output)
                except (TransportError, ProtocolError):
                    raise
                except Exception:  # a remote exception, or a result that cannot load here:
                    clean = True  # the exchange ended where the protocol says it ends
                    output.raise_error()
                    raise
                clean = True
                output.raise_error()
                return value
            except BaseException as exc:
                if not clean:
                    self._broken = exc
                    self._process.close(wait=0.5)
                raise
        finally:
            self._lock.release()

    def _check_usable(self) -> None:
        if self._process.closed:
            reason = f" after {type(self._broken).__name__}" if self._broken else ""
            raise TransportClosed(f"{self.host}: this connection is closed{reason}; connect again")

    def _send(self, message: Message, deadline: float | None) -> None:
        self._process.send(encode(message), deadline)

    def _next_message(self, deadline: float | None, output: OutputCallback) -> Message:
        while True:
            message = decode(self._process.receive(deadline))
            if not isinstance(message, Output):
                return message
            output(message.stream, message.data)

    def _receive_outcome(
        self,
        call_id: int,
        encoding: str,
        deadline: float | None,
        output: OutputCallback,
        *,
        discard: bool = False,
    ) -> Any:
        message = self._next_message(deadline, output)
        if isinstance(message, Failure):
            self._expect_id(message.call_id, call_id)
            error = remote_error(message.type_name, message.message, message.traceback, _os_error(message))
            if discard:
                return None
            raise error
        if not isinstance(message, Result):
            raise RemoteProtocolError(f"{self.host}: expected a result, got {type(message).__name__}")
        self._expect_id(message.call_id, call_id)
        if message.encoding != encoding:
            raise RemoteProtocolError(f"{self.host}: result encoded as {message.encoding!r}")

        def more() -> Message:
            return self._next_message(deadline, output)

        try:
            if encoding == ENCODING_PICKLE:
                return read_pickle(message.body, more)
            return read_msgpack(message.body, more)
        except ModuleNotFoundError as exc:  # read to its end: the connection is still usable
            raise ModuleNotFoundError(
                f"{self.host}: the call's result refers to module {exc.name!r}, which cannot be "
                "imported here; return plain data (or objects of modules installed on both "
                "sides), or ship the module with cloudpickle.register_pickle_by_value(module) "
                "on the host", name=exc.name) from None
        except DataLimitExceeded as exc:
            raise ResultTooLarge(
                f"{self.host}: refused the result of a data-only call: {exc}; "
                "have the remote function return less, or bytes"
            ) from None
        except BodyAborted as exc:  # the agent could not serialise the result
            failure = self._next_message(deadline, output)
            if not isinstance(failure, Failure):
                raise RemoteProtocolError(f"{self.host}: no failure after an aborted result") from exc
            raise remote_error(failure.type_name, failure.message, failure.traceback,
                               _os_error(failure)) from None

    def _expect_id(self, got: int, want: int) -> None:
        if got != want:
            raise RemoteProtocolError(f"{self.host}: reply to call {got}, expected {want}")


def agent_command(python: str | Sequence[str], *, data_only: bool, shipped: bool = False) -> list[str]:
    """The remote command line that starts the agent: ``python -m mpish.calls.agent``, or with
    ``shipped`` the stub that reads the bootstrap payload and runs it."""
    try:  # a string is split as a shell would, as mpish ssh --python does: "/opt/py -X dev"
        words = shlex.split(python) if isinstance(python, str) else list(python)
    except ValueError as exc:
        hint = "quote as a shell would, or pass a list of words"
        raise ValueError(f"python={python!r}: {exc} ({hint})") from None
    if not words:
        raise ValueError("python is empty: give the remote interpreter, e.g. python='python3'")
    here = ["--client-python", platform.python_version()]  # the agent refuses code by value to another X.Y
    if shipped:
        return ["exec", *words, "-c", _bootstrap.stub(), *here]
    command = [*words, "-m", "mpish.calls.agent", *here]
    if data_only:
        command.append("--data-only")
    return ["exec", *command]


def connect(
    host: str,
    *,
    python: str | Sequence[str] = "python3",
    ssh_options: Sequence[str] = (),
    ssh: str = "ssh",
    batch_mode: bool = True,
    timeout: float = 30.0,
    data_only: bool = False,
    on_output: OutputCallback | None = None,
    bootstrap: bool = True,
) -> Remote:
    """Start an agent on ``host`` through the system ssh and return the :class:`Remote`.

    ``python``: the remote interpreter, Python 3.10 or later: a string split as a shell
    would (``"/opt/venv/bin/python -X dev"``, as ``mpish ssh --python``) or a list of argv
    words (``["/opt/my python/bin/python3"]`` for a path with spaces). With ``bootstrap``
    (the default) the agent's code is sent over stdin (:mod:`.bootstrap`), so mpish need
    not be installed there; ``bootstrap=False`` runs the installed ``python -m mpish.calls.agent``.
    ``ssh_options`` go to ssh before mpish's own (``-T -o BatchMode=yes``), so they win.
    ``timeout`` bounds the wait for the agent's hello. ``data_only`` starts an agent that
    refuses pickled calls (only :meth:`Remote.call_data`); the client then refuses them too,
    so it never unpickles what the host sends. Raises the errors of
    :mod:`mpish.transport.ssh` (HostUnreachable, AuthenticationRefused,
    RemotePythonMissing, MpishMissing, ConnectTimeout, ...) or
    :class:`ProtocolVersionMismatch`.
    """
    command = agent_command(python, data_only=data_only, shipped=bootstrap)
    argv = ssh_argv(host, command, ssh=ssh, options=ssh_options, batch_mode=batch_mode)
    mark = _bootstrap.START_MARK if bootstrap else b""  # the shipped stub's first bytes
    process = AgentConnection(host, argv, max_frame=MAX_FRAME, after=mark)
    deadline = time.monotonic() + timeout
    try:
        if bootstrap:  # built (once per process) while ssh connects
            process.send_raw(_bootstrap.payload(data_only), deadline)
        info = _handshake(host, process, deadline)
    except BaseException:
        process.close(wait=0.5)
        raise
    process.greeted = True
    return Remote(host, process, info, on_output=on_output, data_only=data_only)


def _handshake(host: str, process: AgentConnection, deadline: float) -> AgentInfo:
    try:
        frame = process.receive(deadline, ConnectTimeout)
        hello = decode(frame)
    except RemoteProtocolError as exc:
        seen = process.frames.raw_prefix()
        raise RemoteProtocolError(
            f"{host}: the remote did not start with an mpish hello ({exc}); first bytes: "
            f"{seen!r}. Does a shell startup file (.bashrc) print to stdout?"
        ) from None
    except SshError as exc:  # it ended: after printing what is not mpish's?
        seen = process.frames.raw_prefix(80)
        if process.frames.started or not seen:
            raise
        why = str(exc).removeprefix(f"{host}: ").rstrip(".")
        raise RemoteProtocolError(
            f"{host}: the remote did not start with an mpish hello: it printed {seen!r} and ended "
            f"({why}). Is python= a Python interpreter, and does the host run the command it is given "
            "(not a forced command)?") from None
    if not isinstance(hello, Hello):
        raise RemoteProtocolError(f"{host}: expected a hello, got {type(hello).__name__}")
    if hello.protocol != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(
            f"{host}: the remote mpish {hello.mpish_version} speaks protocol {hello.protocol}, "
            f"this one speaks {PROTOCOL_VERSION}; install the same mpish version on both sides"
        )
    return AgentInfo(
        host, hello.protocol, hello.mpish_version, hello.python, hello.pid, hello.hostname, hello.data_only
    )
