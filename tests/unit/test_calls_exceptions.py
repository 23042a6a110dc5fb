"""Remote exceptions: only builtin types of a fixed list are rebuilt; the rest arrive as
RemoteError (issue 10, finding 6)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from mpish.calls.serialize import REBUILT_TYPES, remote_error
from mpish.wire.errors import RemoteError, TransportClosed

TRACEBACK = "Traceback (most recent call last):\n  File \"remote.py\", line 1\nboom\n"


@pytest.mark.parametrize("name", sorted(REBUILT_TYPES))
def test_allowed_builtin_types_are_rebuilt_with_name_and_traceback(name: str) -> None:
    error = remote_error(name, "boom", TRACEBACK)
    assert isinstance(error, REBUILT_TYPES[name]) and isinstance(error, RemoteError)
    assert error.remote_type == name and error.remote_traceback == TRACEBACK


def test_key_error_is_caught_as_key_error() -> None:
    with pytest.raises(KeyError) as caught:
        raise remote_error("KeyError", "'missing'", TRACEBACK)
    assert "boom" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        ("StopIteration", StopIteration),
        ("StopAsyncIteration", StopAsyncIteration),
        ("GeneratorExit", GeneratorExit),
        ("KeyboardInterrupt", KeyboardInterrupt),
        ("SystemExit", SystemExit),
        ("BaseException", type(None)),  # (RemoteError is a BaseException, and only that)
        ("Exception", type(None)),  # RemoteError is already an Exception: nothing to add
        ("DeprecationWarning", DeprecationWarning),
        ("builtins.KeyError", KeyError),  # only the exact names of the list
        ("mpish.wire.errors.TransportClosed", TransportClosed),
    ],
)
def test_other_types_arrive_as_plain_remote_error(name: str, forbidden: type[BaseException]) -> None:
    error = remote_error(name, "boom", TRACEBACK)
    assert type(error) is RemoteError and not isinstance(error, forbidden)
    assert error.remote_type == name and error.remote_traceback == TRACEBACK
    assert str(error).startswith(f"{name}: boom")


class _LyingStop(StopIteration):
    pass


@pytest.fixture
def hooked_module() -> Iterator[list[str]]:
    """An imported module whose __getattr__ records every name it is asked for."""
    asked: list[str] = []
    module = types.ModuleType("mpish_test_hooked")

    def __getattr__(name: str) -> object:
        asked.append(name)
        return _LyingStop

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.LyingStop = _LyingStop  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield asked
    finally:
        del sys.modules[module.__name__]


def test_imported_module_names_are_never_resolved(hooked_module: list[str]) -> None:
    for name in ("mpish_test_hooked.LyingStop", "mpish_test_hooked.Anything"):
        error = remote_error(name, "boom", TRACEBACK)
        assert type(error) is RemoteError and not isinstance(error, StopIteration)
    assert hooked_module == []  # the module's __getattr__ never ran


def test_a_remote_stop_iteration_does_not_silently_end_a_local_loop() -> None:
    def call_remote(host: str) -> str:
        raise remote_error("StopIteration", "", TRACEBACK)  # what a hostile remote answered

    with pytest.raises(RemoteError):  # a rebuilt StopIteration made map() end quietly: []
        list(map(call_remote, ["host1", "host2"]))
