"""The console's Repl as both shells run it: the status a built-in leaves, and a ``-C`` script
that ends at a built-in that failed to say where its later lines run.

Theory of operation
-------------------
:class:`~mpish.shell.interactive.Repl` (at the module line limit) reads lines and runs them;
:class:`ShellRepl` wraps its ``handle`` for built-in lines (``:name``, or ``@targets :name``):

- A built-in that succeeds leaves the status 0, as bash's ``cd``: ``false`` then ``:lcd /tmp``
  ended 0 but ``false`` then ``:targets @1`` ended 1 (only some built-ins set it). One that
  computes a status (``:put``, ``:get``, ``:attach``, ``:reconnect``) sets its own after this.
  An unknown built-in (``:taregts``) is an error, status 1, as a failing one is; it said so and
  left the status as it was.
- In a ``-C`` script (``script``: its path, ``-`` for stdin), a built-in of :data:`WHERE`
  that fails (``:targets @5``: no such rank; ``:lcd`` to a missing directory), or an unknown
  one (maybe a misspelt ``:targets``), ends the script with status 2 and one line naming the
  line; the rest is not run. The script went on with the old targets, so a typo in
  ``:targets`` followed by ``rm -rf`` ran it everywhere. At a terminal (or on a pipe without
  ``-C``) the console only reports it: a person sees the error and types on. Other built-ins
  that fail (``:timeout x``, ``:reconnect`` of a connected host, a copy) change no line's place:
  status 1, the script goes on, as a failed command does.

Line numbers count the reader's lines (:class:`CountedReader`); a built-in is one line.
"""

from __future__ import annotations

from typing import Any

from mpish.wire.errors import MpishError

from .interactive import Repl, builtin_name
from .readers import LineReader

# the built-ins that say where later lines run: on which targets, from and to which local directory
WHERE = ("targets", "lcd")
SCRIPT_STOPPED = 2  # the status of a -C script ended by a failed built-in of WHERE


class ScriptStopped(Exception):
    """A ``-C`` script's built-in of :data:`WHERE` failed: the rest of the script is not run."""


class CountedReader:
    """A reader's lines, counted (``number``: the line read last)."""

    def __init__(self, reader: LineReader) -> None:
        self.reader, self.number = reader, 0

    def read(self, prompt: str, default: str = "") -> str:
        line = self.reader.read(prompt, default)
        self.number += 1
        return line


class ShellRepl(Repl):
    """The Repl with built-in statuses and ``-C`` scripts as the module doc says."""

    def __init__(self, *args: Any, script: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script = script
        self.counted = None if script is None or self.reader is None else CountedReader(self.reader)
        if self.counted is not None:
            self.reader = self.counted

    def loop(self) -> int:
        try:
            return super().loop()
        except ScriptStopped:
            return SCRIPT_STOPPED

    def handle(self, line: str) -> None:
        command = line.partition(" ")[2].lstrip() if line.startswith("@") else line
        name = builtin_name(command)
        if not name:
            super().handle(line)
            return
        known = getattr(self, f"cmd_{name}", None) is not None
        try:
            if not known:
                raise ValueError(f"unknown built-in :{name} (see :help)")
            self.last_status = 0  # as bash's cd; :put, :get, :attach, :reconnect set their own
            super().handle(line)
        except (MpishError, OSError, ValueError) as exc:
            if self.script is None or (known and name not in WHERE):
                raise
            self.report.say(str(exc))
            where = "stdin" if self.script == "-" else self.script
            number = f"line {self.counted.number}" if self.counted is not None else "a line"
            self.report.say(f"{where}: {number} (:{name}) failed: the rest of the script was not run")
            raise ScriptStopped from None
