"""The call protocol's frames without ssh: the inline pickle fast path and plain pickling."""

from __future__ import annotations

import os
import pickle

import pytest

from mpish.calls.messages import FAST_CALL, FAST_RESULT, Call, Result, decode, encode
from mpish.calls.serialize import BodyWriter, write_pickle
from mpish.wire.errors import RemoteProtocolError


def frame(message: object) -> bytes:
    return b"".join(bytes(part) for part in encode(message))  # type: ignore[arg-type]


def test_inline_pickle_call_and_result_use_the_binary_header() -> None:
    call = Call(7, "pickle", "", b"body")
    result = Result(2**64 - 1, "pickle", b"")
    assert frame(call).startswith(FAST_CALL) and decode(frame(call)) == call
    assert frame(result).startswith(FAST_RESULT) and decode(frame(result)) == result


@pytest.mark.parametrize(
    "message",
    [
        Call(1, "msgpack", "os.getpid", b"\x92\x90\x80"),
        Call(1, "pickle", "", None),
        Result(3, "pickle", None),
    ],
)
def test_other_messages_stay_msgpack(message: object) -> None:
    data = frame(message)
    assert data[:1] not in (FAST_CALL, FAST_RESULT)
    assert decode(data) == message


def test_a_short_inline_frame_is_a_protocol_error() -> None:
    for marker in (FAST_CALL, FAST_RESULT):
        with pytest.raises(RemoteProtocolError):
            decode(marker + b"\x00" * 7)


def _pickled(obj: object) -> bytes:
    sent: list[bytes | None] = []
    writer = BodyWriter(sent.append, lambda message: sent.append(None))
    write_pickle(obj, writer)
    writer.close()
    assert isinstance(sent[0], bytes)
    return sent[0]


def test_plain_objects_and_functions_by_name_round_trip() -> None:
    for obj in [(abs, (-1,), {}), (os.getpid, (), {}), {"a": [1, 2.5, None, b"x"]}, "s" * 70000]:
        assert pickle.loads(_pickled(obj)) == obj
    closure_value = 3
    back = pickle.loads(_pickled(lambda: closure_value))  # by value, through cloudpickle
    assert back() == 3
