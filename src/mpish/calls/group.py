"""Many hosts at once: one :class:`~.client.Remote` per host, driven by a thread pool.

Connections are opened in parallel and calls run in parallel, at most ``fanout`` hosts at
a time. Every operation returns ``{host: HostResult}`` in the order the hosts were given;
a host that failed (to connect, or in the call) has its exception in ``error`` and does
not stop the others. Without an ``on_output`` callback, what the hosts print is shown as
pdsh and ``clush -L`` show it: whole lines, each prefixed ``host: `` (a last line without a
newline is ended at the end of the host's part). A Ctrl-C (any exception in the calling
thread) during an operation closes the group's connections, so that the agents end the
calls they run, and raises at once; :meth:`Group.connect` connects again the hosts whose connection was
closed (a timeout, a lost agent, a Ctrl-C).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from mpish.wire.text import relabel_returns

from .client import OutputCallback, Remote, connect, write_output

LINE_LIMIT = 65536  # a longer line without a newline is shown in parts, each prefixed


class LabelledLines:
    """A host's output as whole lines prefixed ``host: `` on the local stdout/stderr."""

    _lock = threading.Lock()  # one host's line is never cut by another's

    def __init__(self, host: str) -> None:
        self.prefix = f"{host}: ".encode(errors="replace")
        self.held = {"stdout": bytearray(), "stderr": bytearray()}

    def __call__(self, stream: str, data: bytes) -> None:
        held = self.held.get(stream)
        if held is None:
            return
        held += data
        end = held.rfind(b"\n") + 1
        if not end and len(held) >= LINE_LIMIT:
            end = len(held)
        if end:
            lines = bytes(held[:end])
            del held[:end]
            self._write(stream, lines)

    def flush(self) -> None:
        """End the lines still open (the host's part of an operation is over)."""
        for stream, held in self.held.items():
            if held:
                lines = bytes(held)
                held.clear()
                self._write(stream, lines)

    def _write(self, stream: str, lines: bytes) -> None:
        parts = lines[:-1].split(b"\n") if lines.endswith(b"\n") else lines.split(b"\n")
        text = b"".join(self.prefix + (relabel_returns(part, self.prefix) if b"\r" in part else part) + b"\n"
                        for part in parts)
        with self._lock:
            write_output(stream, text)

HostOutputCallback = Callable[[str, str, bytes], None]
"""``on_output(host, stream, data)``."""


@dataclass(frozen=True, slots=True)
class HostResult:
    """The outcome on one host: ``value`` if ``ok``, else ``error``."""

    host: str
    value: Any = None
    error: BaseException | None = None
    seconds: float = 0.0  # wall time of this host's part of the operation

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The value, or raise the host's error."""
        if self.error is not None:
            raise self.error
        return self.value


