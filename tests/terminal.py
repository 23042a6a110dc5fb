"""The person at the keyboard: drives a console through a real pseudo-terminal (pexpect).

Shared by the MPI console tests (tests/mpi) and the ``mpish ssh`` console tests (tests/ssh).
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pexpect

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # escape sequences the line editor draws with


class Person:
    """Types into the console and reads its screen (escape sequences removed)."""

    def __init__(self, child: pexpect.spawn) -> None:
        self.child = child

    def prompt(self, cwd: str = "") -> str:
        """Wait for the prompt (optionally showing ``cwd``); return what came before it."""
        self.child.expect(re.escape(cwd) + r"#>" if cwd else r"#>")
        time.sleep(0.2)  # a person reads the prompt before typing (the line editor is then ready)
        return ANSI.sub("", self.child.before or "")

    def type(self, line: str) -> None:
        self.child.sendline(line)
        self.child.expect("\r\n")  # prompt_toolkit redraws the accepted line, then a newline

    def run(self, line: str, cwd: str = "") -> str:
        """Type ``line``, wait for the next prompt; return the screen in between."""
        self.type(line)
        return self.prompt(cwd)


@contextmanager
def at_terminal(program: str, args: Sequence[str], env: dict[str, str], cwd: str) -> Iterator[Person]:
    """``program args`` on a 50x250 pseudo-terminal, with a person at it; killed if still running."""
    child = pexpect.spawn(program, list(args), env=env, cwd=cwd, timeout=30,
                          encoding="utf-8", codec_errors="replace", dimensions=(50, 250))
    try:
        yield Person(child)
    finally:
        if child.isalive():  # end it as a closed terminal would: SIGHUP ends the session as exit does
            child.kill(signal.SIGHUP)
            with contextlib.suppress(pexpect.ExceptionPexpect):
                child.expect(pexpect.EOF, timeout=15)
        if child.isalive():  # a SIGKILLed console leaves its MPI launcher behind: only if it must
            child.terminate(force=True)
        child.close()


def shown_after_ctrl_c(child: pexpect.spawn, seconds: float = 90) -> int:
    """Type Ctrl-C, then read the screen at full speed to the program's end (at most
    ``seconds``); the number of bytes shown after the key. The child is closed."""
    child.sendcontrol("c")
    after = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            after += len(child.read_nonblocking(65536, timeout=30))
        except pexpect.EOF:
            break
    child.close()
    return after
