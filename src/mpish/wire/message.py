"""Frozen, slotted message classes without :mod:`dataclasses`' code generation.

A protocol declares many small immutable messages. ``@dataclass(frozen=True, slots=True)``
writes and compiles six functions per class (``__init__``, ``__repr__``, ``__eq__``,
``__hash__``, ``__setattr__``, ``__delattr__``) when the module is imported: for the
shell protocol's 25 messages that was ~150 compiles and 10-25 ms of CPU on every start
of every remote shell server, whose whole life may be one ``true``. Here those methods
are written once, on :class:`Frozen`, and read the class's field names
(``__match_args__``); :func:`frozen` only makes the slotted class, which compiles
nothing::

    @frozen
    class Credit(Frozen):
        nbytes: int

behaves as the frozen dataclass did: positional or keyword construction (every field
required), equality and hash by class and field values, a dataclass-like ``repr``,
assignment refused, ``match`` patterns by position. A field may have a default (the
fields after it too, as in a dataclass); the class may also derive from ``Generic[T]``.
mypy checks it as a dataclass (``dataclass_transform``). :class:`mpish.wire.codec.Codec`
takes such classes as messages (their fields are ``__match_args__``).
"""

# No "from __future__ import annotations": a message class's hints (the codec reads them with
# get_type_hints) include Frozen's, which as text would be compiled again for every class.

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:  # typing has it from 3.11 only; at run time it only marks the class for checkers

    def dataclass_transform(**_: object) -> Any:
        return lambda target: target


T = TypeVar("T", bound="Frozen")


class Fields:
    """``repr``, ``==`` and ``match`` by position for a mutable class whose ``__init__`` sets the
    fields named in ``__match_args__``, as ``@dataclass`` gives them (unhashable, as a
    dataclass with ``eq`` is), without generating and compiling code for each class."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()
    __hash__ = None  # type: ignore[assignment]

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Fields)
        return self._values() == other._values()


@dataclass_transform(eq_default=True, frozen_default=True)
class Frozen(Fields):
    """The methods of every frozen message; the subclass's fields are ``__match_args__``."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = self.__match_args__
        if len(args) == len(names) and not kwargs:  # the common case: every field by position
            for name, value in zip(names, args, strict=True):
                object.__setattr__(self, name, value)
            return
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, {len(args)} given")
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name not in names:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")
            if name in values:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            values[name] = value
        for name, value in self._defaults.items():
            values.setdefault(name, value)
        missing = [name for name in names if name not in values]
        if missing:
            raise TypeError(f"{type(self).__name__}() missing arguments: {', '.join(missing)}")
        for name in names:
            object.__setattr__(self, name, values[name])

    def __hash__(self) -> int:  # type: ignore[override]  # frozen: hashable, unlike Fields
        return hash(self._values())

    def __reduce__(self) -> tuple[type[Any], tuple[Any, ...]]:  # pickle and copy: by the constructor
        return type(self), self._values()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")


def replace(value: T, **changes: Any) -> T:
    """A copy of a :class:`Frozen` value with some fields changed (``dataclasses.replace``)."""
    fields = dict(zip(value.__match_args__, value._values(), strict=True))
    return type(value)(**{**fields, **changes})


def frozen(cls: type[T]) -> type[T]:
    """The slotted class of a :class:`Frozen` subclass: its annotated names are its fields,
    in order, a value given in the class body their default (made again with
    ``__slots__``, as ``dataclass(slots=True)`` does)."""
    if Frozen not in cls.__bases__:
        raise TypeError(f"{cls.__name__} must derive from Frozen")
    names = tuple(cls.__annotations__)  # its own (Python 3.10+), in order
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
    if list(defaults) != list(names[len(names) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    namespace = {key: value for key, value in cls.__dict__.items() if key not in names}
    namespace.pop("__dict__", None)
    namespace.pop("__weakref__", None)
    namespace["__slots__"] = names
    namespace["__match_args__"] = names
    namespace["_defaults"] = defaults
    made = type(cls.__name__, cls.__bases__, namespace)
    made.__qualname__ = cls.__qualname__
    return made
