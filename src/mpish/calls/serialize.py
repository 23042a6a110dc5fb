"""Bodies of calls and results: cloudpickle or msgpack streams cut into chunks.

Why pickle is acceptable here: the only writer of the agent's stdin is the ssh session
of the user who logged in, who can run any code on that host anyway (THREAT-MODEL "Who
is trusted": the pipes of an ssh session belong to the authenticated user). Pickle is
used only for user objects, never for protocol messages (those are msgpack, checked by
:mod:`mpish.calls.messages`). Users who want no code to travel use the msgpack encoding
(``data_only=True`` / ``call_data``): then the agent never unpickles.

Large objects: the pickler writes into a :class:`BodyWriter`, which sends 4 MiB chunks as
they fill; CPython's C pickler hands a large ``bytes``/``bytearray``/PickleBuffer payload
(NumPy arrays use PickleBuffer with protocol 5) to ``write()`` without copying it, and the
writer slices it into chunk frames. On the receiving side ``pickle.load`` reads from a
:class:`BodyReader`, whose ``readinto`` copies each chunk straight into the object being
built (the C unpickler allocates a large ``bytes`` once and reads into it). So a 256 MiB
object costs its own size plus a few chunks on each side, never a second copy or one
giant frame.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

import msgpack

from mpish.wire.errors import RemoteError, RemoteProtocolError

from .messages import CHUNK_SIZE, MAX_TEXT, Chunk, End, Message

MAX_DATA_BODY = 1024 * 1024 * 1024  # largest msgpack body (data-only mode) accepted
DATA_EXPANSION = 16  # decoded objects may take this many bytes per body byte ...
DATA_ALLOWANCE = 32 * 1024 * 1024  # ... plus this much, so small results always load ...
MAX_DATA_MEMORY = 2 * 1024 * 1024 * 1024  # ... and never more than this in all


class BodyAborted(Exception):
    """The sender abandoned the body half way (an End with aborted=True)."""


class DataLimitExceeded(ValueError):
    """A msgpack body is larger, longer, deeper or expands to more memory than allowed."""


class BodyWriter:
    """A write-only file that turns a byte stream into ``header [Chunk* End]`` frames.

    ``send_header(body)`` is called once: with the whole body when it fits in one chunk
    (one frame per call for small objects), or with None before the first Chunk.
    """

    def __init__(self, send_header: Callable[[bytes | None], None], send: Callable[[Message], None]) -> None:
        self._send_header = send_header
        self._send = send
        self._pending = bytearray()
        self.started = False
        self.finished = False

    def write(self, data: bytes | bytearray | memoryview | pickle.PickleBuffer) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if len(self._pending) + size <= CHUNK_SIZE:
            self._pending += view
            return size
        self._start()
        if self._pending:
            take = CHUNK_SIZE - len(self._pending)
            self._pending += view[:take]
            view = view[take:]
            self._send(Chunk(self._pending))
            self._pending = bytearray()
        while len(view) > CHUNK_SIZE:
            self._send(Chunk(view[:CHUNK_SIZE]))
            view = view[CHUNK_SIZE:]
        self._pending += view
        return size

    def _start(self) -> None:
        if not self.started:
            self.started = True
            self._send_header(None)

    def close(self) -> None:
        """Send what is left: the inline header, or the last chunk and End."""
        self.finished = True
        if not self.started:
            self.started = True
            self._send_header(bytes(self._pending))
        else:
            if self._pending:
                self._send(Chunk(self._pending))
            self._send(End(False, ""))
        self._pending = bytearray()

    def abort(self, reason: str) -> None:
        """End a started body as abandoned; the receiver drops it."""
        self.finished = True
        self._pending = bytearray()
        if self.started:
            self._send(End(True, reason[:MAX_TEXT]))


class BodyReader:
    """A read-only file over the ``Chunk* End`` frames of a streamed body."""

    def __init__(self, next_message: Callable[[], Message]) -> None:
        self._next = next_message
        self._view = memoryview(b"")
        self.done = False

    def _fill(self) -> bool:
        while not self._view:
            if self.done:
                return False
            message = self._next()
            if isinstance(message, Chunk):
                self._view = memoryview(message.data)
            elif isinstance(message, End):
                self.done = True
                if message.aborted:
                    raise BodyAborted(message.reason)
            else:
                raise RemoteProtocolError(f"{type(message).__name__} inside a streamed body")
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        out = memoryview(buffer).cast("B")
        n = 0
        while n < len(out) and self._fill():
            k = min(len(out) - n, len(self._view))
            out[n : n + k] = self._view[:k]
            self._view = self._view[k:]
            n += k
        return n

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = []
            while self._fill():
                parts.append(bytes(self._view))
                self._view = memoryview(b"")
            return b"".join(parts)
        out = bytearray(size)
        n = self.readinto(out)
        del out[n:]
        return bytes(out)

    def readline(self) -> bytes:
        line = bytearray()
        while self._fill():
            view = self._view
            index = bytes(view[: min(len(view), 65536)]).find(b"\n")
            if index >= 0:
                line += view[: index + 1]
                self._view = view[index + 1 :]
                return bytes(line)
            take = min(len(view), 65536)
            line += view[:take]
            self._view = view[take:]
        return bytes(line)

    def finish(self) -> None:
        """Consume the rest of the body up to End (after the object was loaded)."""
        while self._fill():
            self._view = memoryview(b"")


# --- pickle and msgpack bodies ----------------------------------------------------------


PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})
PLAIN_MAX_ITEMS = 64  # containers larger than this go through cloudpickle
PLAIN_MAX_BYTES = 64 * 1024  # as do long strings (they stream in chunks there)
PLAIN_MAX_DEPTH = 4


def _by_reference(fn: object) -> bool:
    """True if plain pickle would store ``fn`` by name exactly as cloudpickle does.

    A builtin function of a module (``abs``, ``os.getpid``), or a Python function that
    cloudpickle itself would pickle by reference (importable, not ``__main__``, its module
    not registered for pickling by value).
    """
    if isinstance(fn, types.BuiltinFunctionType):
        owner = fn.__self__
        return isinstance(owner, types.ModuleType) and owner.__name__ != "__main__"
    if isinstance(fn, types.FunctionType):
        cloudpickle = sys.modules.get("cloudpickle")
        check = getattr(getattr(cloudpickle, "cloudpickle", None), "_should_pickle_by_reference", None)
        if check is None:
            return False
        try:
            return bool(check(fn))
        except Exception:
            return False
    return False


def _plain(obj: object, depth: int = 0) -> bool:
    """Small plain data (and functions stored by name): the C pickler gives the same bytes
    as cloudpickle would, several times faster (no CloudPickler to build per call)."""
    kind = type(obj)
    if kind in PLAIN_TYPES:
        return kind not in (str, bytes) or len(obj) <= PLAIN_MAX_BYTES  # type: ignore[arg-type]
    if depth >= PLAIN_MAX_DEPTH:
        return False
    if kind is tuple or kind is list:
        items: Any = obj
        if len(items) > PLAIN_MAX_ITEMS:
            return False
        for item in items:  # noqa: SIM110 - a loop, not all(generator): on every call's path
            if not _plain(item, depth + 1):
                return False
        return True
    if kind is dict:
        entries: Any = obj
        if len(entries) > PLAIN_MAX_ITEMS:
            return False
        for key, value in entries.items():
            if type(key) is not str or not _plain(value, depth + 1):
                return False
        return True
    return _by_reference(obj)


class CodeAcrossVersions(pickle.PicklingError):
    """Python code sent by value to a Python of another X.Y version (its bytecode would not run)."""


def same_minor(version: str) -> bool:
    """True if ``version`` ('3.12.1', another side's Python) is this Python's X.Y; True too
    when it cannot be read (an agent that did not say)."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) == sys.version_info[:2]


@functools.cache  # one class per version met, not one per call
def _by_value_refused(peer_python: str) -> type:
    """A CloudPickler that refuses code objects (what functions and classes sent by value
    carry): their bytecode is only valid on the same Python X.Y (3.10 raised a TypeError
    building it, 3.13 crashed with a segmentation fault), and names of functions do travel."""
    import cloudpickle

    here = "{}.{}".format(*sys.version_info[:2])

    class Refusing(cloudpickle.CloudPickler):  # type: ignore[misc]
        def reducer_override(self, obj: object) -> Any:
            if isinstance(obj, types.CodeType):
                raise CodeAcrossVersions(
                    f"{obj.co_name!r} would travel as Python bytecode (a lambda, closure, nested "
                    f"function, or a function or class of __main__ goes by value), and the two "
                    f"sides run different Pythons ({here} here, {peer_python} there): bytecode only "
                    f"runs on the same X.Y. Send a function importable on both sides (it goes by "
                    f"name: put it in a module installed there), use call_data, or connect with "
                    f"python= a Python {here} on that host")
            return super().reducer_override(obj)

    return Refusing


def write_pickle(obj: object, writer: BodyWriter, *, peer_python: str = "") -> None:
    """cloudpickle ``obj`` (protocol 5) into ``writer``; raise what pickling raised.

    Small plain objects (see :func:`_plain`) take the C pickler directly: the hot path of
    a trivial call and its result. Where ``peer_python``, the receiving side's version, is
    another X.Y than this one, code by value raises :class:`CodeAcrossVersions` instead.
    """
    if _plain(obj):
        writer.write(pickle.dumps(obj, protocol=5))
        return
    import cloudpickle  # not imported by a data-only agent

    pickler = cloudpickle.CloudPickler if same_minor(peer_python) else _by_value_refused(peer_python)
    pickler(writer, protocol=5).dump(obj)


def read_pickle(body: bytes | None, next_message: Callable[[], Message]) -> Any:
    """Unpickle an inline body, or stream one; the whole body is consumed either way."""
    if body is not None:
        return pickle.loads(body)  # noqa: S301 - the sender is the ssh-authenticated user
    reader = BodyReader(next_message)
    try:
        value = pickle.load(reader)  # noqa: S301 - see the module docstring
    except (BodyAborted, RemoteProtocolError):
        raise
    except BaseException:
        _drain(reader)
        raise
    reader.finish()
    return value


def write_msgpack(obj: object, writer: BodyWriter) -> None:
    """msgpack ``obj`` (plain data only: None, bool, int, float, str, bytes, list, dict)."""
    packed = msgpack.packb(obj, use_bin_type=True)
    writer.write(packed)


def read_msgpack(body: bytes | None, next_message: Callable[[], Message]) -> Any:
    """Decode a msgpack body (no ext types, bounded); never unpickles.

    Bounds, so that a hostile sender cannot make the reader exhaust its memory (a 4 MiB
    body of empty arrays is 4 million lists, ~300 MiB): the body is at most
    :data:`MAX_DATA_BODY` bytes; no string, bytes, array or map may claim more items than
    the body has bytes (msgpack's ``max_*_len``, so nothing is preallocated on a lying
    header); nesting is bounded by msgpack's own stack (1,024 levels); and the objects
    built may take at most ``DATA_EXPANSION`` bytes per body byte plus
    ``DATA_ALLOWANCE`` (and at most ``MAX_DATA_MEMORY``), counted as they are built, so
    decoding stops at the first container past the budget. A breach raises
    :class:`DataLimitExceeded`; a malformed body ValueError.
    """
    data: bytes | bytearray = b"" if body is None else body
    if body is None:
        reader = BodyReader(next_message)
        data = bytearray()
        while True:
            piece = reader.read(CHUNK_SIZE)
            if not piece:
                break
            if len(data) + len(piece) > MAX_DATA_BODY:
                _drain(reader)
                raise DataLimitExceeded(f"msgpack body larger than {MAX_DATA_BODY} bytes")
            data += piece
    size = len(data)
    budget = _Budget(min(DATA_EXPANSION * size + DATA_ALLOWANCE, MAX_DATA_MEMORY))
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            ext_hook=_refuse_ext,
            max_str_len=size,
            max_bin_len=size,
            max_array_len=size,
            max_map_len=size // 2,
            max_ext_len=0,
            list_hook=budget.charge_list,
            object_hook=budget.charge_map,
        )
    except DataLimitExceeded:
        raise
    except (msgpack.StackError, RecursionError):
        raise DataLimitExceeded("msgpack body nests deeper than msgpack's stack allows") from None
    except Exception as exc:  # msgpack raises several types; _refuse_ext raises ValueError
        raise ValueError(f"malformed msgpack body: {exc}") from None


