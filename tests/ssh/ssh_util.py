"""Helpers for the ``mpish ssh`` tests: run it against the test sshd, this venv's Python on the hosts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sshd_server import SshServer

from terminal import Person, at_terminal

SRC = Path(__file__).resolve().parents[2] / "src"


@contextmanager
def console_at_terminal(
    sshd: SshServer, hosts: str, cwd: Path, python: str = sys.executable
) -> Iterator[Person]:
    """A person at the console of ``mpish ssh HOSTS`` (the test sshd) on a pseudo-terminal."""
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1", TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    argv = ["-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python", python, hosts]
    with at_terminal(sys.executable, argv, env, str(cwd)) as person:
        yield person


def mpish_ssh(
    sshd: SshServer, *args: str, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``mpish ssh`` against the test sshd, with this venv's Python on the "remote"."""
    argv = [
        sys.executable,
        "-m",
        "mpish",
        "ssh",
        "-o",
        " ".join(sshd.ssh_options),
        "--python",
        sys.executable,
    ]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False, input=input
    )
