"""The SYNC flag of a synchronous send's first record (comm/synchronous.py) is authenticated
and never taken by the plain-record hot paths (so its receiver always sees it)."""

from __future__ import annotations

import os

import pytest

from mpish.wire.errors import AuthenticationError
from mpish.wire.noise import CHACHAPOLY_FUNCTIONS, HASHES
from mpish.wire.record import FLAG_CONTINUATION, FLAG_MORE, FLAG_SYNC, Opener, Sealer, parse_header


def _pair() -> tuple[Sealer, Opener]:
    key, session = os.urandom(32), os.urandom(16)
    suite = (CHACHAPOLY_FUNCTIONS, HASHES["BLAKE2s"], key, session, 4, 9, None)
    return Sealer(*suite), Opener(*suite)


def test_the_sync_flag_is_authenticated_and_never_taken_by_the_fast_paths() -> None:
    sealer, opener = _pair()
    opener.open_fields(sealer.seal_data(b"set up channel 5", 5))
    assert FLAG_SYNC & (FLAG_MORE | FLAG_CONTINUATION) == 0
    for flags in (FLAG_SYNC, FLAG_SYNC | FLAG_MORE):
        record = sealer.seal(b"sync", channel=5, flags=flags)
        assert parse_header(record).flags == flags
        buf = bytearray(record) + os.urandom(64)
        assert opener.open_next(buf, len(record), 5) is None  # not a plain record: the general path
        for cleared in (flags & ~FLAG_SYNC, flags | FLAG_CONTINUATION):
            moved = bytearray(record)
            moved[2] = cleared  # a synchronous send made to look standard (or the reverse)
            with pytest.raises(AuthenticationError):
                opener.open_fields(moved)
        assert opener.open_fields(record)[1] == flags
    plain = bytearray(sealer.seal_data(b"standard", 5))
    plain[2] |= FLAG_SYNC  # a standard send made to look synchronous
    with pytest.raises(AuthenticationError):
        opener.open_fields(plain)
    assert opener._channels[5].window.top == 2  # no altered record moved the window
