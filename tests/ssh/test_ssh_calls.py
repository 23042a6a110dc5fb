"""Calls, objects, exceptions and streamed output through a real sshd."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from sshd_server import SshServer

from mpish.ssh import Remote, RemoteError, connect

# This test module is importable here but not on the "remote" side: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SRC = Path(__file__).resolve().parents[2] / "src"


def run_script(code: str, sshd: SshServer, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as __main__ in a fresh interpreter (as a user's script would be)."""
    env = dict(os.environ, SSH_OPTIONS=" ".join(sshd.ssh_options), PYTHONPATH=str(SRC))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_seed_remote_worker_from_main(sshd: SshServer) -> None:
    """The seed's example: a class defined in __main__ whose run() prints Hello."""
    result = run_script(
        """
        import os, sys
        from mpish.ssh import connect

        class RemoteWorker(object):
            def __init__(self):
                pass

            def run(self):
                print("Hello")
                return os.getpid()

        with connect("host1", python=sys.executable,
                     ssh_options=os.environ["SSH_OPTIONS"].split()) as remote:
            pid = remote.run(RemoteWorker())
            print("ran in", pid, "agent", remote.info.pid, "local", os.getpid())
        """,
        sshd,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Hello"
    _, _, pid, _, agent, _, local = lines[1].split()
    assert pid == agent and pid != local


def test_call_functions_lambdas_closures(remote: Remote) -> None:
    factor = 3
    assert remote.call(lambda x: x * factor, 14) == 42
    assert remote.call(os.getpid) == remote.info.pid != os.getpid()
    assert remote.call(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
    assert remote.invoke(dict, kwargs={"timeout": 5}) == {"timeout": 5}


class Accumulator:
    def __init__(self) -> None:
        self.items: list[int] = []

    def run(self) -> int:
        self.items.append(len(self.items))
        return sum(self.items)


def test_run_object_and_state_stays_remote(remote: Remote) -> None:
    worker = Accumulator()
    assert remote.run(worker) == 0
    assert remote.run(worker) == 0  # each call sends a fresh copy
    assert worker.items == []


def test_run_of_an_object_without_run_says_what_run_is_for_before_sending(remote: Remote) -> None:
    with pytest.raises(TypeError, match=r"calls its run\(\) method there; str has none.*remote.shell"):
        remote.run("hostname")
    assert remote.call(sum, [1, 2]) == 3  # nothing was sent: the connection is as it was


def failing_function(key: str) -> None:
    {}[key]


def test_remote_exception_rebuilt_with_traceback(remote: Remote) -> None:
    with pytest.raises(KeyError) as caught:
        remote.call(failing_function, "missing")
    error = caught.value
    assert isinstance(error, RemoteError)
    assert error.remote_type == "KeyError"
    assert "failing_function" in error.remote_traceback
    assert "failing_function" in str(error)
    assert remote.call(abs, -5) == 5  # the connection is still usable


class CustomError(Exception):
    pass


def raise_custom() -> None:
    raise CustomError("custom failure")


def test_non_builtin_exception_is_remote_error(remote: Remote) -> None:
    with pytest.raises(RemoteError) as caught:
        remote.call(raise_custom)
    assert "CustomError" in caught.value.remote_type
    assert "custom failure" in str(caught.value)
    assert "raise_custom" in caught.value.remote_traceback


def test_unpicklable_result_and_argument(remote: Remote) -> None:
    with pytest.raises(RemoteError) as caught:
        remote.call(threading.Lock)
    assert isinstance(caught.value, TypeError)
    with pytest.raises(TypeError):
        remote.call(id, threading.Lock())  # fails here, before anything is sent
    assert remote.call(abs, -7) == 7


def print_slowly() -> str:
    print("first line")
    time.sleep(1.0)
    os.system("echo from-subprocess")  # fd 1 of a child process is captured too
    print("to stderr", file=sys.stderr)
    return "done"


def test_output_streams_while_call_runs(remote: Remote) -> None:
    finished = threading.Event()
    chunks: list[tuple[str, bytes, bool]] = []

    def on_output(stream: str, data: bytes) -> None:
        chunks.append((stream, data, finished.is_set()))

    assert remote.invoke(print_slowly, on_output=on_output) == "done"
    finished.set()
    stream, data, finished_before = chunks[0]
    assert (stream, finished_before) == ("stdout", False)  # it came while the call was running
    assert b"first line".startswith(data[:10])  # print() may write the line and "\n" apart
    stdout = b"".join(d for s, d, _ in chunks if s == "stdout")
    stderr = b"".join(d for s, d, _ in chunks if s == "stderr")
    assert stdout == b"first line\nfrom-subprocess\n"
    assert stderr == b"to stderr\n"


def write_fake_frame() -> int:
    os.write(1, b"\x00\x00\x00\x05junk!")  # would corrupt the protocol if fd 1 were the pipe
    return 1


def test_user_output_never_corrupts_the_protocol(remote: Remote) -> None:
    seen: list[bytes] = []
    assert remote.invoke(write_fake_frame, on_output=lambda s, d: seen.append(d)) == 1
    assert b"".join(seen) == b"\x00\x00\x00\x05junk!"
    assert remote.call(abs, -1) == 1


def test_call_data_and_shell(remote: Remote) -> None:
    assert remote.call_data("math.hypot", 3, 4) == 5.0
    assert remote.call_data("os:getpid") == remote.info.pid
    seen: list[tuple[str, bytes]] = []
    status = remote.shell("echo out; echo err >&2; exit 3", on_output=lambda s, d: seen.append((s, d)))
    assert status == 3
    assert b"".join(d for s, d in seen if s == "stdout") == b"out\n"
    assert b"".join(d for s, d in seen if s == "stderr") == b"err\n"
    with pytest.raises(ModuleNotFoundError):
        remote.call_data("no_such_module_xyz.f")


class TouchOnUnpickle:
    """Unpickling this runs os.system(touch ...) on the agent."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.path}",)


def test_data_only_agent_never_unpickles(connect_options: dict[str, object], tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with connect("host2", data_only=True, **connect_options) as remote:  # type: ignore[arg-type]
        assert remote.info.data_only
        with pytest.raises(PermissionError, match="host2: connected data-only"):
            remote.call(abs, TouchOnUnpickle(str(marker)))  # refused here, before sending
        remote.data_only = False  # send it anyway: the agent refuses it too
        with pytest.raises(PermissionError, match="data-only"):
            remote.call(abs, TouchOnUnpickle(str(marker)))
        big = TouchOnUnpickle(str(marker))
        with pytest.raises(PermissionError):  # a streamed (multi-chunk) body is refused too
            remote.call(len, [big, b"x" * (9 * 1024 * 1024)])
        assert remote.call_data("os.getpid") == remote.info.pid
    assert not marker.exists()
    with connect("host2", **connect_options) as normal:  # type: ignore[arg-type]
        normal.call(abs, 1)
        assert normal.call(abs, TouchOnUnpickle(str(marker))) == 0  # the payload does run when unpickled
    assert marker.exists()


def test_large_object_round_trip_bounded_memory(sshd: SshServer) -> None:
    """256 MiB to the remote and back: the local peak grows by the result, not by copies."""
    result = run_script(
        """
        import os, resource, sys
        from mpish.ssh import connect

        size = 256 * 1024 * 1024
        data = bytes(range(256)) * (size // 256)
        with connect("host3", python=sys.executable,
                     ssh_options=os.environ["SSH_OPTIONS"].split()) as remote:
            assert remote.call(len, b"warm up") == 7
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            back = remote.call(lambda b: b[::-1][::-1], data)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(len(back), back == data, (after - before) // 1024)
        """,
        sshd,
    )
    assert result.returncode == 0, result.stderr
    length, equal, grown_mib = result.stdout.split()
    assert length == str(256 * 1024 * 1024) and equal == "True"
    # the result itself is 256 MiB; one extra copy (one giant frame, or pickle.dumps) would be 512+
    assert int(grown_mib) < 256 + 96, f"local peak grew by {grown_mib} MiB"


HOSTILE_AGENT = """
import os, sys
from mpish.calls.messages import CHUNK_SIZE, MAX_FRAME, PROTOCOL_VERSION, Chunk, End, Hello, Result
from mpish.calls.messages import decode, encode
from mpish.transport.frames import FrameStream

frames = FrameStream(0, 1, max_frame=MAX_FRAME)
frames.send(encode(Hello(PROTOCOL_VERSION, "0", "3", os.getpid(), "hostile", True)))
call = decode(frames.receive())
size = 4 * 1024 * 1024  # an array of 4 million empty arrays: ~300 MiB once decoded
body = b"\\xdd" + (size - 5).to_bytes(4, "big") + b"\\x90" * (size - 5)
if call.encoding == "pickle":  # a pickled result that runs a command when unpickled
    payload = b"cos\\nsystem\\n(Vtouch " + sys.argv[1].encode() + b"\\ntR."
    frames.send(encode(Result(call.call_id, "pickle", payload)))
else:
    frames.send(encode(Result(call.call_id, "msgpack", None)))
    for start in range(0, size, CHUNK_SIZE):
        frames.send(encode(Chunk(body[start : start + CHUNK_SIZE])))
    frames.send(encode(End(False, "")))
os.read(0, 1)  # until the client hangs up
"""


def test_hostile_data_only_result_is_refused_with_bounded_memory(sshd: SshServer, tmp_path: Path) -> None:
    """A malicious host answers call_data with a 4 MiB body of empty arrays (issue 10, 5)."""
    agent = tmp_path / "hostile_agent.py"
    agent.write_text(HOSTILE_AGENT)
    result = run_script(
        f"""
        import os, resource, sys
        from mpish.ssh import ResultTooLarge, connect

        with connect("host4", python=[sys.executable, {str(agent)!r}], bootstrap=False,
                     data_only=True, ssh_options=os.environ["SSH_OPTIONS"].split()) as remote:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                value = remote.call_data("os.getpid")
                print("accepted", type(value).__name__, len(value))
            except ResultTooLarge as exc:
                print("refused", exc)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print((after - before) // 1024)
        """,
        sshd,
    )
    assert result.returncode == 0, result.stderr
    outcome, grown_mib = result.stdout.splitlines()[-2:]
    assert outcome.startswith("refused host4: refused the result of a data-only call"), outcome
    assert "expands to more than" in outcome
    # decoded in full it took ~300 MiB; the bound stops it at its budget (96 MiB) plus the
    # outer array's slots (32 MiB) and the body
    assert int(grown_mib) < 160, f"local peak grew by {grown_mib} MiB"


def test_data_only_client_never_unpickles_a_hostile_result(sshd: SshServer, tmp_path: Path) -> None:
    """A malicious host would answer a pickled call with a pickle that runs code here."""
    agent = tmp_path / "hostile_agent.py"
    agent.write_text(HOSTILE_AGENT)
    marker = tmp_path / "unpickled-on-the-client"
    python = [sys.executable, str(agent), str(marker)]
    options = {"python": python, "bootstrap": False, "data_only": True, "ssh_options": sshd.ssh_options}
    with (
        connect("host5", **options) as remote,  # type: ignore[arg-type]
        pytest.raises(PermissionError, match="host5: connected data-only"),
    ):
        remote.call(abs, -1)
    assert not marker.exists()


def test_code_by_value_to_another_python_is_refused_before_anything_is_sent(
    connect_options: dict[str, object],
) -> None:
    """A lambda's bytecode crashed a Python 3.13 agent (segmentation fault) and broke a 3.10 one:
    for another X.Y the client refuses it, names what to do, and the connection stays usable."""
    import dataclasses

    from mpish.calls.serialize import CodeAcrossVersions

    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        here = remote.info.python
        major, minor = sys.version_info[:2]
        remote.info = dataclasses.replace(remote.info, python=f"{major}.{minor + 1}.0")
        with pytest.raises(CodeAcrossVersions, match="bytecode"):
            remote.call(lambda: 2)
        assert remote.call(abs, -5) == 5  # a function by name travels to any Python
        remote.info = dataclasses.replace(remote.info, python=here)
        assert remote.call(lambda: 2) == 2


def test_a_mistyped_data_call_with_a_large_argument_fails_alone_and_the_connection_stays_usable(
    connect_options: dict[str, object],
) -> None:
    """The agent read the arguments after the function's name: a wrong name left their chunks
    unread, the next call met them ('expected a call, got Chunk') and the agent died."""
    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        with pytest.raises(AttributeError, match="getsizee"):
            remote.call_data("os.path.getsizee", "x" * 5_000_000)
        assert remote.call_data("os.getpid") == remote.info.pid


def test_a_call_timeout_ends_the_processes_the_call_started(
    connect_options: dict[str, object], tmp_path: Path
) -> None:
    """As subprocess.run's timeout kills its child: the command and its background children
    do not run on, re-parented to init, after the client gave up (sshd runs on this host)."""
    from mpish.ssh import CallTimeout

    pids = tmp_path / "pids"
    remote = connect("host1", **connect_options)  # type: ignore[arg-type]
    with pytest.raises(CallTimeout, match="ends it, and the processes it started"):
        remote.shell(f"sleep 300 & echo $$ $! > {pids}; wait", timeout=2)
    started = [int(pid) for pid in pids.read_text().split()]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in started):
        time.sleep(0.05)
    assert not [pid for pid in started if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its parent is gone too
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_an_output_callback_that_raises_is_raised_after_the_reply_and_the_connection_stays_usable(
    connect_options: dict[str, object],
) -> None:
    """(A BrokenPipeError writing to `head`, a bug in the callback.) The reply was left half
    read and the next call failed with 'reply to call 1, expected 2'."""

    def broken(stream: str, data: bytes) -> None:
        raise ValueError("callback bug")

    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="callback bug"):
            remote.invoke(lambda: (print("hello"), "first")[1], on_output=broken)
        assert not remote.closed
        assert remote.call(abs, -2) == 2


def test_a_timeout_waiting_for_another_threads_call_sends_nothing_and_keeps_the_connection(
    connect_options: dict[str, object],
) -> None:
    from mpish.ssh import CallTimeout

    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        first = threading.Thread(target=remote.call, args=(time.sleep, 3))
        first.start()
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(CallTimeout, match="another thread's call"):
            remote.call(abs, -1, timeout=0.5)
        assert time.monotonic() - started < 2.5  # not after the first call's 3 s
        first.join()
        assert not remote.closed
        assert remote.call(abs, -1) == 1


def test_a_result_of_a_module_only_the_host_has_names_the_host_and_the_module(
    connect_options: dict[str, object], tmp_path: Path
) -> None:
    module = tmp_path / "only_there_xq.py"
    module.write_text("class Thing:\n    pass\n")
    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        remote.call(exec, f"import sys; sys.path.insert(0, {str(tmp_path)!r})")
        with pytest.raises(ModuleNotFoundError, match="host1: the call's result refers to module 'only_"):
            remote.call(eval, "__import__('only_there_xq').Thing()")
        assert remote.call(abs, -4) == 4


def test_a_rebuilt_remote_exception_pickles_again_as_itself(connect_options: dict[str, object]) -> None:
    """(A process pool or a logging queue pickles it.) The classes were made on the fly and
    could not be found by name."""
    import pickle

    with connect("host1", **connect_options) as remote, pytest.raises(KeyError) as raised:  # type: ignore[arg-type]
        remote.call(failing_function, "missing")
    again = pickle.loads(pickle.dumps(raised.value))
    assert isinstance(again, KeyError) and isinstance(again, RemoteError)
    assert type(again) is type(raised.value)
    assert again.remote_type == "KeyError" and "failing_function" in again.remote_traceback


def test_a_call_that_crashes_the_agent_says_where_in_the_error(connect_options: dict[str, object]) -> None:
    """A segmentation fault ended the agent with nothing but 'exit status 255'."""
    import ctypes

    from mpish.ssh import AgentDied

    remote = connect("host1", **connect_options)  # type: ignore[arg-type]
    with pytest.raises(AgentDied) as raised:
        remote.call(ctypes.string_at, 0)
    assert "Segmentation fault" in raised.value.stderr
    assert "Segmentation fault" in str(raised.value)


def test_a_remote_oserror_keeps_its_errno_and_file_names(connect_options: dict[str, object]) -> None:
    """`except OSError as e: if e.errno == errno.ENOENT` took the wrong branch: errno and
    filename were None (helper-109, an execnet user)."""
    import errno

    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        with pytest.raises(FileNotFoundError) as raised:
            remote.call(open, "/nonexistent/mpish-test")
        assert raised.value.errno == errno.ENOENT
        assert raised.value.filename == "/nonexistent/mpish-test"
        assert raised.value.strerror and "No such file" in raised.value.strerror
        with pytest.raises(FileExistsError) as again:
            remote.call_data("os.mkdir", "/")  # data-only calls carry them too
        assert again.value.errno == errno.EEXIST and again.value.filename == "/"
        with pytest.raises(KeyError) as other:
            remote.call(failing_function, "k")
        assert not isinstance(other.value, OSError)


def last_words_then_exit(n: int) -> None:
    print(f"last words {n}")
    os.write(2, b"on stderr too\n")
    os._exit(3)


def test_output_written_just_before_the_call_ends_the_agent_arrives_every_time(
    connect_options: dict[str, object],
) -> None:
    """`print(...); os._exit(3)` lost the printed line 3 times in 10: the thread that sent the
    output died with the process (helper-109). The agent's front process reads the pipes
    empty after the call's process ended, and says how it ended."""
    from mpish.ssh import AgentDied

    for n in range(10):
        seen: list[tuple[str, bytes]] = []
        remote = connect("host1", **connect_options)  # type: ignore[arg-type]
        with pytest.raises(AgentDied) as raised:
            remote.invoke(last_words_then_exit, (n,), on_output=lambda s, d, seen=seen: seen.append((s, d)))
        assert b"".join(d for s, d in seen if s == "stdout") == f"last words {n}\n".encode()
        assert b"".join(d for s, d in seen if s == "stderr") == b"on stderr too\n"
        assert raised.value.exit_status == 3


def test_a_call_killed_by_a_signal_is_named_by_the_signal_not_ssh_status_255(
    connect_options: dict[str, object],
) -> None:
    """A process killed by a signal made ssh exit 255, as if ssh itself had failed."""
    import signal

    from mpish.ssh import AgentDied

    remote = connect("host1", **connect_options)  # type: ignore[arg-type]
    with pytest.raises(AgentDied) as raised:
        remote.call(lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert raised.value.exit_status == 128 + signal.SIGTERM
    assert "SIGTERM" in str(raised.value)


def survive_a_sigterm_to_my_group() -> int:
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # a graceful-shutdown handler
    os.killpg(os.getpgrp(), signal.SIGTERM)  # `kill 0` in a job script, a batch system's cleanup
    sys.stdout.write("x" * 200_000)
    return 7


def test_a_signal_a_call_sends_to_its_process_group_does_not_end_the_agent(
    connect_options: dict[str, object],
) -> None:
    """The front led the calls' process group: a SIGTERM to the group, which the call itself
    survived, killed the front and with it the connection (a review of the front)."""
    with connect("host1", **connect_options) as remote:  # type: ignore[arg-type]
        seen: list[bytes] = []
        assert remote.invoke(survive_a_sigterm_to_my_group, on_output=lambda s, d: seen.append(d)) == 7
        assert b"".join(seen) == b"x" * 200_000
        assert remote.call(abs, -2) == 2


def exit_zero() -> None:
    os._exit(0)


def test_a_call_that_exits_with_status_0_is_said_to_have_done_so(connect_options: dict[str, object]) -> None:
    """The front took status 0 (and 2) for the agent's own ways of ending and said nothing."""
    from mpish.ssh import AgentDied

    remote = connect("host1", **connect_options)  # type: ignore[arg-type]
    with pytest.raises(AgentDied) as raised:
        remote.call(exit_zero)
    assert "the mpish agent ended: exit status 0" in str(raised.value)
