"""shell/launch_env.py: the embedded console's environment, sent to its spawned servers in
Environ messages (protocol 8), is taken by a server byte for byte (no MPI here)."""

from __future__ import annotations

import subprocess
import sys

from mpish.shell import protocol as p
from mpish.shell.launch_env import environ_messages

ADOPT = ("import os, sys; from mpish.shell.launch_env import adopt_console_environ; "
         "adopt_console_environ(sys.stdin.buffer.read()); "
         "sys.stdout.buffer.write(b''.join(k + b'=' + v + b'\\0' for k, v in os.environb.items()))")


def _adopted(environ: dict[bytes, bytes], launcher: dict[str, str]) -> dict[bytes, bytes]:
    """What a server's environment is once it took ``environ`` over the ``launcher``'s."""
    messages = [p.CODEC.decode(p.CODEC.encode(message)) for message in environ_messages(environ)]
    assert all(isinstance(message, p.Environ) for message in messages)
    data = b"".join(message.data for message in messages if isinstance(message, p.Environ))
    result = subprocess.run([sys.executable, "-c", ADOPT], input=data, env=launcher, capture_output=True,
                            timeout=30, check=True)
    return dict(entry.split(b"=", 1) for entry in result.stdout.split(b"\0")[:-1])


def test_a_server_takes_every_variable_of_the_console_as_it_is_over_the_launchers() -> None:
    console = {b"MY_TOKEN": b"s3cret", b"ODD": b"two  spaces\n\ttab 'q' \"d\" $HOME =x \xc3\xbc\xe2\x9c\x93",
               b"NOT_UTF8": b"\xff\xfe", b"EMPTY": b"", b"PATH": b"/first:/usr/bin:/bin:/last",
               b"HOME": b"/home/console"}
    launcher = {"PATH": "/usr/bin", "HOME": "/home/console", "PMI_RANK": "1"}
    seen = _adopted(console, launcher)
    assert {name: seen.get(name) for name in console} == console
    assert seen[b"PMI_RANK"] == b"1"  # the launcher's own variables stay (MPI's, not the user's)


def test_the_variables_set_for_the_launch_alone_are_dropped_again() -> None:
    console = {b"UCX_NET_DEVICES": b"lo", b"FI_TCP_IFACE": b"lo", b"MPISH_SET_FOR_LAUNCH": b"UCX_NET_DEVICES",
               b"KEPT": b"1"}
    seen = _adopted(console, {})
    assert b"UCX_NET_DEVICES" not in seen and b"MPISH_SET_FOR_LAUNCH" not in seen
    assert seen[b"FI_TCP_IFACE"] == b"lo"  # the user's own (not named as set for the launch)
    assert seen[b"KEPT"] == b"1"


def test_a_large_environment_goes_in_pieces_that_each_fit_a_message() -> None:
    console = {f"BIG_{i}".encode(): b"x" * 100_000 for i in range(30)}  # ~3 MB: seven pieces
    messages = environ_messages(console)
    assert len(messages) > 1 and [m.last for m in messages] == [False] * (len(messages) - 1) + [True]
    assert all(len(p.CODEC.encode(m)) <= p.CODEC.max_bytes for m in messages)
    assert _adopted(console, {}).items() >= console.items()


def test_an_empty_environment_is_one_last_message() -> None:
    assert environ_messages({}) == [p.Environ(b"", True)]
