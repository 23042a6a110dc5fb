"""The ABORT flag of a collective's abort notice (comm/collectives.py ``_c_abort``) is
authenticated: a block cannot be turned into an abort notice in transit, nor the reverse, and
no plain-record hot path takes a notice (so the lane always reports it as ABORT_TAG)."""

from __future__ import annotations

import os

import pytest

from mpish.comm.limits import ABORT_TAG, Early, deliver_early
from mpish.wire.errors import AuthenticationError
from mpish.wire.noise import CHACHAPOLY_FUNCTIONS, HASHES
from mpish.wire.record import (
    FLAG_ABORT,
    FLAG_CONTINUATION,
    FLAG_MORE,
    FLAG_SYNC,
    Opener,
    Sealer,
    parse_header,
)


def _pair() -> tuple[Sealer, Opener]:
    key, session = os.urandom(32), os.urandom(16)
    suite = (CHACHAPOLY_FUNCTIONS, HASHES["BLAKE2s"], key, session, 4, 9, None)
    return Sealer(*suite), Opener(*suite)


def test_the_abort_flag_is_authenticated_and_never_taken_by_the_fast_paths() -> None:
    sealer, opener = _pair()
    assert FLAG_ABORT & (FLAG_MORE | FLAG_CONTINUATION | FLAG_SYNC) == 0
    opener.open_fields(sealer.seal_data(b"set up channel 1", 1))
    notice = sealer.seal(b"", channel=1, flags=FLAG_ABORT)
    assert parse_header(notice).flags == FLAG_ABORT
    assert opener.open_next(bytearray(notice) + os.urandom(64), len(notice), 1) is None
    cleared = bytearray(notice)
    cleared[2] = 0  # a notice made to look like an empty block
    with pytest.raises(AuthenticationError):
        opener.open_fields(cleared)
    block = bytearray(sealer.seal_data(b"", 1))
    block[2] |= FLAG_ABORT  # an empty block made to look like a notice
    with pytest.raises(AuthenticationError):
        opener.open_fields(block)
    assert opener.open_fields(notice)[1] == FLAG_ABORT


def test_a_probed_abort_notice_is_received_as_abort_tag_and_never_written_into_the_sink() -> None:
    early = Early(3, 1, b"\0\0\0\2", None, aborted=True)  # its body: the rank it failed on
    assert deliver_early(early, None) == (3, ABORT_TAG, 4, b"\0\0\0\2")
    sink = bytearray(b"untouched")
    assert deliver_early(early, memoryview(sink)) == (3, ABORT_TAG, 4, b"\0\0\0\2")
    assert sink == b"untouched"
    assert deliver_early(Early(3, 1, b"ab"), None) == (3, 1, 2, b"ab")
