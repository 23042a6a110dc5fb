"""Protocol messages on msgpack, validated field by field (no pickle in this layer).

A protocol (the shell, the ssh agent, ...) declares its messages as frozen dataclasses
registered on a :class:`Codec` with a small integer type id::

    shell = Codec("shell")

    @shell.message(1)
    @dataclass(frozen=True, slots=True)
    class Run:
        command: str
        timeout: float | None = None
        env: dict[str, str] = field(default_factory=dict)

A message is encoded as the msgpack array ``[type_id, field1, field2, ...]``. Decoding
bounds every msgpack container and string before it is built (msgpack's ``max_*_len``),
rejects ext types, then checks the type id, the field count and every field against
its annotation: ``int`` (64-bit, bool refused), ``bool``, ``float`` (an int is
accepted), ``str``, ``bytes``, ``list[T]``, ``dict[str, T]``, ``T | None``. A size
limit for a field can be given with ``Annotated[str, MaxLen(n)]``; the codec-wide
``max_bytes`` bounds the others. Any failure is a :class:`RemoteProtocolError` that
says which field was wrong; nothing half-checked reaches the caller.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError
from .message import Frozen, frozen

T = TypeVar("T")

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


@frozen
class MaxLen(Frozen):
    """``Annotated[str, MaxLen(n)]``: at most n characters / bytes / items."""

    limit: int


Check = Callable[[object, str], object]


class Codec:
    """A registry of message types for one protocol, with encode and checked decode."""

    def __init__(self, name: str, *, max_bytes: int = 64 * 1024 * 1024, max_items: int = 65536) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._by_id: dict[int, tuple[type[Any], list[tuple[str, Check]]]] = {}
        self._id_of: dict[type[Any], tuple[int, tuple[str, ...]]] = {}
        self._max_fields = 0

    # -- declaring messages

    def message(self, type_id: int) -> Callable[[type[T]], type[T]]:
        """Class decorator: register a frozen dataclass or Frozen class as message ``type_id``."""

        def register(cls: type[T]) -> type[T]:
            names = _field_names(cls)
            if type_id in self._by_id:
                raise ValueError(f"{self.name}: type id {type_id} is already {self._by_id[type_id][0]}")
            hints = typing.get_type_hints(cls, include_extras=True)
            checks = [(name, self._check_for(hints[name])) for name in names]
            self._by_id[type_id] = (cls, checks)
            self._max_fields = max(self._max_fields, len(checks))
            self._id_of[cls] = (type_id, names)
            return cls

        return register

    def _check_for(self, hint: Any, limit: int | None = None) -> Check:
        origin = typing.get_origin(hint)
        if origin is typing.Annotated:
            base, *extra = typing.get_args(hint)
            for item in extra:
                if isinstance(item, MaxLen):
                    limit = item.limit
            return self._check_for(base, limit)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(hint)
            inner = [a for a in args if a is not type(None)]
            if len(inner) != 1 or len(args) != 2:
                raise TypeError(f"unsupported union {hint!r}: only T | None")
            check = self._check_for(inner[0], limit)

            def optional(value: object, where: str) -> object:
                return None if value is None else check(value, where)

            return optional
        if origin is list:
            (item_hint,) = typing.get_args(hint)
            item_check = self._check_for(item_hint)
            most = self.max_items if limit is None else limit

            def check_list(value: object, where: str) -> object:
                if not isinstance(value, list):
                    raise RemoteProtocolError(f"{where}: expected a list, got {type(value).__name__}")
                if len(value) > most:
                    raise RemoteProtocolError(f"{where}: {len(value)} items, at most {most}")
                return [item_check(v, f"{where}[{i}]") for i, v in enumerate(value)]

            return check_list
        if origin is dict:
            key_hint, value_hint = typing.get_args(hint)
            if key_hint is not str:
                raise TypeError("only dict[str, T] is supported")
            key_check = self._check_for(str)
            value_check = self._check_for(value_hint)
            most = self.max_items if limit is None else limit

            def check_dict(value: object, where: str) -> object:
                if not isinstance(value, dict):
                    raise RemoteProtocolError(f"{where}: expected a map, got {type(value).__name__}")
                if len(value) > most:
                    raise RemoteProtocolError(f"{where}: {len(value)} entries, at most {most}")
                return {
                    key_check(k, f"{where} key"): value_check(v, f"{where}[{k!r}]") for k, v in value.items()
                }

            return check_dict
        if hint is bool:

            def check_bool(value: object, where: str) -> object:
                if not isinstance(value, bool):
                    raise RemoteProtocolError(f"{where}: expected a bool, got {type(value).__name__}")
                return value

            return check_bool
        if hint is int:

            def check_int(value: object, where: str) -> object:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise RemoteProtocolError(f"{where}: expected an int, got {type(value).__name__}")
                if not INT_MIN <= value <= INT_MAX:
                    raise RemoteProtocolError(f"{where}: integer out of range")
                return value

            return check_int
        if hint is float:

            def check_float(value: object, where: str) -> object:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise RemoteProtocolError(f"{where}: expected a number, got {type(value).__name__}")
                return float(value)

            return check_float
        if hint in (str, bytes):
            most = self.max_bytes if limit is None else limit

            def check_sized(value: object, where: str) -> object:
                if type(value) is not hint:
                    raise RemoteProtocolError(
                        f"{where}: expected {hint.__name__}, got {type(value).__name__}"
                    )
                assert isinstance(value, (str, bytes))
                if len(value) > most:
                    raise RemoteProtocolError(f"{where}: {len(value)} long, at most {most}")
                return value

            return check_sized
        raise TypeError(f"unsupported field type {hint!r}")

    # -- encoding and decoding

    def encode(self, message: object) -> bytes:
        """The msgpack bytes of a registered message."""
        known = self._id_of.get(type(message))
        if known is None:
            raise LocalProtocolError(f"{type(message).__name__} is not a {self.name} message")
        type_id, names = known
        values = [getattr(message, name) for name in names]
        # (a str may hold any bytes as Python's OS interface gives them, a file name of byte
        # 0xFF as "\udcff": they travel as those bytes, decode() gives the same str back)
        packed: bytes = msgpack.packb([type_id, *values], use_bin_type=True, unicode_errors="surrogateescape")
        return packed

    def decode(self, data: bytes | bytearray | memoryview) -> Any:
        """Parse and check one message; raise RemoteProtocolError if anything is off."""
        if len(data) > self.max_bytes + 1024:
            raise RemoteProtocolError(f"{self.name} message of {len(data)} bytes is too large")
        try:
            raw = msgpack.unpackb(
                data,
                raw=False,
                unicode_errors="surrogateescape",
                use_list=True,
                strict_map_key=True,
                max_str_len=self.max_bytes,
                max_bin_len=self.max_bytes,
                max_array_len=max(self.max_items, self._max_fields + 1),
                max_map_len=self.max_items,
                max_ext_len=0,
                ext_hook=_refuse_ext,
            )
        except RemoteProtocolError:
            raise
        except Exception as exc:  # msgpack raises several types for malformed input
            raise RemoteProtocolError(f"malformed {self.name} message: {exc}") from None
        if not isinstance(raw, list) or not raw:
            raise RemoteProtocolError(f"malformed {self.name} message: not a non-empty array")
        type_id = raw[0]
        if isinstance(type_id, bool) or not isinstance(type_id, int) or type_id not in self._by_id:
            raise RemoteProtocolError(f"unknown {self.name} message type {type_id!r}")
        cls, checks = self._by_id[type_id]
        values = raw[1:]
        if len(values) != len(checks):
            raise RemoteProtocolError(
                f"{self.name} {cls.__name__}: {len(values)} fields, expected {len(checks)}"
            )
        kwargs = {
            name: check(v, f"{cls.__name__}.{name}") for (name, check), v in zip(checks, values, strict=True)
        }
        return cls(**kwargs)

    def types(self) -> dict[int, type[Any]]:
        """The registered message classes by type id."""
        return {i: c for i, (c, _) in self._by_id.items()}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    """A message class's fields in order: a dataclass's, or a :class:`~mpish.wire.message.Frozen`
    class's ``__match_args__``."""
    if hasattr(cls, "__dataclass_fields__"):  # so dataclasses is loaded already
        import dataclasses

        return tuple(f.name for f in dataclasses.fields(cls))
    names = getattr(cls, "__match_args__", None)
    if not isinstance(names, tuple) or not all(isinstance(name, str) for name in names):
        raise TypeError(f"{cls.__name__} must be a dataclass or a Frozen message class")
    return names


def _refuse_ext(code: int, data: bytes) -> object:
    raise RemoteProtocolError(f"msgpack ext type {code} is not allowed")
