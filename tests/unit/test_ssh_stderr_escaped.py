"""ssh's stderr (and the remote's, which ssh passes on) reaches mpish's error messages escaped."""

from __future__ import annotations

import subprocess
import sys
import time

from mpish.transport.ssh import SshProcess

FORGED = "\r\x1b[2K\x1b[1A\x1b[2Kok\nmpish: all ranks verified\n"


def test_remote_stderr_in_the_error_is_escaped() -> None:
    """A remote that writes terminal controls to stderr and exits: the error shows them, never obeys them."""
    script = f"import sys; sys.stderr.write('Permission denied\\r\\n' + {FORGED!r}); sys.exit(255)"
    process = SshProcess("node1", [sys.executable, "-c", script])
    try:
        message = str(process.failure(wait=10.0))
    finally:
        process.close(wait=1.0)
    ours, marker, theirs = message.partition("\n--- ssh stderr ---\n")
    assert marker and "all ranks verified" not in ours  # the remote's lines only below the marker
    assert theirs.startswith("Permission denied\n")  # a line ending stays a line ending
    assert r"\x0d\x1b[2K\x1b[1A\x1b[2Kok" in theirs
    assert "\x1b" not in message and "\r" not in message


def test_a_refused_key_is_an_authentication_error_and_a_transport_one() -> None:
    from mpish.transport.ssh import AuthenticationRefused, classify
    from mpish.wire.errors import AuthenticationError, TransportError

    error = classify("node1", 255, "user@node1: Permission denied (publickey).", greeted=False)
    assert isinstance(error, AuthenticationRefused)
    try:
        raise error
    except AuthenticationError as caught:  # what a caller of mpish.ssh writes for "not allowed in"
        assert isinstance(caught, TransportError) and caught.host == "node1"  # type: ignore[attr-defined]


def test_a_child_of_ssh_holding_its_stderr_never_holds_back_its_end() -> None:
    """A ProxyCommand's child inherits ssh's stderr and can outlive ssh: the stderr reader
    waited for its end, so close() waited 2 s and ``ended()`` stayed False (a host given up at
    a Ctrl-C ended the command 2 s after clush; its place in -f was held as long as the child
    lived). Now what ssh wrote is kept and the pipe is let go once ssh has exited."""
    script = ("import subprocess, sys; subprocess.Popen(['sleep', '61.37']); "  # inherits stderr
              "sys.stderr.write('ssh: connect to host node1: Connection refused\\n'); sys.exit(255)")
    process = SshProcess("node1", [sys.executable, "-c", script])
    try:
        message = str(process.failure(wait=10.0))
        deadline = time.monotonic() + 30
        while not process.ended() and time.monotonic() < deadline:
            time.sleep(0.01)
        sleeper = subprocess.run(["pgrep", "-f", "^sleep 61.37$"], capture_output=True, text=True,
                                 check=False).stdout.split()
        assert process.ended(), "ssh has exited, yet its stderr reader still waits for the child"
        assert "Connection refused" in message
    finally:
        process.close(wait=1.0)
        subprocess.run(["pkill", "-f", "^sleep 61.37$"], check=False)
    assert sleeper, "the child must still hold the pipe when ended() is checked"


def test_a_stderr_without_newlines_is_shown_in_lines_of_bounded_size(capfd: object) -> None:
    """helper-145: the unfinished line of ssh's stderr grew without bound, copied again at
    every read (a \\r spinner, a flood), now that it is shown for every host."""
    from mpish.transport.ssh import LINE_LIMIT

    script = ("import sys, time\nfor _ in range(50):\n"
              "    sys.stderr.write('y' * 2000 + '\\r'); sys.stderr.flush(); time.sleep(0.001)\n")
    process = SshProcess("node1", [sys.executable, "-c", script], show_stderr=True)
    process.greeted = True  # shown as it comes
    try:
        process.failure(wait=10.0)
    finally:
        process.close(wait=1.0)
    shown = capfd.readouterr().err.splitlines()  # type: ignore[attr-defined]
    assert shown and all(line.startswith("node1: ") for line in shown), shown[:3]
    assert max(len(line) for line in shown) <= len("node1: ") + 4 * LINE_LIMIT  # escaped \r: 4 chars
    assert sum(line.count("y") for line in shown) == 50 * 2000  # nothing lost


def test_an_ssh_killed_by_a_signal_is_said_so_not_as_a_negative_exit_status() -> None:
    # helper-144: "exit status -9"
    from mpish.transport.ssh import classify

    assert "(ssh was killed by SIGKILL)" in str(classify("node1", -9, "", greeted=True))
    assert "(ssh was killed by SIGTERM)" in str(classify("node1", -15, "", greeted=False))
    assert "(exit status 3)" in str(classify("node1", 3, "", greeted=False))
