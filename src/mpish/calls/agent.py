"""The remote side: ``python -m mpish.calls.agent``, started by :func:`mpish.ssh.connect`.

Theory of operation
-------------------
The agent's stdin and stdout are the ssh pipes. It first duplicates them to private
descriptors for the protocol, then points descriptor 0 at ``/dev/null`` and descriptors
1 and 2 at two pipes of its own, and makes ``sys.stdout``/``sys.stderr`` write through to
them. So whatever user code prints (``print``, ``os.write(1, ...)``, a subprocess that
inherits the descriptors) lands in those pipes, never in the protocol stream. Then it forks:
the parent, the front (:mod:`mpish.calls.front`), sends what the pipes hold as
:class:`~mpish.calls.messages.Output` frames as the bytes come, taking turns with the child
on the stream; before a result the child reads the pipes empty itself, so all output of a
call arrives before its result. When a call ends the child's process (``os._exit``, a crash,
a signal) the front still sends what was left in the pipes, and says how it ended.

The main thread reads frames and runs calls one at a time (in the main thread, so signals
and libraries that want it behave). A watcher thread polls the protocol pipe for a
hang-up: when the client goes away in the middle of a call (its timeout, a Ctrl-C, a lost
connection), the agent kills its process group, itself and the processes the call started
(it leads that group: sshd makes it a session leader, else it makes one), so no orphan of
the call keeps running after ssh ends. An idle agent just exits at the end of its input:
what an earlier call left running in the background lives on, as after ssh.

With ``--data-only`` the agent refuses pickled calls without reading them as pickle: only
msgpack calls of importable functions (``pkg.mod:func``) run, and cloudpickle is never
imported.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import io
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mpish.calls.front import CLEAN_END, TURN_READS, Turn, run_front, send_pipes, shared_flag
from mpish.calls.messages import (
    ENCODING_MSGPACK,
    ENCODING_PICKLE,
    MAX_FRAME,
    PROTOCOL_VERSION,
    Call,
    Failure,
    Hello,
    Message,
    Result,
    decode,
    encode,
)
from mpish.calls.serialize import (
    BodyAborted,
    BodyReader,
    BodyWriter,
    describe_exception,
    os_error_fields,
    read_msgpack,
    read_pickle,
    write_msgpack,
    write_pickle,
)
from mpish.transport.frames import EndOfStream, FrameStream, grow_pipe
from mpish.wire.errors import RemoteProtocolError

FATAL = 2  # the agent's exit status after a fatal error it reported itself
POLLRDHUP = getattr(select, "POLLRDHUP", 0x2000)  # Linux: the peer closed its end


def mpish_version() -> str:
    """The version of this code (also right when it was shipped by the bootstrap)."""
    from mpish import __version__

    return __version__


def run_shell(command: str) -> int:
    """Run ``command`` with /bin/sh; its output goes to the captured descriptors 1 and 2."""
    return subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, check=False).returncode  # noqa: S602


def resolve(name: str) -> Callable[..., Any]:
    """The function importable as ``pkg.mod:func``, ``pkg.mod:Class.method`` or ``pkg.mod.func``."""
    if ":" in name:
        module_name, _, path = name.partition(":")
    else:
        module_name, _, path = name.rpartition(".")
    if not module_name or not path:
        raise ValueError(f"not a dotted function name: {name!r}")
    obj: Any = importlib.import_module(module_name)
    for attribute in path.split("."):
        obj = getattr(obj, attribute)
    if not callable(obj):
        raise TypeError(f"{name} is not callable")
    return obj  # type: ignore[no-any-return]


class Agent:
    """One agent process: a protocol stream shared with the front, and the call loop."""

    def __init__(self, stream: FrameStream, turn: Turn, pipes: dict[int, str], *, data_only: bool,
                 client_python: str = "") -> None:
        self.stream = stream
        self.data_only = data_only
        self.client_python = client_python  # results by value are refused for another X.Y
        self.busy = False
        self.own_group = False  # the agent leads its process group (main): a call's processes are in it
        self.pipes = pipes  # the calls' output pipes (read ends), shared with the front
        self.turn = turn  # taken to write on the stream the front writes too
        self._output_waits = select.poll()
        for fd in pipes:
            self._output_waits.register(fd, select.POLLIN)

    def send(self, message: Message) -> None:
        with self.turn.held():
            self.stream.send(encode(message))

    # -- reading

    def next_message(self) -> Message:
        """The next message from the client (read here, in the main thread)."""
        try:
            return decode(self.stream.receive())
        except (EndOfStream, OSError):
            raise EOFError("the client closed the connection") from None

    def _watch_hangup(self) -> None:
        """Exit if the client goes away during a call (nobody would read the result).

        poll() reports a hang-up of the protocol pipe (all writers closed) without
        consuming any data, so the main thread keeps reading frames itself.
        """
        poller = select.poll()
        poller.register(self.stream.read_fd, POLLRDHUP)  # POLLHUP/POLLERR are always reported
        while True:
            events = poller.poll()
            if any(event & (select.POLLHUP | select.POLLERR | POLLRDHUP) for _, event in events):
                if self.busy:
                    end_call_processes(self.own_group)
                time.sleep(0.1)  # idle: the main thread reads the EOF and exits

    # -- serving

    def serve(self) -> None:
        self.send(
            Hello(
                PROTOCOL_VERSION,
                mpish_version(),
                sys.version.split()[0],
                os.getpid(),
                socket.gethostname(),
                self.data_only,
            )
        )
        threading.Thread(target=self._watch_hangup, name="mpish-hangup", daemon=True).start()
        while True:
            try:
                message = self.next_message()
            except EOFError:
                return
            if not isinstance(message, Call):
                raise RemoteProtocolError(f"expected a call, got {type(message).__name__}")
            self.handle(message)

    def _skip_body(self, call: Call) -> None:
        if call.body is None:
            with contextlib.suppress(BodyAborted):
                BodyReader(self.next_message).finish()

    def handle(self, call: Call) -> None:
        try:
            if call.encoding == ENCODING_PICKLE:
                if self.data_only:
                    self._skip_body(call)  # read as chunks only, never unpickled
                    raise PermissionError(
                        "this agent runs with --data-only: it never unpickles; "
                        "use call_data with an importable function name"
                    )
                try:
                    fn, args, kwargs = read_pickle(call.body, self.next_message)
                except ModuleNotFoundError as exc:
                    raise ModuleNotFoundError(
                        f"{exc} (while loading the call: the function or an argument refers to a "
                        "module that this host cannot import; install it here, or ship it with "
                        "cloudpickle.register_pickle_by_value(module) on the client)",
                        name=exc.name,
                    ) from exc
            elif call.encoding == ENCODING_MSGPACK:
                try:
                    fn = resolve(call.target)
                except BaseException:
                    self._skip_body(call)  # the arguments still come: read them past
                    raise
                args, kwargs = _check_data_arguments(read_msgpack(call.body, self.next_message))
            else:
                self._skip_body(call)
                raise ValueError(f"unknown encoding {call.encoding!r}")
        except (RemoteProtocolError, EOFError):
            raise
        except BaseException as exc:  # could not load the call (the body was consumed)
            self.fail(call.call_id, exc)
            return
        try:
            self.busy = True
            value = fn(*args, **kwargs)
        except BaseException as exc:
            self.busy = False
            self._drain()
            self.fail(call.call_id, exc)
            return
        finally:
            self.busy = False
        self._drain()
        self.reply(call, value)

    def _drain(self) -> None:
        """Before a result: send what the call wrote (the front sends only what it reads)."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        if self._output_waits.poll(0):  # usually nothing: one syscall
            with self.turn.held():
                send_pipes(self.pipes, self.stream, TURN_READS)  # what the call wrote, not a flood's rest

    def reply(self, call: Call, value: object) -> None:
        writer = BodyWriter(lambda body: self.send(Result(call.call_id, call.encoding, body)), self.send)
        try:
            if call.encoding == ENCODING_PICKLE:
                write_pickle(value, writer, peer_python=self.client_python)
            else:
                write_msgpack(value, writer)
        except BaseException as exc:  # unpicklable result; a broken pipe fails again below
            writer.abort(f"could not serialise the result: {exc!r}")
            self.fail(call.call_id, exc)
            return
        writer.close()

    def fail(self, call_id: int, exc: BaseException) -> None:
        name, message, text = describe_exception(exc)
        self.send(Failure(call_id, name, message, text, *os_error_fields(exc)))


