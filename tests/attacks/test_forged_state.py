"""THREAT-MODEL attack 1 at scale: forged records leave no lasting state behind.

A forged record is only checked when its tag fails, so nothing derived from it (key
epochs, channel state) may outlive that check; otherwise a stream of forged records with
ever later counters grows a drop_forged receiver without bound (issue 10, finding 1).
"""

from __future__ import annotations

import gc
import os
import struct

import pytest

from mpish.wire.errors import AuthenticationError, RemoteProtocolError
from mpish.wire.events import Message
from mpish.wire.record import DEFAULT_LIMITS
from wirepair import PairFactory

COUNTER, CHANNEL = 32, 28
EPOCH = 1 << DEFAULT_LIMITS.rekey_shift  # records per key epoch with the real limits
FORGED = 200_000
MIB = 1 << 20


def _rss() -> int:
    """Resident memory of this process in bytes (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_1_forged_records_two_epochs_ahead_leave_memory_bounded(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    (first,) = pair.initiator.send(b"genuine 1")
    assert pair.responder.receive_record(first) == [Message(0, b"genuine 1")]
    forged = bytearray(first)  # 68 bytes: header, 9 bytes of body, a tag that cannot verify
    forged[-1] ^= 1
    gc.collect()
    before = _rss()
    for i in range(FORGED):
        # Every other record two key epochs past the previous forged one: the old receiver
        # derived and kept two AEADs per such record (+985 MiB for 200,000). The others two
        # epochs past the genuine one: derived for their tag check, then gone.
        epochs = i + 2 if i % 2 else 2
        struct.pack_into(">Q", forged, COUNTER, epochs * EPOCH)
        with pytest.raises((AuthenticationError, RemoteProtocolError)):
            pair.responder.receive_record(forged)
    gc.collect()
    growth = _rss() - before
    assert growth < 10 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
    assert pair.responder.rejected == FORGED
    (second,) = pair.initiator.send(b"genuine 2")
    assert pair.responder.receive_record(second) == [Message(0, b"genuine 2")]


def test_1_forged_records_on_unknown_channels_keep_no_channel_state(make_pair: PairFactory) -> None:
    pair = make_pair(drop_forged=True)
    (record,) = pair.initiator.send(b"genuine", 3)
    opener = pair.responder._opener
    assert opener is not None
    for channel in range(100, 1100):
        forged = bytearray(record)
        struct.pack_into(">I", forged, CHANNEL, channel)
        struct.pack_into(">Q", forged, COUNTER, 2 * EPOCH)
        with pytest.raises(AuthenticationError):
            pair.responder.receive_record(forged)
    assert opener._channels == {}  # no forged channel id created lasting state
    assert pair.responder._pending == {}
    assert pair.responder.receive_record(record) == [Message(3, b"genuine")]
    assert list(opener._channels) == [3]