def _object_cost(value: object, _size: Callable[[object], int] = sys.getsizeof) -> int:
    """Bytes a decoded scalar took (shared singletons cost nothing; containers count
    themselves in :class:`_Budget`)."""
    kind = type(value)
    if kind is int:
        return 0 if -5 <= value <= 256 else _size(value)  # type: ignore[operator]
    if kind is list or kind is dict or kind is bool or value is None:
        return 0
    return _size(value)


class _Budget:
    """The memory a msgpack body may still expand to; charged as containers complete."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def _charge(self, cost: int) -> None:
        self.left -= cost
        if self.left < 0:
            raise DataLimitExceeded(
                f"msgpack body expands to more than {self.limit >> 20} MiB of objects "
                f"(at most {DATA_EXPANSION} bytes per body byte plus {DATA_ALLOWANCE >> 20} MiB)"
            )

    def charge_list(self, items: list[Any]) -> list[Any]:
        self._charge(sys.getsizeof(items) + sum(map(_object_cost, items)))
        return items

    def charge_map(self, entries: dict[Any, Any]) -> dict[Any, Any]:
        keys, values = map(_object_cost, entries), map(_object_cost, entries.values())
        self._charge(sys.getsizeof(entries) + sum(keys) + sum(values))
        return entries


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack ext type {code} is not allowed")


def _drain(reader: BodyReader) -> None:
    with contextlib.suppress(BodyAborted):
        reader.finish()


# --- exceptions -------------------------------------------------------------------------


def describe_exception(exc: BaseException) -> tuple[str, str, str]:
    """(qualified type name, message, traceback text) of an exception raised here."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {name}>"
    text = "".join(traceback.format_exception(exc))
    if len(text) > MAX_TEXT:
        text = "...\n" + text[-(MAX_TEXT - 4) :]
    return name, message[:MAX_TEXT], text


