"""What mpish tells its user, and its diagnostics: the one place that formats both.

Two channels, kept apart:

* **Messages for the user** (a refused rank, a lost host, a new key, a bad setting): one
  line ``mpish: TEXT`` on stderr; a text of several lines starts on a line of its own.
  :class:`Reporter` writes them (``who`` names the speaker, e.g. ``"rank 3: "``),
  :func:`message` formats one. Front ends and session modules write through here, so
  the prefix and the flushing are written once.
* **Diagnostics** for whoever debugs mpish: the standard :mod:`logging` module, one
  logger per module (``Diagnostics(__name__)``, all under ``mpish``; a module also run
  with ``python -m`` spells its name, as ``__name__`` is then ``__main__``). Silent
  unless asked: ``--debug`` (``mpish``, ``mpish ssh``) or ``MPISH_DEBUG=1`` makes
  :func:`setup_logging` send every record, tagged with the process and the module, to
  stderr. ``--debug`` sets the variable, so the processes mpish starts (spawned shell
  servers, the orphan watcher) inherit it and log too.

Library code (``calls/``, ``comm/``, ``keys/``, ``wire/``, ``transport/``) never writes
to the terminal: it raises, or logs. Nothing here imports the rest of mpish.

:mod:`logging` itself is imported only once a record may go somewhere (:class:`Diagnostics`):
with :mod:`traceback`, :mod:`linecache` and :mod:`tokenize` it costs ~3-5 ms of CPU, paid by
the shipped ``mpish ssh`` server on every host at every start, where a ``true`` logs nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import logging

PROG = "mpish"
DEBUG_VARIABLE = "MPISH_DEBUG"  # "1": diagnostics on stderr, in this process and its children
DEBUG_FLAG = "--debug"  # the same for a remote side over ssh (which passes no variable), on its command line
LOG_FORMAT = "mpish[%(process)d] %(name)s: %(message)s"



def logger(name: str) -> logging.Logger:
    """The :mod:`logging` logger ``name`` (imports logging); mpish's own records are
    silent until :func:`setup_logging` (a NullHandler on ``mpish``: no ``lastResort`` output)."""
    import logging

    root = logging.getLogger(PROG)
    if not any(isinstance(handler, logging.NullHandler) for handler in root.handlers):
        root.addHandler(logging.NullHandler())
    return logging.getLogger(name)


class Diagnostics:
    """One module's diagnostics: its :mod:`logging` logger, looked up at the first record
    and only if logging is loaded at all.

    While nothing has imported logging, nothing can have configured a handler, and mpish's
    NullHandler (:func:`logger`) would drop the record: so the record is dropped here, and
    a process that never logs (the shipped ssh server running ``true``) never loads logging.
    """

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def _target(self) -> logging.Logger | None:
        if self._logger is None and "logging" in sys.modules:
            self._logger = logger(self.name)
        return self._logger

    def debug(self, msg: str, *args: object) -> None:
        target = self._target()
        if target is not None:
            target.debug(msg, *args, stacklevel=2)

    def info(self, msg: str, *args: object) -> None:
        target = self._target()
        if target is not None:
            target.info(msg, *args, stacklevel=2)

    def warning(self, msg: str, *args: object) -> None:
        target = self._target()
        if target is not None:
            target.warning(msg, *args, stacklevel=2)


def message(text: str, prog: str = PROG) -> str:
    """``"mpish: text"``; a multi-line text (a banner, a remote traceback) starts on its own line."""
    separator = "\n" if "\n" in text else " "
    return f"{prog}:{separator}{text}"


class Reporter:
    """Writes messages for the user, ``mpish: <who><text>``, one per line, flushed at once.

    ``stream`` defaults to whatever ``sys.stderr`` is when a message is written (so a
    test's capture, or a redirected stderr, sees it); ``paint`` styles each line (the
    console's red on a terminal).
    """

    def __init__(self, stream: IO[str] | None = None, *, who: str = "", prog: str = PROG,
                 paint: Callable[[str], str] | None = None) -> None:
        self._stream = stream
        self.who = who
        self.prog = prog
        self.paint = paint

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    def format(self, text: str) -> str:
        line = message(self.who + text, self.prog)
        return self.paint(line) if self.paint is not None else line

    def say(self, text: str) -> None:
        """Write one message for the user."""
        stream = self.stream
        with contextlib.suppress(AttributeError, OSError, ValueError):  # a full or closed stderr
            stream.write(self.format(text) + "\n")
            stream.flush()


def say(text: str, stream: IO[str] | None = None) -> None:
    """Write one message for the user: ``mpish: text`` on ``stream`` (default: stderr)."""
    Reporter(stream).say(text)


def debugging() -> bool:
    """True when diagnostics were asked for (``MPISH_DEBUG`` set to anything but ``0``)."""
    return os.environ.get(DEBUG_VARIABLE, "0") not in ("", "0")


def setup_logging(debug: bool | None = None) -> bool:
    """Send mpish's diagnostics to stderr if asked; returns whether they are on.

    ``debug=True`` turns them on here and, through :data:`DEBUG_VARIABLE`, in every
    process started from now on; ``None`` follows the variable (an entry point of a
    process mpish started). Calling it twice adds no second handler.
    """
    if debug:
        os.environ[DEBUG_VARIABLE] = "1"
    if not (debug or (debug is None and debugging())):
        return False
    import logging

    _log = logger(PROG)
    if not any(getattr(handler, "mpish_debug", False) for handler in _log.handlers):
        handler = logging.StreamHandler()  # sys.stderr when a record is written
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.mpish_debug = True  # type: ignore[attr-defined]
        _log.addHandler(handler)
    _log.setLevel(logging.DEBUG)
    return True


def open_standard_streams() -> None:
    """Descriptors 0, 1 and 2 closed by the caller (``mpish -c CMD >&-``) become /dev/null, as
    OpenSSH's ``sanitise_stdfd`` does: else the first file or socket mpish (or MPI) opens would
    take the number, and output would go into it; and Python, which left ``sys.stdout`` None,
    ended in a traceback. What goes to a closed stdout is dropped, as with ``ssh host CMD >&-``."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:  # the lowest free number: this one, unless a lower one is closed too
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115
    # Lines read (the console's, -C -) and text written may hold bytes that are not UTF-8, as
    # Python's OS interface spells them ("\udcff" for a file name's byte 0xFF): they go through
    # as those bytes, as with ssh and clush (a command of such a byte ended in a traceback).
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, io.UnsupportedOperation):
                stream.reconfigure(errors="surrogateescape")


def owner(uid: int) -> str:
    """A user for mpish's messages: ``uid 1001 (mallory)``, or ``uid 1001`` if it has no name."""
    import pwd

    with contextlib.suppress(KeyError):
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    return f"uid {uid}"
