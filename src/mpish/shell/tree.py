"""Directory trees for ``:put -r`` and ``:get -r``: read one side, rebuild it on the other.

Theory of operation
-------------------
A tree travels as the single-file transfer does, within the same credit window: one
:class:`~mpish.shell.protocol.Entry` per directory, file and symbolic link, parents
first; a file's bytes follow its entry as chunks, then a
:class:`~mpish.shell.protocol.FileEnd` with their SHA-256. Only one chunk is in memory
at a time on either side, however large the tree.

Links are copied as links, never followed (as ``cp -r`` and ``tar`` do): the sender
opens every directory and file below the root with ``O_NOFOLLOW`` relative to its
parent's descriptor, so a link (even one swapped in during the walk) sends its text,
never what it points to; only the root, named by the user, is followed. The receiver
trusts no name it is sent: a path must be relative, without ``.``, ``..``, empty parts
or NUL (:func:`split_relative`); every directory below the root is opened with
``O_NOFOLLOW`` relative to its parent's descriptor, so nothing is ever written through
a link, whether the sender made it a moment ago (``a`` -> ``/etc``, then ``a/passwd``)
or another user planted it in the destination; a link is created under a part name and
renamed over its final name. Files are written to part files (:mod:`.transfer`) and
renamed once verified, so an error half-way (a read error on the sender, a full disk)
leaves no partial file under a final name. Modes: as cp without ``-p``, a file or a
directory made here gets the sender's permission bits less the umask (set on a
directory once its entries are written, so a read-only one can be filled); an existing
directory keeps its own. Special files (FIFOs, sockets, devices) are not copied: they are
reported, as scp does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Any

from mpish.report import owner

from . import protocol as p
from .transfer import (
    IN_DIRECTORY,
    PartFile,
    cannot_write,
    changed,
    foreign,
    into_directory,
    new_digest,
    part_name,
)

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO swapped in never blocks


MAX_DEPTH = 128  # directory levels below a tree's root: the receiver holds a descriptor per level


class HostileName(ValueError):
    """A tree entry's path that could leave the tree or is not a plain relative path."""


def split_relative(path: str) -> tuple[str, ...]:
    """The parts of an entry's path ("" is the root); :class:`HostileName` unless every part
    is a plain name (no absolute path, ``.``, ``..``, empty part or NUL)."""
    if path == "":
        return ()
    parts = tuple(path.split("/"))
    if path.startswith("/") or "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise HostileName(f"refused the entry name {path!r}: not a plain relative path")
    if len(parts) > MAX_DEPTH:
        raise HostileName(f"refused {path[:200]!r}...: deeper than {MAX_DEPTH} directory levels")
    return parts


def source_name(path: str) -> str:
    """The name a tree is copied under (``d`` for ``a/d/``); "" for ``.``, ``..`` or ``/``,
    whose copy is the target itself."""
    name = os.path.basename(os.path.normpath(path))
    return "" if name in ("", ".", "..", "/") else name


def tree_destination(target: Path, name: str) -> Path:
    """cp -r's rule: an existing directory receives the tree as ``target/name``, else
    ``target`` becomes the copy."""
    return target / name if name and into_directory(target) else target


def cost(message: object) -> int:
    """What a message of a tree counts for in the credit window."""
    if isinstance(message, p.Chunk):
        return len(message.data)
    return p.ENTRY_COST if isinstance(message, p.Entry) else 0