# The remote exception types rebuilt here, by the exact name the remote sends: builtin
# Exception subclasses whose meaning does not depend on where they are raised. Left out on
# purpose: StopIteration and StopAsyncIteration (they end a caller's generator or loop),
# BaseException-only types (GeneratorExit, KeyboardInterrupt, SystemExit), warnings, and
# every non-builtin type (mpish's own TransportClosed would fire a caller's handler for a
# local failure). Nothing is looked up by name: the remote cannot reach any other class,
# nor a module's ``__getattr__``.
REBUILT_TYPES: dict[str, type[Exception]] = {
    kind.__name__: kind
    for kind in (
        ArithmeticError,
        FloatingPointError,
        OverflowError,
        ZeroDivisionError,
        AssertionError,
        AttributeError,
        BufferError,
        EOFError,
        ImportError,
        ModuleNotFoundError,
        LookupError,
        IndexError,
        KeyError,
        MemoryError,
        NameError,
        UnboundLocalError,
        OSError,
        BlockingIOError,
        ChildProcessError,
        ConnectionError,
        BrokenPipeError,
        ConnectionAbortedError,
        ConnectionRefusedError,
        ConnectionResetError,
        FileExistsError,
        FileNotFoundError,
        InterruptedError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        ProcessLookupError,
        TimeoutError,
        ReferenceError,
        RuntimeError,
        NotImplementedError,
        RecursionError,
        SyntaxError,
        IndentationError,
        TabError,
        SystemError,
        TypeError,
        ValueError,
        UnicodeError,
    )
}
# One class per type, made here and named in this module, so that a rebuilt exception can be
# pickled again (a process pool, a logging queue) and loaded wherever mpish is importable.
_REBUILT: dict[type[Exception], type[RemoteError]] = {
    base: type(f"Remote{base.__name__}", (RemoteError, base), {"__module__": __name__})
    for base in REBUILT_TYPES.values()
}
globals().update((cls.__name__, cls) for cls in _REBUILT.values())


