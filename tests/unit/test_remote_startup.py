"""What the shipped ``mpish ssh`` server costs at start-up: it loads only what a command needs.

Over ssh a server lives for one session, often for one ``true`` on each of many hosts, so
its start-up CPU is the bulk of its work (clush's remote side is ``sh -c true``).
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest

from mpish.shell import protocol as p
from mpish.shell.ssh_session import REMOTE_ALSO
from mpish.transport import ship
from mpish.transport.pipe import MAX_FRAME, PipeLink
from mpish.wire.events import Message
from mpish.wire.framing import FrameDecoder
from mpish.wire.message import Frozen, frozen

ENTRY = "mpish.shell.remote"
# Modules a `true` never needs: transfers' hashes and random names, the host name's socket
# module (os.uname() gives it), OpenSSL's bindings; dataclasses (with inspect, ast, dis) and
# the code it generates for each class.
NOT_AT_START = ("socket", "secrets", "hashlib", "_hashlib", "hmac", "dataclasses", "inspect", "ast")
# Nor for a whole session that runs `true`: logging (with traceback, linecache, tokenize) while
# nothing is logged; linecache for the shipped sources (the finder gives them to a traceback);
# tempfile (random) and shutil (bz2, lzma, fnmatch) for the state directory and bash's path;
# ctypes, for glibc's malloc tuning, until bulk data flows; pathlib (urllib.parse, ipaddress)
# and the transfer modules until a put or get.
NOT_FOR_TRUE = ("logging", "traceback", "linecache", "tokenize", "tempfile", "random", "shutil", "bz2",
                "lzma", "ctypes", "pathlib", "mpish.shell.server.transfer_files", "mpish.shell.transfer",
                "mpish.shell.tree")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def modules_loaded_by_the_shipped_server() -> set[str]:
    """Start the shipped server as ssh does (payload on stdin, then end of input) under
    ``-X importtime``: the names of every module it imported before it ended."""
    payload = ship.payload.__wrapped__(ENTRY)  # type: ignore[attr-defined]
    argv = ship.command([sys.executable, "-I", "-X", "importtime"], ("1", "2"))[1:]
    done = subprocess.run(argv, input=payload, capture_output=True, timeout=60, check=False)
    lines = done.stderr.decode(errors="replace").splitlines()
    names = {line.rpartition("|")[2].strip() for line in lines if line.startswith("import time:")}
    assert "mpish.shell.server.loop" in names, done.stderr[-2000:]  # it did start
    return names


def test_the_shipped_server_loads_no_socket_hashes_random_names_or_dataclasses_to_start(cache: Path) -> None:
    loaded = modules_loaded_by_the_shipped_server()
    assert sorted(loaded.intersection(NOT_AT_START)) == []


def modules_loaded_by_a_session_running_true() -> tuple[set[str], list[object]]:
    """Run the shipped server as ``mpish ssh -c true`` does, under ``-X importtime``: the
    payload, the Run right behind it, the answers read, then the close record and the
    hang-up. The modules it imported in all, and the messages it sent."""
    payload = ship.payload.__wrapped__(ENTRY, also=REMOTE_ALSO)  # type: ignore[attr-defined]
    argv = ship.command([sys.executable, "-I", "-X", "importtime"], ("1", "2"))[1:]
    server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert server.stdin is not None and server.stdout is not None
    frames = FrameDecoder(max_frame=MAX_FRAME, after=ship.START_MARK)
    link = PipeLink(os.dup(server.stdout.fileno()), os.dup(server.stdin.fileno()), rank=0, size=2, peer=1,
                    frames=frames)
    channel = link.plain_channel()
    messages: list[object] = []
    try:
        link.send_raw(payload)
        link.send_all(1, channel.send(p.CODEC.encode(p.Run(1, "true", 0.0, False))))
        deadline = time.monotonic() + 60
        while not any(isinstance(m, p.Done) for m in messages) and time.monotonic() < deadline:
            link.progress()
            link.wait(0.5)
            for _, record in link.drain():
                messages += [p.CODEC.decode(event.data) for event in channel.receive_record(record)
                             if isinstance(event, Message) and event.channel == 0]
        link.send_all(1, channel.close())
        link.flush()
    finally:
        link.close()
        server.stdin.close()
        server.stdout.close()
        assert server.stderr is not None
        err = server.stderr.read()  # to its end: the server has exited
        server.stderr.close()
        server.wait(timeout=60)
    names = {line.rpartition("|")[2].strip() for line in err.decode(errors="replace").splitlines()
             if line.startswith("import time:")}
    return names, messages


def test_a_shipped_server_running_true_loads_no_logging_tempfile_ctypes_or_pathlib(cache: Path) -> None:
    loaded, messages = modules_loaded_by_a_session_running_true()
    assert [type(m).__name__ for m in messages] == ["Hello", "Done"]
    done = messages[1]
    assert isinstance(done, p.Done) and (done.cmd_id, done.exit, done.error) == (1, 0, "")
    assert "mpish.shell.server.loop" in loaded
    assert sorted(loaded.intersection(NOT_FOR_TRUE)) == []


def test_protocol_messages_share_methods_written_once_instead_of_generated_code() -> None:
    for cls in p.CODEC.types().values():
        assert issubclass(cls, Frozen), cls
        for method in ("__init__", "__eq__", "__hash__", "__repr__", "__setattr__"):
            assert getattr(cls, method) is getattr(Frozen, method), (cls, method)
        assert not hasattr(cls, "__dataclass_fields__")


def test_a_frozen_message_behaves_as_the_frozen_dataclass_did() -> None:
    run = p.Run(7, "true", 0.0, False)
    assert run == p.Run(cmd_id=7, command="true", timeout=0.0, stdin=False)
    assert run != p.Run(8, "true", 0.0, False) and p.Credit(3) != p.Interrupt(3)
    assert hash(run) == hash(p.Run(7, "true", 0.0, False))
    assert repr(run) == "Run(cmd_id=7, command='true', timeout=0.0, stdin=False)"
    assert not hasattr(run, "__dict__")
    assert pickle.loads(pickle.dumps(run)) == run and copy.copy(run) == run
    with pytest.raises(AttributeError, match="frozen"):
        run.cmd_id = 8  # type: ignore[misc]
    match run:
        case p.Run(cmd_id, command):
            assert (cmd_id, command) == (7, "true")
        case _:
            pytest.fail("no positional match")
    with pytest.raises(TypeError, match="missing arguments: stdin"):
        p.Run(7, "true", 0.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        p.Credit(nbytes=1, nope=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        p.Credit(1, nbytes=1)  # type: ignore[misc]


def test_every_protocol_message_round_trips_through_the_codec() -> None:
    samples: dict[object, object] = {int: 5, float: 1.5, bool: True, str: "s", bytes: b"b"}
    for cls in p.CODEC.types().values():
        hints = typing.get_type_hints(cls)  # Annotated[str, MaxLen(n)] is str here
        message = cls(*[samples[hints[name]] for name in cls.__match_args__])
        assert p.CODEC.decode(p.CODEC.encode(message)) == message


def test_a_frozen_class_takes_defaults_and_generic_bases_as_a_dataclass_does() -> None:
    from mpish.shell.conversation import Step
    from mpish.shell.server.jobs import Ended

    ended = Ended(3, 1, 0, 0.5, False, note="restarted")
    assert (ended.error, ended.note, ended.restart) == ("", "restarted", False)
    assert ended == Ended(3, 1, 0, 0.5, False, "", "restarted", False)
    step = Step("run", 1, "_run")
    assert step == Step("run", 1, "_run") and step.method == "_run"
    with pytest.raises(TypeError, match="without a default follows"):

        @frozen
        class Wrong(Frozen):
            first: int = 0
            second: int


def test_the_modules_a_server_imports_at_its_first_transfer_are_shipped_too() -> None:
    shipped = set(ship.closure((ENTRY, *REMOTE_ALSO)))
    assert {"mpish.shell.server.transfer_files", "mpish.shell.transfer", "mpish.shell.tree"} <= shipped