def open_directory(name: str, parent: int) -> int:
    """Open the directory ``name`` in ``parent`` without following a link (Linux says
    ENOTDIR for a link with O_DIRECTORY: it is told apart here, for the message)."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except NotADirectoryError:
        link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        raise OSError(errno.ELOOP if link else errno.ENOTDIR, "exists and is not a directory") from None


def _own_root(fd: int) -> None:
    """A tree's root that exists already must be yours (or root's): another user who made a
    directory under the copy's predictable name (``--rcopy``'s ``NAME.host`` in /tmp) owned
    the copy's root, read files a 0700 directory had kept private, and could change them (a
    security review). OSError (``fd`` closed) if not."""
    info = os.fstat(fd)
    if foreign(info):
        os.close(fd)
        raise OSError(errno.EPERM, f"it exists and belongs to {owner(info.st_uid)}: not copied into it "
                      "(they could read or change the copy); remove it or choose another destination")


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link (not followed)"
    return exc.strerror or str(exc)


def times(info: os.stat_result) -> tuple[int, int]:
    """(atime, mtime) in ns, as an Entry carries them (for -p)."""
    return info.st_atime_ns, info.st_mtime_ns


class TreeReader:
    """The messages that send the tree at ``root``, one at a time (:meth:`next`).

    A file's bytes are :class:`~mpish.shell.protocol.Chunk` s (raw on channel FILE, either
    way). Raises OSError if the root cannot be read."""

    def __init__(self, root: str | os.PathLike[str], xfer_id: int) -> None:
        self.root = os.fspath(root)
        self.xfer_id = xfer_id
        self.stack: list[tuple[int, str, list[str]]] = []  # (dir fd, relative path, names left)
        self.file: tuple[int, Any, int, str] | None = None  # (fd, digest, size, shown path)
        self.opened: os.stat_result | None = None  # the file's fstat when opened (transfer.changed)
        self.interrupted = False
        self.bytes = 0
        info = os.stat(self.root)  # the root is followed: the user named it
        if stat.S_ISDIR(info.st_mode):
            fd = os.open(self.root, DIR_FLAGS & ~os.O_NOFOLLOW)
            try:
                names = sorted(os.listdir(fd), reverse=True)
            except OSError:
                os.close(fd)
                raise
            self.stack.append((fd, "", names))
            self.pending: p.Entry | None = p.Entry(xfer_id, "", "dir", info.st_mode & 0o777, 0, "",
                                                   *times(info))
        elif stat.S_ISREG(info.st_mode):
            fd = os.open(self.root, FILE_FLAGS & ~os.O_NOFOLLOW)
            self.file, self.opened = (fd, new_digest(True), 0, self.root), os.fstat(fd)
            self.pending = p.Entry(xfer_id, "", "file", info.st_mode & 0o777, info.st_size, "", *times(info))
        else:
            raise OSError(errno.EINVAL, "not a directory or a regular file")

    def shown(self, relative: str) -> str:
        return f"{self.root.rstrip('/')}/{relative}" if relative else self.root

    def next(self, credit: int) -> object | None:
        """The next message (a chunk of at most ``credit`` > 0 bytes); None at the end."""
        assert credit > 0
        if self.pending is not None:
            entry, self.pending = self.pending, None
            return entry
        if self.file is not None:
            return self._file_bytes(credit)
        while self.stack and not self.interrupted:
            fd, relative, names = self.stack[-1]
            if not names:
                os.close(fd)
                self.stack.pop()
                continue
            name = names.pop()
            return self._entry(fd, f"{relative}/{name}" if relative else name, name)
        return None

    def _file_bytes(self, credit: int) -> object | None:
        assert self.file is not None
        fd, digest, size, shown = self.file
        error = "interrupted" if self.interrupted else ""
        if not error:
            try:
                data = os.read(fd, min(p.CHUNK, credit))
            except OSError as exc:
                data, error = b"", f"cannot read {shown}: {_why(exc)}"
            if data:
                digest.update(data)
                self.file = (fd, digest, size + len(data), shown)
                self.bytes += len(data)
                return p.Chunk(data)
            if not error and self.opened is not None:  # written to meanwhile: old and new bytes mixed
                error = changed(fd, self.opened, shown)  # (helper-141: "ok, SHA-256 verified")
        os.close(fd)
        self.file = None
        return p.FileEnd(self.xfer_id, size, digest.digest(), error)

    def _entry(self, parent: int, relative: str, name: str) -> p.Entry:
        shown = self.shown(relative)
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                return p.Entry(self.xfer_id, relative, "link", 0o777, 0, os.readlink(name, dir_fd=parent))
            if stat.S_ISDIR(mode):
                fd = os.open(name, DIR_FLAGS, dir_fd=parent)
                try:
                    names = sorted(os.listdir(fd), reverse=True)
                except OSError:
                    os.close(fd)
                    raise
                self.stack.append((fd, relative, names))
                return p.Entry(self.xfer_id, relative, "dir", mode & 0o777, 0, "", *times(info))
            why = f"{shown}: not a regular file (not copied)"
            special = p.Entry(self.xfer_id, relative, "skip", 0, 0, why)
            if not stat.S_ISREG(mode):
                return special
            fd = os.open(name, FILE_FLAGS, dir_fd=parent)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # swapped for something else since the stat
                os.close(fd)
                return special
        except OSError as exc:
            return p.Entry(self.xfer_id, relative, "skip", 0, 0, f"cannot read {shown}: {_why(exc)}")
        self.file, self.opened = (fd, new_digest(True), 0, shown), info
        return p.Entry(self.xfer_id, relative, "file", info.st_mode & 0o777, info.st_size, "", *times(info))

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                os.close(self.file[0])
            self.file = None
        while self.stack:
            with contextlib.suppress(OSError):
                os.close(self.stack.pop()[0])


class TreeWriter:
    """Rebuilds a tree at ``final`` from its messages without following any link inside it
    (see the module doc); :meth:`finish` gives the verdict ("" when all arrived verified)."""

    def __init__(self, final: Path, umask: int, preserve: bool = False) -> None:
        self.final = final
        self.umask = umask
        self.preserve = preserve  # -p: each entry's times too (and the caller gives umask 0)
        self.times: tuple[int, int] | None = None  # the file being written's (-p)
        # (parts, dir fd, mode to set, times to set once its entries are written)
        self.stack: list[tuple[tuple[str, ...], int, int | None, tuple[int, int] | None]] = []
        self.root_parent = -1  # the final path's parent directory (followed: the user named it)
        self.started = False
        self.broken = False  # the root could not be made: the rest is not even tried
        self.part: PartFile | None = None
        self.in_file = False  # between a file's entry and its FileEnd
        self.mode = 0
        self.errors = 0
        self.first_error = ""
        self.files = self.bytes = 0

    def _error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text

    def shown(self, parts: tuple[str, ...]) -> Path:
        return self.final.joinpath(*parts)

    def entry(self, entry: p.Entry) -> None:
        if self.in_file:  # the previous file's FileEnd never came
            self._error(f"incomplete file before {entry.path!r}")
            self._drop_part()
        first, self.started = not self.started, True
        if self.broken:
            return
        try:
            parts = split_relative(entry.path)
            if not parts and not first:
                raise HostileName("refused a second root entry")
            if first and parts:
                raise HostileName(f"refused the entry {entry.path!r}: the root must come first")
        except HostileName as exc:
            self._error(str(exc))
            self.in_file = entry.kind == "file"
            self.broken = first
            return
        try:
            if not parts:  # the root, from its parent (the final path made absolute: "." has no name)
                root = Path(os.path.abspath(self.final))
                self.root_parent = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                parent, name = self.root_parent, root.name
            else:
                parent, name = self._parent(parts[:-1]), parts[-1]
        except OSError as exc:  # (the root's directory missing: cannot_write says so of it)
            self._error(cannot_write(self.final, exc) if not parts and exc.errno == errno.ENOENT else
                        f"cannot write {self.shown(parts[:-1]) if parts else self.final.parent}: {_why(exc)}")
            self.in_file = entry.kind == "file"
            self.broken = first
            return
        self.in_file = entry.kind == "file"
        try:
            self._make(entry, parts, parent, name)
        except OSError as exc:
            self._drop_part()  # the root in a read-only directory: the same words for every NAME.<host>
            self._error(cannot_write(self.final, exc) if first and exc.errno in IN_DIRECTORY else
                        f"cannot write {self.shown(parts)}: {_why(exc)}")
            self.broken = first

    def _make(self, entry: p.Entry, parts: tuple[str, ...], parent: int, name: str) -> None:
        if entry.kind == "dir":
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
                mode: int | None = entry.mode & 0o777 & ~self.umask
            except FileExistsError:
                mode = None  # an existing directory keeps its mode, as with cp
            fd = open_directory(name, parent)
            if not parts:
                _own_root(fd)
            self.stack.append((parts, fd, mode, self._times(entry)))
        elif entry.kind == "file":
            self.part = PartFile(self.shown(parts), parent, follow=not parts)  # the root: as a named path
            self.mode = entry.mode & 0o777 & ~self.umask
            self.times = self._times(entry)
        elif entry.kind == "link" and parts:
            temporary = part_name(name)
            os.symlink(entry.target, temporary, dir_fd=parent)
            try:
                os.replace(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=parent)
                raise
        elif entry.kind == "skip":
            self._error(entry.target)
        else:
            self._error(f"refused an entry of kind {entry.kind!r} at {self.shown(parts)}")

    def _parent(self, parts: tuple[str, ...]) -> int:
        """The descriptor of the directory ``parts``, opened without following links."""
        if not self.stack:
            raise OSError(errno.ENOENT, "the tree's root is missing")
        while len(self.stack) > 1 and self.stack[-1][0] != parts[: len(self.stack[-1][0])]:
            self._leave()
        while len(self.stack[-1][0]) < len(parts):
            here = parts[: len(self.stack[-1][0]) + 1]
            self.stack.append((here, open_directory(here[-1], self.stack[-1][1]), None, None))
        return self.stack[-1][1]

    def _times(self, entry: p.Entry) -> tuple[int, int] | None:
        return (entry.atime_ns, entry.mtime_ns) if self.preserve else None

    def _leave(self) -> None:
        parts, fd, mode, times = self.stack.pop()
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            if times is not None:  # last: writing its entries changed its mtime
                os.utime(fd, ns=times)
        except OSError as exc:
            self._error(f"cannot set the mode or times of {self.shown(parts)}: {_why(exc)}")
        finally:
            os.close(fd)

    def write(self, data: bytes | memoryview) -> None:
        if self.part is not None:
            try:
                self.part.write(data)
            except OSError as exc:
                self._error(f"cannot write {self.part.final}: {_why(exc)}")
                self._drop_part()
        self.bytes += len(data)

    def end_file(self, end: p.FileEnd) -> None:
        self.in_file = False
        part, self.part = self.part, None
        if part is None:
            return
        if end.error:
            part.discard()
            self._error(end.error)
            return
        error = part.commit(end.sha256, end.size, self.mode, self.times)
        if error:
            self._error(error)
        else:
            self.files += 1

    def _drop_part(self) -> None:
        if self.part is not None:
            self.part.discard()
            self.part = None

    def finish(self, aborted: bool = False) -> str:
        """Close everything (directories get their modes); the verdict: "" or one line."""
        if self.in_file and not aborted:
            self._error("the last file was cut short")
        self.close()
        if aborted:
            return ("stopped on the console's side (interrupted); the files that arrived whole "
                    "before it are kept")
        if not self.started:
            return "nothing was received"
        if not self.errors:
            return ""
        more = f" (and {self.errors - 1} more errors)" if self.errors > 1 else ""
        copied = f"; {self.files} file{'' if self.files == 1 else 's'} copied" if self.files else ""
        return f"{self.first_error}{more}{copied}"  # a FIFO left out: say the rest came

    def close(self) -> None:
        self._drop_part()
        self.in_file = False
        while self.stack:
            self._leave()
        if self.root_parent >= 0:
            os.close(self.root_parent)
            self.root_parent = -1
