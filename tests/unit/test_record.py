"""Record layer units: replay window, key epochs out of order, buffers, header checks."""

from __future__ import annotations

import gc
import os
import random
import tracemalloc

import pytest

from mpish.wire.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError, ReplayError
from mpish.wire.noise import CHACHAPOLY_FUNCTIONS, HASHES
from mpish.wire.record import (
    FLAG_CONTINUATION,
    FLAG_MORE,
    HEADER_SIZE,
    MAX_RECORD_PAYLOAD,
    Limits,
    Opener,
    RecordType,
    Sealer,
    parse_header,
)
from mpish.wire.replay import REPLAY_WINDOW, ReplayWindow


def _pair(limits: Limits | None = None) -> tuple[Sealer, Opener]:
    key, session = os.urandom(32), os.urandom(16)
    suite = (CHACHAPOLY_FUNCTIONS, HASHES["BLAKE2s"], key, session, 4, 9, limits)
    return Sealer(*suite), Opener(*suite)


def test_window_in_order_out_of_order_and_jumps() -> None:
    window = ReplayWindow()
    accepted: set[int] = set()
    rng = random.Random(7)
    counters = list(range(3 * REPLAY_WINDOW))
    # shuffle locally (within 100), then also jump far ahead once
    for start in range(0, len(counters), 100):
        block = counters[start : start + 100]
        rng.shuffle(block)
        counters[start : start + 100] = block
    for n in counters:
        window.check(n)
        window.accept(n)
        accepted.add(n)
        with pytest.raises(ReplayError):
            window.check(n)
    top = window.top
    for n in range(top - REPLAY_WINDOW + 1, top + 1):
        with pytest.raises(ReplayError, match="already"):
            window.check(n)
    with pytest.raises(ReplayError, match="older"):
        window.check(top - REPLAY_WINDOW)
    window.accept(top + 5000)  # a jump clears the slots it passes
    for n in range(top + 1, top + 5000):
        window.check(n)  # never seen: fine
    window.accept(top + 5000 + 3 * REPLAY_WINDOW)  # a jump past the whole window
    window.check(top + 5000 + 3 * REPLAY_WINDOW - 1)


