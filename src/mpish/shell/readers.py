"""Where the console reads its lines: prompt_toolkit's prompt on a terminal (line editing,
history in the mpish directory, Tab completion), else plain lines from stdin."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TextIO

from mpish import report

from . import completion

if TYPE_CHECKING:
    from .interactive import Repl


class LineReader(Protocol):
    def read(self, prompt: str, default: str = "") -> str: ...


class PlainReader:
    """Lines from a stream; the prompt is shown only when the stream is a terminal."""

    def __init__(self, stream: IO[str], prompt_to: IO[str] | None) -> None:
        self.stream, self.prompt_to = stream, prompt_to

    def read(self, prompt: str, default: str = "") -> str:
        del default  # not a terminal: nothing was typed ahead
        if self.prompt_to is not None:
            self.prompt_to.write(prompt)
            self.prompt_to.flush()
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


HISTORY_NAME = "history"


def history_file(home: Path) -> Path | None:
    """``<home>/history``, created 0600 if new (commands can hold secrets); None if unusable.

    As bash does with ``~/.bash_history``: a new file is created 0600 (prompt_toolkit
    would create it 0666 less the umask), and an existing file keeps the mode its owner
    gave it. Without the mpish directory, or if the file cannot be created, there is
    no history file (history in memory only).
    """
    if not home.is_dir():
        return None
    path = home / HISTORY_NAME
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return None
    return path


class ToolkitReader:
    """prompt_toolkit's PromptSession: line editing and history on a terminal."""

    def __init__(self, tty: TextIO | None = None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory

        from mpish import keys  # here: cryptography is not needed on mpish ssh -c's way

        self.tty = tty
        history: History = InMemoryHistory()
        path = history_file(keys.mpish_home())
        if path is not None:
            history = FileHistory(str(path))
        options: dict[str, Any] = {}
        if tty is not None:
            from prompt_toolkit.input import create_input
            from prompt_toolkit.output import create_output

            options = {"input": create_input(stdin=tty), "output": create_output(stdout=tty)}
        self.session: Any = PromptSession(history=history, key_bindings=_no_job_control(), **options)

    def read(self, prompt: str, default: str = "") -> str:
        text: str = self.session.prompt(prompt, default=default)
        return text

    def complete_with(self, repl: Repl) -> None:
        """Tab completion (on Tab only: a remote path costs a round trip)."""
        completion.install(self.session, repl)


NO_JOB_CONTROL = "job control is not available at the console; use Ctrl-C"


def _no_job_control() -> Any:
    """Ctrl-Z at the prompt says why it does nothing (prompt_toolkit would insert a ^Z)."""
    from prompt_toolkit.application import run_in_terminal
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("c-z")
    def _(event: Any) -> None:
        run_in_terminal(lambda: report.say(NO_JOB_CONTROL, event.app.output.stdout))

    return bindings


def make_reader(under_launcher: bool) -> LineReader:
    if sys.stdin.isatty() and sys.stdout.isatty():
        return ToolkitReader()
    if under_launcher:
        with contextlib.suppress(OSError):
            tty: TextIO = open("/dev/tty", "r+")  # noqa: SIM115 - lives as long as the console
            if tty.isatty():
                return ToolkitReader(tty)
            tty.close()
    # Under a launcher without a usable /dev/tty, stdin is a pipe from mpiexec but a person
    # is usually typing at the launcher's terminal: show the prompt on stderr all the same.
    return PlainReader(sys.stdin, sys.stderr if sys.stdin.isatty() or under_launcher else None)
