"""How mpish's own lines look on the console: colours (``--color``, NO_COLOR), headers,
labels, and the attribute reset that keeps a rank's escape sequences out of them."""

from __future__ import annotations

import os
from typing import IO, Any

from mpish.wire.message import Frozen, frozen

__all__ = ["COLOR_CHOICES", "Style", "report_error", "set_color"]


COLOR_CHOICES = ("auto", "always", "never")
_color = {"choice": "auto"}


def set_color(choice: str) -> None:
    """``--color=auto|always|never`` (clush's spelling) for every Style made afterwards."""
    if choice not in COLOR_CHOICES:
        raise ValueError(f"--color is one of {', '.join(COLOR_CHOICES)}")
    _color["choice"] = choice


@frozen
class Style(Frozen):
    """Terminal styling: ``always``, ``never``, or (``auto``) only when the stream is a
    terminal and NO_COLOR is not set (https://no-color.org; an explicit ``always`` wins). At a
    terminal headers, mpish's lines and labels after a line with an escape sequence start with
    a reset: a rank's unreset ESC[8m (conceal) hid the next header (security review)."""

    color: bool = False
    reset: bool = False

    @classmethod
    def for_stream(cls, stream: Any) -> Style:
        isatty = getattr(stream, "isatty", None)
        tty = bool(isatty and isatty())
        choice = _color["choice"]
        if choice != "auto":
            return cls(color=choice == "always", reset=tty)
        return cls(color=tty and not os.environ.get("NO_COLOR"), reset=tty)

    def paint(self, text: str, code: str, after_escape: bool = True) -> str:
        lead = "\x1b[0m" if after_escape and (self.reset or self.color) else ""
        return f"{lead}\x1b[{code}m{text}\x1b[0m" if self.color else lead + text

    def header(self, text: str, after_escape: bool = False) -> str:
        """A group's header; reset first only after output that held an escape sequence (Open
        MPI's mpirun gives rank 0's stdout a terminal of its own: `ESC[0m` landed in pipes)."""
        return self.paint(text, "1;36", after_escape)

    def error(self, text: str) -> str:
        return self.paint(text, "1;31")

    def prefix(self, text: str, after_escape: bool = False) -> str:  # after a line with an ESC
        painted = f"\x1b[33m{text}\x1b[0m" if self.color else text
        return "\x1b[0m" + painted if after_escape and (self.reset or self.color) else painted


def report_error(err: IO[bytes], host: str, error: str, style: Style) -> None:
    """``host: <why>`` on stderr, as ssh says why it could not run a command."""
    err.write(style.error(f"{host}: {error}").encode() + b"\n")
    err.flush()