class Group:
    """A set of hosts to call in parallel. Use as a context manager (it closes all)."""

    def __init__(
        self,
        hosts: Iterable[str],
        *,
        fanout: int = 32,
        on_output: HostOutputCallback | None = None,
        **connect_options: Any,
    ) -> None:
        self.hosts: list[str] = list(dict.fromkeys(hosts))
        if fanout < 1:
            raise ValueError("fanout must be at least 1")
        self.fanout = fanout
        self.on_output = on_output
        self.connect_options = connect_options
        self.remotes: dict[str, Remote] = {}
        self.connect_errors: dict[str, BaseException] = {}
        self._labelled: dict[str, LabelledLines] = {}  # the default output, per host
        self._at_work: set[Remote] = set()  # each_once's connections (closed on a Ctrl-C)
        self._lock = threading.Lock()
        self._connected = False

    def __enter__(self) -> Group:
        self.connect()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _output_for(self, host: str) -> OutputCallback:
        callback = self.on_output
        if callback is None:
            with self._lock:
                return self._labelled.setdefault(host, LabelledLines(host))
        return lambda stream, data: callback(host, stream, data)

    def _end_lines(self, host: str) -> None:
        labelled = self._labelled.get(host)
        if labelled is not None:
            labelled.flush()

    def _interrupted(self) -> None:
        """Close every connection of the group (the agents end the calls), without waiting."""
        with self._lock:
            busy = [*self.remotes.values(), *self._at_work]
        for remote in busy:
            remote.close(wait=0)

    def _map(
        self,
        hosts: Sequence[str],
        work: Callable[[str], Any],
        on_done: Callable[[HostResult], None] | None = None,
    ) -> dict[str, HostResult]:
        def one(host: str) -> HostResult:
            start = time.monotonic()
            try:
                result = HostResult(host, value=work(host), seconds=time.monotonic() - start)
            except Exception as exc:
                result = HostResult(host, error=exc, seconds=time.monotonic() - start)
            self._end_lines(host)
            if on_done is not None:
                on_done(result)
            return result

        if not hosts:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(self.fanout, len(hosts)), thread_name_prefix="mpish-group")
        try:
            results = list(pool.map(one, hosts))
        except BaseException:  # Ctrl-C: do not wait here for hosts still running
            pool.shutdown(wait=False, cancel_futures=True)
            self._interrupted()  # nor at the interpreter's exit, which joins the pool's threads
            raise
        pool.shutdown()
        return {r.host: r for r in results}

    def connect(self) -> dict[str, HostResult]:
        """Connect to every host not connected (never, or its connection was closed: a
        timeout, a lost agent, a Ctrl-C); ``value`` is the AgentInfo."""
        todo = [h for h in self.hosts if h not in self.remotes or self.remotes[h].closed]

        def start(host: str) -> Any:
            remote = connect(host, on_output=self._output_for(host), **self.connect_options)
            with self._lock:
                self.remotes[host] = remote
                self.connect_errors.pop(host, None)
            return remote.info

        results = self._map(todo, start)
        for host, result in results.items():
            if result.error is not None:
                self.connect_errors[host] = result.error
        self._connected = True
        return results

    def each(
        self, work: Callable[[Remote], Any], hosts: Sequence[str] | None = None
    ) -> dict[str, HostResult]:
        """``work(remote)`` on every host (or on ``hosts``) in parallel, connecting first if needed."""
        if not self._connected:
            self.connect()

        def one(host: str) -> Any:
            remote = self.remotes.get(host)
            if remote is None:
                raise self.connect_errors[host]
            return work(remote)

        return self._map(self.hosts if hosts is None else list(hosts), one)

    def call(
        self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, HostResult]:
        """``Remote.call`` on every host."""
        return self.each(lambda r: r.invoke(fn, args, kwargs, timeout=timeout))

    def call_data(
        self, name: str, /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> dict[str, HostResult]:
        """``Remote.call_data`` on every host."""
        return self.each(lambda r: r.invoke_data(name, args, kwargs, timeout=timeout))

    def run(self, obj: Any, *, timeout: float | None = None) -> dict[str, HostResult]:
        """``Remote.run`` on every host."""
        return self.each(lambda r: r.run(obj, timeout=timeout))

    def shell(self, command: str, *, timeout: float | None = None) -> dict[str, HostResult]:
        """Run a shell command on every host; ``value`` is its exit status."""
        return self.each(lambda r: r.shell(command, timeout=timeout))

    def each_once(
        self, work: Callable[[Remote], Any], on_done: Callable[[HostResult], None] | None = None
    ) -> dict[str, HostResult]:
        """Connect, ``work(remote)``, close: host by host, at most ``fanout`` at a time.

        This is clush's model for a one-shot command: a host holds a slot (and an ssh
        connection) only while it is being worked on, so thousands of hosts need only
        ``fanout`` connections at once. ``seconds`` includes the connection. ``on_done``
        is called (in a worker thread) with each host's result as soon as it is known.
        """

        def one(host: str) -> Any:
            with connect(host, on_output=self._output_for(host), **self.connect_options) as remote:
                with self._lock:
                    self._at_work.add(remote)
                try:
                    return work(remote)
                finally:
                    with self._lock:
                        self._at_work.discard(remote)

        return self._map(self.hosts, one, on_done)

    def close(self) -> None:
        """Close every connection (in parallel, each bounded)."""
        remotes = list(self.remotes.values())
        self.remotes.clear()
        if remotes:
            with ThreadPoolExecutor(max_workers=min(self.fanout, len(remotes))) as pool:
                list(pool.map(lambda r: r.close(), remotes))
