"""Channels sharing one counter space (wire/shared.py, secure(comm)'s lanes): no state per
channel, exact replay protection however far records of different channels are reordered."""

from __future__ import annotations

import itertools
import os
import random
import tracemalloc

import pytest

from mpish.wire.errors import AuthenticationError, RemoteProtocolError, ReplayError
from mpish.wire.noise import AESGCM_FUNCTIONS, CHACHAPOLY_FUNCTIONS, HASHES
from mpish.wire.record import HEADER_SIZE, Limits, Opener, Sealer
from mpish.wire.replay import REPLAY_WINDOW, AcceptedCounters
from mpish.wire.shared import SharedOpener, SharedSealer


def _pair(limits: Limits | None = None, functions=AESGCM_FUNCTIONS) -> tuple[SharedSealer, SharedOpener]:
    key, session = os.urandom(32), os.urandom(16)
    suite = (functions, HASHES["SHA256"], key, session, 3, 5, limits)
    return SharedSealer(*suite), SharedOpener(*suite)


@pytest.mark.parametrize("seed", range(30))
def test_accepted_counters_match_a_set_of_every_counter_taken(seed: int) -> None:
    rng = random.Random(seed)
    accepted = AcceptedCounters()
    taken: set[int] = set()
    highest = -1
    total = rng.choice([50, 500, 3 * REPLAY_WINDOW])
    order = list(range(total))
    # Interleaved "channels": a few runs received out of their sealing order, far apart.
    cuts = sorted({0, total, *(rng.randrange(total) for _ in range(rng.randint(1, 12)))})
    runs = [order[a:b] for a, b in itertools.pairwise(cuts)]
    rng.shuffle(runs)
    arrivals = [n for run in runs for n in run]
    for _ in range(total // 5):  # duplicates and replays of counters already taken
        arrivals.insert(rng.randrange(len(arrivals) + 1), rng.randrange(total))
    for n in arrivals:
        if n in taken:
            with pytest.raises(ReplayError):
                accepted.check(n)
            continue
        accepted.check(n)
        accepted.accept(n)
        taken.add(n)
        highest = max(highest, n)
        assert accepted.top == highest
        if len(taken) % max(1, total // 100):  # the whole state, checked 100 times a history
            continue
        floor = accepted.floor
        assert set(range(floor)) <= taken and floor not in taken
        runs_held = set()
        for start, end in accepted.runs():
            assert floor < start < end
            runs_held.update(range(start, end))
        assert runs_held == {t for t in taken if t > floor}
    assert accepted.floor == total and accepted.runs() == [] and accepted.starts == accepted.ends == []


def test_every_other_counter_first_then_the_rest_leaves_no_run_and_refuses_every_replay() -> None:
    accepted = AcceptedCounters()  # two channels sealed alternately, one received wholly first
    total = 100_000
    for n in range(1, total, 2):
        accepted.check(n)
        accepted.accept(n)
    assert len(accepted.runs()) == total // 2 and accepted.floor == 0
    for n in range(0, total, 2):  # each fills the hole at the floor: the first run joins it
        accepted.check(n)
        accepted.accept(n)
        assert accepted.floor == n + 2
        assert len(accepted.starts) - accepted.head == total // 2 - n // 2 - 1  # runs left
        assert accepted.head <= max(64, len(accepted.starts) // 2)  # taken runs dropped in bulk
    assert accepted.floor == total and accepted.runs() == [] and accepted.starts == []
    for n in (0, 1, total // 2, total - 1):
        with pytest.raises(ReplayError):
            accepted.check(n)


def test_records_of_one_channel_taken_after_ten_thousand_of_another_are_accepted() -> None:
    sealer, opener = _pair()
    early = sealer.seal(b"sealed first", channel=7)
    later = [sealer.seal(b"x" * 10, channel=8) for _ in range(10_000)]  # beyond any sliding window
    for record in later:
        assert opener.open_fields(record)[2] == 8
    assert opener.open_fields(early)[2:] == (7, 0, b"sealed first")
    assert opener.floor() == 10_001 and opener._accepted.runs() == []
    for record in (early, later[0], later[-1]):
        with pytest.raises(ReplayError):
            opener.open_fields(record)


def test_a_channel_per_record_keeps_no_state_per_channel() -> None:
    sealer, opener = _pair()
    warm = [sealer.seal_data(b"warm", channel=c) for c in range(100)]
    for record in warm:
        opener.open_fields(record)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for channel in range(100, 20_100):  # a tag per step
            opener.open_fields(sealer.seal_data(b"step", channel=channel))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 20_000 * 8, f"{grown} bytes kept over 20,000 channels"  # per-channel state: ~2 KB each
    assert opener.floor() == 20_100


def test_a_record_moved_to_another_channel_fails_its_tag() -> None:
    sealer, opener = _pair()
    original = sealer.seal(b"for channel 4", channel=4)
    record = bytearray(original)
    record[28:32] = (5).to_bytes(4, "big")
    with pytest.raises(AuthenticationError):
        opener.open_fields(record)
    assert opener.floor() == 0  # nothing moved
    assert opener.open_fields(sealer.seal(b"next", channel=4))[3] == 1  # counter 1: 0 is a hole
    assert opener.floor() == 0 and opener._accepted.runs() == [(1, 2)]
    assert opener.open_fields(original)[2:] == (4, 0, b"for channel 4")  # the genuine one is taken
    assert opener.floor() == 2 and opener._accepted.runs() == []


def test_forged_records_do_not_move_the_floor_or_the_keys() -> None:
    sealer, opener = _pair(Limits(rekey_shift=4))
    records = [sealer.seal(bytes([i]), channel=i % 3) for i in range(40)]
    header = bytearray(records[20][:HEADER_SIZE])
    for n in (0, 21, 35, 2000):  # counters past, near and far ahead, with a random body
        header[32:40] = n.to_bytes(8, "big")
        with pytest.raises((AuthenticationError, RemoteProtocolError)):
            opener.open_fields(bytes(header) + os.urandom(17))
    assert opener.floor() == 0 and opener._state.keys.epochs() == [0]
    # Genuine records out of order across three key epochs: all taken, keys retired behind the floor.
    order = list(range(40))
    random.Random(3).shuffle(order)
    for i in order:
        assert opener.open_fields(records[i])[4] == bytes([i])
    assert opener.floor() == 40 and opener._state.keys.epochs() == [2]


@pytest.mark.parametrize("functions", [AESGCM_FUNCTIONS, CHACHAPOLY_FUNCTIONS])
def test_every_path_seals_and_opens_the_same_records(functions) -> None:
    sealer, opener = _pair(Limits(rekey_shift=3), functions)
    out = bytearray(HEADER_SIZE + 40_000 + 16)
    for i in range(30):
        channel = i % 4
        if i % 3 == 0:
            record = sealer.seal_data(b"d%d" % i, channel)
        elif i % 3 == 1:
            record = bytes(out[: sealer.seal_into(out, b"i%d" % i * 5000, channel=channel)])
        else:
            record = sealer.seal(b"s%d" % i, channel=channel)
        if i % 2:
            buf = bytearray(record)
            opened = opener.open_next(buf, len(buf), channel)
            if opened is None:  # a large record, or a rekey: the general path
                _, _, _, n, plain = opener.open_fields(record)
            else:
                n, plain = opened
        else:
            sink = bytearray(len(record))
            header, size = opener.open_into(record, sink)
            n, plain = header.counter, bytes(sink[:size])
        assert n == i and plain.startswith(b"dis"[i % 3 : i % 3 + 1])
    assert opener.floor() == 30


def test_shared_and_per_channel_keys_differ() -> None:
    key, session = os.urandom(32), os.urandom(16)
    suite = (AESGCM_FUNCTIONS, HASHES["SHA256"], key, session, 3, 5, None)
    per_channel = Sealer(*suite).seal(b"same bytes", channel=0)
    with pytest.raises(AuthenticationError):
        SharedOpener(*suite).open_fields(per_channel)
    with pytest.raises(AuthenticationError):
        Opener(*suite).open_fields(SharedSealer(*suite).seal(b"same bytes", channel=0))


def test_open_next_takes_only_the_record_after_the_highest_and_changes_nothing_else() -> None:
    sealer, opener = _pair()
    first, second, third = sealer.seal_data(b"a", 1), sealer.seal_data(b"b", 2), sealer.seal_data(b"c", 3)
    buf = bytearray(second)
    assert opener.open_next(buf, len(buf), 2) is None  # counter 1, the highest accepted is none
    assert opener.floor() == 0 and opener._accepted.top == -1
    assert opener.open_fields(second)[3] == 1
    buf = bytearray(first)
    assert opener.open_next(buf, len(buf), 1) is None  # counter 0: a hole below the highest
    buf = bytearray(third)
    assert opener.open_next(buf, len(buf), 3) == (2, b"c")  # after the highest, a hole below
    assert opener._accepted.runs() == [(1, 3)]
    assert opener.open_fields(first)[3] == 0 and opener.floor() == 3 and opener._accepted.runs() == []


def test_a_message_not_received_yet_leaves_the_hot_paths_on() -> None:
    sealer, opener = _pair()
    stranded = sealer.seal_data(b"received last", 99)
    assert opener.open_fields(sealer.seal_data(b"step", 1_000))[3] == 1  # a hole below: the general path
    for step in range(1, 1_000):  # each record right after the highest: the inline paths
        record = sealer.seal_data(b"step", 1_000 + step)
        if step % 2:
            assert opener.open_fields(record)[3] == step + 1
        else:
            buf = bytearray(record)
            assert opener.open_next(buf, len(buf), 1_000 + step) == (step + 1, b"step")
    assert opener.floor() == 0 and opener._accepted.runs() == [(1, 1_001)]
    assert opener.open_fields(stranded)[2:] == (99, 0, b"received last")
    assert opener.floor() == 1_001 and opener._accepted.runs() == []
