"""Code by value (lambdas, closures, classes of __main__) carries bytecode, which only the same
Python X.Y runs (3.10 raised a TypeError building it, 3.13 crashed): it is refused, with what
to do, when the other side runs another X.Y; names of functions and plain data still travel."""

from __future__ import annotations

import io
import os
import pickle
import sys

import pytest

from mpish.calls.serialize import CodeAcrossVersions, same_minor, write_pickle

HERE = "{}.{}.0".format(*sys.version_info[:2])
OTHER = f"{sys.version_info[0]}.{sys.version_info[1] + 1}.1"


class Sink:
    """The little of BodyWriter that write_pickle uses."""

    def __init__(self) -> None:
        self.data = io.BytesIO()

    def write(self, data: bytes) -> int:
        return self.data.write(data)


def pickled(obj: object, peer: str) -> bytes:
    sink = Sink()
    write_pickle(obj, sink, peer_python=peer)  # type: ignore[arg-type]
    return sink.data.getvalue()


def make_closure() -> object:
    factor = 3
    return lambda x: x * factor


class Local:  # pickled by value when this module is (as a __main__ class is)
    def method(self) -> int:
        return 1


@pytest.mark.parametrize("obj", [lambda: 1, make_closure()], ids=["lambda", "closure"])
def test_code_by_value_to_another_python_is_refused_with_what_to_do(obj: object) -> None:
    with pytest.raises(CodeAcrossVersions) as raised:
        pickled(obj, OTHER)
    message = str(raised.value)
    assert "bytecode" in message and OTHER in message and "call_data" in message
    assert pickle.loads(pickled(obj, HERE))  # the same X.Y: sent by value as before


def test_a_class_sent_by_value_to_another_python_is_refused() -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with pytest.raises(CodeAcrossVersions):
            pickled(Local(), OTHER)
        assert pickle.loads(pickled(Local(), HERE)).method() == 1
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_functions_by_name_and_plain_data_travel_to_any_python() -> None:
    payload = (os.path.join, ("a", "b"), {"x": list(range(100))})  # a list past the plain fast path
    assert pickle.loads(pickled(payload, OTHER)) == payload
    assert pickle.loads(pickled((abs, (-1,), {}), OTHER)) == (abs, (-1,), {})


def test_a_version_that_cannot_be_read_is_taken_as_the_same() -> None:
    assert same_minor(HERE) and not same_minor(OTHER)
    assert same_minor("") and same_minor("unknown")