def lead_process_group() -> bool:
    """Make the agent the leader of a process group of its own (under sshd it already is: the
    session's leader); True if it is. The processes a call starts inherit the group."""
    if os.getpgrp() == os.getpid():
        return True
    try:
        os.setpgid(0, 0)
    except OSError:
        return False
    return True


def end_call_processes(own_group: bool) -> None:
    """The client went away during a call (its timeout, a Ctrl-C, a lost connection): end the
    call and every process it started, as subprocess.run's timeout ends its child (SIGKILL),
    the agent included; what the call put in a session or group of its own lives on, as it
    would after ssh ends."""
    if own_group:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(0)


def _check_data_arguments(data: object) -> tuple[list[Any], dict[str, Any]]:
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[0], list)
        or not isinstance(data[1], dict)
        or not all(isinstance(k, str) for k in data[1])
    ):
        raise ValueError("a msgpack call body is [args, {name: value}]")
    return data[0], data[1]


def _redirect() -> tuple[int, int, dict[int, str]]:
    """Keep the ssh pipes for the protocol; give fds 0, 1, 2 to user code."""
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    for fd in (proto_in, proto_out):
        grow_pipe(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    pipes: dict[int, str] = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        pipes[read_end] = name
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True, line_buffering=True)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), write_through=True, line_buffering=True, errors="backslashreplace"
    )
    return proto_in, proto_out, pipes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpish.calls.agent", description="mpish remote agent (speaks frames on stdin/stdout)"
    )
    parser.add_argument(
        "--data-only",
        action="store_true",
        help="refuse pickled calls; run only msgpack calls of importable functions",
    )
    parser.add_argument("--client-python", default="", help="the client's Python version")
    options, _ = parser.parse_known_args(argv)  # a newer client's options are not fatal
    diagnostics = os.dup(2)  # ssh's stderr: for the agent's own fatal errors
    with contextlib.suppress(Exception):  # a call that crashes the agent: where, in AgentDied's stderr
        faulthandler.enable(file=diagnostics)
    proto_in, proto_out, pipes = _redirect()
    mid_frame = shared_flag()
    turn = Turn()
    for fd in pipes:
        os.set_blocking(fd, False)
    child = os.fork()
    if child:
        os.close(proto_in)
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):  # the front prints nothing: the pipes are the calls'
            os.dup2(null, fd)
        os.close(null)
        run_front(child, proto_out, pipes, turn, mid_frame, diagnostics)
    stream = FrameStream(proto_in, proto_out, max_frame=MAX_FRAME, mid_frame=mid_frame)
    agent = Agent(stream, turn, pipes, data_only=options.data_only, client_python=options.client_python)
    # The calls get a process group of their own, the front stays out of it: a signal a call
    # sends to its group (kill 0, a batch system's cleanup) must not end the front.
    agent.own_group = lead_process_group()
    status = 0
    try:
        agent.serve()
    except BaseException as exc:
        text = describe_exception(exc)[2]
        os.write(diagnostics, f"mpish.calls.agent: fatal: {text}".encode(errors="replace"))
        status = FATAL
    with contextlib.suppress(Exception):
        agent._drain()
    mid_frame[CLEAN_END] = 1  # the front need not say how this process ended: it said so, or all went well
    # os._exit: threads that user code left running must not keep the agent alive.
    os._exit(status)


if __name__ == "__main__":
    main()