def test_a_window_refuses_exactly_what_a_set_of_every_counter_taken_refuses() -> None:
    """In order, a window keeps no ring (1 KiB a channel, and secure(comm) has a channel per
    tag); its first gap makes one. Either way it refuses a counter exactly when it was taken
    before or lies below the window, as a set of every counter taken would say."""
    rng = random.Random(11)
    for trial in range(40):
        window, taken = ReplayWindow(), set()
        in_order = rng.choice([0, 5, REPLAY_WINDOW - 1, REPLAY_WINDOW + 3, 3 * REPLAY_WINDOW])
        counters = list(range(in_order))
        upto = in_order
        for _ in range(300):  # then gaps, jumps and late ones
            upto += rng.choice([1, 1, 2, 50, REPLAY_WINDOW // 2, 2 * REPLAY_WINDOW])
            counters.append(upto)
            counters.append(max(0, upto - rng.randrange(2 * REPLAY_WINDOW)))
        for number, n in enumerate(counters):
            refused = n in taken or n <= window.top - REPLAY_WINDOW
            try:
                window.check(n)
            except ReplayError:
                assert refused, (trial, number, n)
            else:
                assert not refused, (trial, number, n)
                window.accept(n)
                taken.add(n)
            if number < in_order:
                assert window.ring is None, "a channel taken in order has no ring"
        for n in rng.sample(sorted(taken), min(50, len(taken))):  # every replay, old or recent
            with pytest.raises(ReplayError):
                window.check(n)


def test_records_opened_in_order_keep_no_ring_and_their_replays_are_refused() -> None:
    sealer, opener = _pair()
    records = [sealer.seal_data(b"m%d" % i, 3) for i in range(4)]
    assert opener.open_fields(records[0])[4] == b"m0"  # the general path
    assert opener.open_fields(records[1])[4] == b"m1"  # the inline fast path
    assert opener.open_next(*_received(records[2]), 3) == (2, b"m2")  # the receive buffer's
    assert opener._channels[3].window.ring is None
    for record in records[:3]:
        with pytest.raises(ReplayError, match="already"):
            opener.open_fields(record)
    assert opener.open_next(*_received(records[1]), 3) is None  # not the next one
    assert sealer._channels[3].window.ring is None  # a sender has no window to keep


def test_a_channel_used_once_costs_under_1000_bytes_a_side() -> None:
    """secure(comm) keeps a channel per tag, in each direction, for the communicator's life:
    a code whose tags count its steps (200,000 of them) grew by 700 MB (issue 11). A channel
    whose records came in order keeps no ring, and one that never rekeyed no dict of keys:
    2,002 bytes of Python objects a side before, 697 after (the AEAD's own memory, ~1.2 KB,
    is not Python's and not counted here)."""
    sealer, opener = _pair()
    channels = 2000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for channel in range(channels):
            opener.open_fields(sealer.seal_data(b"x", channel))
        gc.collect()
        per_side = (tracemalloc.get_traced_memory()[0] - before) / channels / 2
    finally:
        tracemalloc.stop()
    assert per_side < 1000, f"{per_side:.0f} bytes a channel and side"


def test_epochs_out_of_order_across_rekeys() -> None:
    sealer, opener = _pair(Limits(rekey_shift=3))  # a new key every 8 records
    records = [sealer.seal(f"{i}".encode(), channel=2) for i in range(100)]
    order = list(range(100))
    random.Random(3).shuffle(order)
    for i in order:
        header, plaintext = opener.open(records[i])
        assert plaintext == f"{i}".encode() and header.counter == i and header.channel == 2
    for i in (0, 50, 99):
        with pytest.raises(ReplayError):
            opener.open(records[i])


def test_seal_into_and_open_into_large() -> None:
    sealer, opener = _pair()
    payload = os.urandom(MAX_RECORD_PAYLOAD)
    buffer = bytearray(HEADER_SIZE + MAX_RECORD_PAYLOAD + 16)
    size = sealer.seal_into(buffer, payload, channel=1)
    assert size == len(buffer)
    out = bytearray(MAX_RECORD_PAYLOAD)
    header, count = opener.open_into(buffer, out)
    assert count == MAX_RECORD_PAYLOAD and out == payload and header.type is RecordType.DATA
    with pytest.raises(LocalProtocolError, match="exceeds"):
        sealer.seal(bytes(MAX_RECORD_PAYLOAD + 1))
    with pytest.raises(LocalProtocolError, match="output buffer"):
        sealer.seal_into(bytearray(10), b"abc")
    record = sealer.seal(b"abc")
    with pytest.raises(LocalProtocolError, match="output buffer"):
        opener.open_into(record, bytearray(2))


def test_open_into_leaves_no_unauthenticated_bytes() -> None:
    # cryptography's decrypt_into writes the CTR plaintext before checking the tag; a
    # bit flipped in the ciphertext would flip the same bit of that plaintext.
    sealer, opener = _pair()
    record = bytearray(sealer.seal(b"secret data"))
    record[HEADER_SIZE] ^= 1
    out = bytearray(b"untouched!!...")
    with pytest.raises(AuthenticationError):
        opener.open_into(record, out)
    assert out == bytes(11) + b"..."  # wiped, never the forged plaintext


def test_failed_open_into_leaves_out_as_documented() -> None:
    # The docstring of open_into: checks before the tag leave ``out`` untouched; a failed
    # tag leaves zeros where the record's plaintext would go and the rest untouched.
    sealer, opener = _pair(Limits(rekey_shift=4))
    payload = os.urandom(64 * 1024)
    genuine = sealer.seal(payload, channel=1)
    fill = b"\xa5" * (len(payload) + 100)

    def failed(record: bytes | bytearray, error: type[Exception], size: int | None = None) -> bytearray:
        out = bytearray(fill[: size or len(fill)])
        with pytest.raises(error):
            opener.open_into(record, out)
        return out

    bad_tag = bytearray(genuine)
    bad_tag[HEADER_SIZE + 5] ^= 0x40  # a flipped ciphertext bit: decrypt_into wrote the flipped plaintext
    out = failed(bad_tag, AuthenticationError)
    assert out == bytes(len(payload)) + fill[len(payload) :]
    other_session = bytearray(genuine)
    other_session[4] ^= 1
    too_far = bytearray(genuine)
    too_far[32:40] = (10**6 << 4).to_bytes(8, "big")
    for record, error in ((other_session, RemoteProtocolError), (too_far, RemoteProtocolError)):
        assert failed(record, error) == fill
    assert failed(genuine, LocalProtocolError, size=len(payload) - 1) == fill[: len(payload) - 1]
    out = bytearray(len(payload))
    opener.open_into(genuine, out)
    assert out == payload
    assert failed(genuine, ReplayError) == fill  # a replay writes nothing


def test_header_checks() -> None:
    sealer, _ = _pair()
    record = bytearray(sealer.seal(b"x", type=RecordType.CLOSE))
    assert parse_header(record).type is RecordType.CLOSE
    for offset, value, message in ((1, 9, "unknown record type"), (2, 0x80, "flags"), (3, 1, "flags")):
        bad = bytearray(record)
        bad[offset] = value
        with pytest.raises(RemoteProtocolError, match=message):
            parse_header(bad)
    with pytest.raises(RemoteProtocolError, match="shorter"):
        parse_header(record[:10])
    short_body = bytearray(record)
    short_body[40:44] = (3).to_bytes(4, "big")
    with pytest.raises(RemoteProtocolError, match="shorter than its tag"):
        parse_header(short_body)


def test_opener_rejects_handshake_records_and_bad_channels() -> None:
    sealer, opener = _pair()
    with pytest.raises(LocalProtocolError, match="out of range"):
        sealer.seal(b"x", channel=2**32)
    handshake = bytearray(sealer.seal(b"x"))
    handshake[1] = RecordType.HANDSHAKE
    with pytest.raises(RemoteProtocolError, match="handshake record"):
        opener.open(handshake)


def test_next_counter_and_sender_exhaustion() -> None:
    sealer, opener = _pair(Limits(rekey_shift=1, max_counter=3))
    assert sealer.next_counter(0) == 0
    records = [sealer.seal(b"r") for _ in range(4)]
    assert sealer.next_counter(0) == 4
    with pytest.raises(LocalProtocolError, match="exhausted"):
        sealer.seal(b"r")
    assert [opener.open(r)[1] for r in records] == [b"r"] * 4


def test_invalid_limits() -> None:
    for kwargs in ({"rekey_shift": 0}, {"rekey_shift": 64}, {"max_counter": 0}):
        with pytest.raises(LocalProtocolError):
            Limits(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="session"):
        Sealer(CHACHAPOLY_FUNCTIONS, HASHES["SHA256"], bytes(32), b"short", 0, 1)


def test_retired_epoch_is_rejected() -> None:
    sealer, opener = _pair(Limits(rekey_shift=1))  # key per 2 records: the window spans many epochs
    records = [sealer.seal(f"{i}".encode()) for i in range(REPLAY_WINDOW + 10)]
    for record in records[:5]:
        opener.open(record)
    assert opener.open(records[8199])[1] == b"8199"  # epoch 4099: keys derived forward
    with pytest.raises(ReplayError, match="older"):
        opener.open(records[5])  # never received, but older than the window
    assert opener.open(records[9])[1] == b"9"  # inside the window, 4000 epochs back: fine


def test_forged_record_of_a_later_epoch_does_not_move_the_epoch() -> None:
    sealer, opener = _pair(Limits(rekey_shift=3))
    records = [sealer.seal(f"{i}".encode()) for i in range(12)]
    opener.open(records[0])
    forged = bytearray(records[9])  # epoch 1, tag broken
    forged[-1] ^= 1
    with pytest.raises(AuthenticationError):
        opener.open(forged)
    state = opener._channels[0]
    assert state.epoch == 0  # unchanged: only authenticated records move it
    for i in range(1, 12):
        assert opener.open(records[i])[1] == f"{i}".encode()
    assert state.epoch == 1


def test_key_cache_stays_bounded_under_forged_and_genuine_epochs() -> None:
    shift = 4  # a new key every 16 records: the replay window spans 512 epochs
    bound = (REPLAY_WINDOW >> shift) + 2
    sealer, opener = _pair(Limits(rekey_shift=shift))
    first = sealer.seal(b"0")
    opener.open(first)
    state = opener._channels[0]
    kept = state.keys.epochs  # the epochs whose AEADs the channel keeps
    for epochs_ahead in (1, 2, bound - 2, bound):
        forged = bytearray(first)
        forged[32:40] = (epochs_ahead << shift).to_bytes(8, "big")
        with pytest.raises((AuthenticationError, RemoteProtocolError)):
            opener.open(forged)
        assert kept() == [0] and state.epoch == 0  # nothing of a forged record was kept
    for _ in range(1, 3 * REPLAY_WINDOW):  # genuine records through 1,500 epochs
        opener.open(sealer.seal(b"r"))
        assert len(kept()) <= bound
    assert state.epoch == (3 * REPLAY_WINDOW - 1) >> shift


def test_seal_data_matches_seal_across_rekeys_and_stops_at_exhaustion() -> None:
    key, session = os.urandom(32), os.urandom(16)
    limits = Limits(rekey_shift=2, max_counter=9)
    suite = (CHACHAPOLY_FUNCTIONS, HASHES["BLAKE2s"], key, session, 4, 9, limits)
    fast, general = Sealer(*suite), Sealer(*suite)
    for i in range(10):  # epochs 0, 1 and 2: the hot path hands every rekey to seal()
        assert fast.seal_data(f"m{i}".encode(), 3) == general.seal(f"m{i}".encode(), channel=3)
    with pytest.raises(LocalProtocolError, match="exhausted"):
        fast.seal_data(b"m", 3)


def _received(record: bytes | bytearray) -> tuple[bytearray, int]:
    """``record`` in a receive buffer with stale bytes after it, as MPI leaves it."""
    return bytearray(record) + os.urandom(64), len(record)


def test_open_next_opens_only_the_next_record_in_order_of_its_channel() -> None:
    sealer, opener = _pair(Limits(rekey_shift=2))
    records = [sealer.seal_data(f"m{i}".encode(), 3) for i in range(6)]
    assert opener.open_next(*_received(records[0]), 3) is None  # a channel no record opened yet
    assert opener.open_fields(records[0])[4] == b"m0"  # the general path sets it up
    assert opener.open_next(*_received(records[1]), 4) is None  # moved to another channel
    assert opener.open_next(*_received(records[2]), 3) is None  # not next: counter 1 is missing
    assert opener.open_next(*_received(records[1]), 3) == (1, b"m1")
    assert opener.open_next(*_received(records[1]), 3) is None  # a replay is never next
    assert opener.open_next(*_received(records[2]), 3) == (2, b"m2")
    assert opener.open_next(*_received(records[3]), 3) == (3, b"m3")
    assert opener.open_next(*_received(records[4]), 3) is None  # a new key epoch: the general path
    buf, count = _received(records[4])
    assert opener.open_next(buf, count - 1, 3) is None  # length field and MPI count disagree
    assert opener.open_fields(records[4])[3:] == (4, b"m4")
    assert opener.open_next(*_received(records[5]), 3) == (5, b"m5")


def test_open_next_rejects_a_forged_record_and_keeps_waiting_for_the_genuine_one() -> None:
    sealer, opener = _pair()
    first, second = sealer.seal_data(b"first", 0), sealer.seal_data(b"second", 0)
    opener.open_fields(first)
    forged = bytearray(second)
    forged[-1] ^= 1
    with pytest.raises(AuthenticationError):
        opener.open_next(*_received(forged), 0)
    assert opener._channels[0].window.top == 0  # the window did not move
    assert opener.open_next(*_received(second), 0) == (1, b"second")


def test_the_continuation_flag_is_authenticated_and_never_taken_by_the_fast_paths() -> None:
    """A record's role (first or continuation, comm/bulk.py) is in the authenticated header:
    clearing or setting FLAG_CONTINUATION in transit fails the tag without moving the window,
    and a continuation record is never opened as a plain one by open_next."""
    sealer, opener = _pair()
    opener.open_fields(sealer.seal_data(b"set up channel 5", 5))
    for flags in (FLAG_CONTINUATION, FLAG_CONTINUATION | FLAG_MORE):
        record = sealer.seal(b"part", channel=5, flags=flags)
        assert parse_header(record).flags == flags
        assert opener.open_next(*_received(record), 5) is None  # not a plain DATA record
        for flipped in (flags & ~FLAG_CONTINUATION, flags ^ FLAG_MORE):
            moved = bytearray(record)
            moved[2] = flipped
            with pytest.raises(AuthenticationError):
                opener.open_fields(moved)
        assert opener.open_fields(record)[1:2] == (flags,)
    first = bytearray(sealer.seal(b"total", channel=5, flags=FLAG_MORE))
    first[2] |= FLAG_CONTINUATION  # a first record made to look like a continuation
    with pytest.raises(AuthenticationError):
        opener.open(first)
    assert opener._channels[5].window.top == 2  # no forged record moved the window
