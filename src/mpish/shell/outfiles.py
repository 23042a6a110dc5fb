"""clush's ``--outdir DIR`` and ``--errdir DIR``: each server's stdout (stderr) of a command,
also written to a file of its own in DIR, byte for byte, while it is shown as usual.

The file is named as the server's lines are labelled (:meth:`ServerNames.prefix
<mpish.shell.names.ServerNames.prefix>`): its host over ssh (``DIR/node1``), its rank
in the MPI shell (``DIR/2``; ``host@2`` with ``--label host`` where a host runs several).
A name that is not a plain file name (``/``, ``..``) is the rank's number. Each command
writes its files anew (``O_TRUNC``), as clush does; every target of the command gets
one, empty if it wrote nothing or never ran. clush creates the directory if it is not
there, and so does mpish, before anything runs
(:func:`~mpish.shell.options.make_directories`). The file is
opened with ``O_NOFOLLOW``: in a directory others can write, a link planted under a
host's name is refused, not followed. clush writes these files only without ``-b``/``-L``
(its direct mode, and decoded as text, a newline added to a last line without one);
mpish writes them in every output mode, as the bytes came.

A file that cannot be written (a full disk, a link planted under its name) is said once, on
stderr, and the command's output goes on being shown: nothing is lost from the screen; mpish
then exits 1 at least (:func:`failed`), as ``cat`` after a write error, so that a script
knows a file is missing. A server that could not run the command has its error written to
its stderr file (clush's holds what ssh printed: ``ssh: Could not resolve hostname ...``).
"""

from __future__ import annotations

import os
from typing import IO

from mpish.wire.text import escape

from .grouping import OutputSink
from .names import Result, ServerNames
from .options import OutputMode
from .protocol import STDERR, STDOUT

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def file_name(names: ServerNames, rank: int) -> str:
    """The file of ``rank``'s output (module doc)."""
    name = names.prefix(rank).removeprefix("@")
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return str(rank)
    return name


def failed(sink: object) -> bool:
    """Whether ``sink`` is a :class:`FileTee` that could not write a file (module doc)."""
    return isinstance(sink, FileTee) and sink.said


def tee(sink: OutputSink, mode: OutputMode, names: ServerNames, err: IO[bytes]) -> OutputSink:
    """``sink`` behind a :class:`FileTee` if ``mode`` has --outdir or --errdir, else itself."""
    if not (mode.outdir or mode.errdir):
        return sink
    return FileTee(sink, names, mode.outdir, mode.errdir, err)


class FileTee:
    """A sink that writes each server's streams to files, then hands everything to ``sink``."""

    def __init__(self, sink: OutputSink, names: ServerNames, outdir: str, errdir: str,
                 err: IO[bytes]) -> None:
        self.sink, self.names, self.err = sink, names, err
        self.directories = {STDOUT: outdir, STDERR: errdir}
        self.files: dict[tuple[int, int], int] = {}  # (rank, stream) -> descriptor (-1: closed)
        self.said = False

    @property
    def streams(self) -> bool:  # console.py: a streaming sink drops what was in flight at a Ctrl-C
        return bool(getattr(self.sink, "streams", False))

    def _file(self, rank: int, stream: int) -> int:
        fd = self.files.get((rank, stream))
        if fd is None:
            path = os.path.join(self.directories[stream], file_name(self.names, rank))
            try:
                fd = os.open(path, FLAGS, 0o666)
            except OSError as exc:
                fd = -1
                self._say(f"cannot write {escape(path)}: {exc.strerror or exc}")
            self.files[rank, stream] = fd
        return fd

    def _say(self, text: str) -> None:
        if not self.said:  # once: the same cause would be said for every server
            self.said = True
            self.err.write(f"mpish: {text} (the output is still shown here)\n".encode())
            self.err.flush()

    def output(self, rank: int, stream: int, data: bytes) -> None:
        if self.directories.get(stream):
            self._write(rank, stream, data)
        self.sink.output(rank, stream, data)

    def _write(self, rank: int, stream: int, data: bytes) -> None:
        fd = self._file(rank, stream)
        view = memoryview(data)
        try:
            while fd >= 0 and view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            self._say(f"cannot write the output of {self.names.prefix(rank)} to "
                      f"{escape(self.directories[stream])}: {exc.strerror or exc}")
            self._close(rank, stream)
            self.files[rank, stream] = -1

    def _close(self, rank: int, stream: int) -> None:
        fd = self.files.get((rank, stream), -1)
        if fd >= 0:
            os.close(fd)

    def done(self, result: Result) -> None:
        if result.error and self.directories[STDERR]:  # it could not run the command: why (as clush's)
            self._write(result.rank, STDERR, f"{result.error}\n".encode(errors="surrogateescape"))
        for stream, directory in self.directories.items():
            if directory:
                self._file(result.rank, stream)  # an empty file for a server that wrote nothing
                self._close(result.rank, stream)
                self.files[result.rank, stream] = -1
        self.sink.done(result)

    def finish(self) -> None:
        for rank, stream in list(self.files):
            self._close(rank, stream)
            self.files[rank, stream] = -1
        self.sink.finish()