OsErrorFields = tuple[int | None, str | None, str | None, str | None]  # errno, strerror, filename, filename2


def os_error_fields(exc: BaseException) -> OsErrorFields:
    """An OSError's errno, strerror and file names (those that are text), else Nones."""
    if not isinstance(exc, OSError) or not isinstance(exc.errno, int):
        return None, None, None, None

    def text(value: object) -> str | None:
        return value[:MAX_TEXT] if isinstance(value, str) else None

    return exc.errno, text(exc.strerror), text(exc.filename), text(exc.filename2)


def remote_error(type_name: str, message: str, remote_traceback: str,
                 os_error: OsErrorFields = (None, None, None, None)) -> RemoteError:
    """Rebuild a remote exception as a RemoteError.

    When the remote type is one of :data:`REBUILT_TYPES` (builtin exceptions), the result
    is an instance of a class derived from both :class:`RemoteError` and that type, so
    ``except ValueError`` and ``except RemoteError`` both catch it. Any other type (a
    class of the remote's code, StopIteration, SystemExit, mpish's own errors) arrives
    as a plain RemoteError. Either way ``remote_type`` is the remote qualified name and
    ``remote_traceback`` the remote text.
    """
    base = REBUILT_TYPES.get(type_name)
    if base is not None:
        error = _REBUILT[base](message, remote_type=type_name, remote_traceback=remote_traceback)
        if isinstance(error, OSError) and os_error[0] is not None:  # the remote's errno and names
            error.errno, error.strerror, error.filename, error.filename2 = os_error
        return error
    return RemoteError(f"{type_name}: {message}", remote_type=type_name, remote_traceback=remote_traceback)
