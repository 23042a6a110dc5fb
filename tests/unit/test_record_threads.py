"""A Sealer used by several threads at once never gives two records the same counter.

A counter is the AEAD nonce: the same (key, nonce) twice under AES-GCM leaks the key
stream and allows forgeries. ``mpish.secure(comm)`` may be called from several threads
(mpi4py asks for MPI_THREAD_MULTIPLE), so the draw must not depend on which thread runs.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest

from mpish.wire.errors import ReplayError
from mpish.wire.noise import AESGCM_FUNCTIONS, HASHES
from mpish.wire.record import HEADER, SMALL_RECORD, Limits, Opener, Sealer, parse_header


def _pair(limits: Limits | None = None) -> tuple[Sealer, Opener]:
    key, session = os.urandom(32), os.urandom(16)
    suite = (AESGCM_FUNCTIONS, HASHES["SHA256"], key, session, 0, 1, limits)
    return Sealer(*suite), Opener(*suite)


@pytest.fixture
def tiny_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the interpreter switches threads as often as it can
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class _SlowFirstEncrypt:
    """The channel's AEAD, whose first encryption (in thread ``slow``) waits until another
    thread sealed a whole record: a thread switch forced right after the counter was read."""

    def __init__(self, aead: object, slow: threading.Thread | None = None) -> None:
        self.aead = aead
        self.slow = slow
        self.other_sealed = threading.Event()
        self.nonces: list[bytes] = []

    def encrypt(self, nonce: bytes, data: bytes, ad: bytes) -> bytes:
        self.nonces.append(bytes(nonce))
        if threading.current_thread() is self.slow:
            self.other_sealed.wait(timeout=10)
        return self.aead.encrypt(nonce, data, ad)  # type: ignore[attr-defined]


def test_a_thread_switch_between_drawing_a_counter_and_sealing_never_reuses_the_counter() -> None:
    sealer, opener = _pair()
    opener.open(sealer.seal_data(b"first", 7))  # the channel exists: seal_data's hot path
    state = sealer._channels[7]
    records: dict[str, bytes | bytearray] = {}

    def seal(name: str) -> None:
        records[name] = sealer.seal_data(name.encode(), 7)

    slow = threading.Thread(target=seal, args=("slow",))
    hook = _SlowFirstEncrypt(state.aead, slow)
    state.aead = hook  # type: ignore[assignment]
    slow.start()
    while not hook.nonces:  # the slow thread has its counter and waits inside encrypt
        threading.Event().wait(0.001)
    seal("fast")
    hook.other_sealed.set()
    slow.join(timeout=10)
    counters = {name: parse_header(record).counter for name, record in records.items()}
    assert counters["slow"] != counters["fast"], counters
    assert len(set(hook.nonces)) == len(hook.nonces) == 2
    assert sorted(counters.values()) == [1, 2]
    for name in sorted(records, key=counters.__getitem__):  # in counter order both authenticate
        assert opener.open(records[name])[1] == name.encode()


@pytest.mark.usefixtures("tiny_switch_interval")
@pytest.mark.parametrize("path", ["seal_data", "seal", "seal_into"])
def test_many_threads_sealing_on_one_channel_draw_every_counter_exactly_once(path: str) -> None:
    threads, per_thread, channel = 8, 1500, 3
    sealer, _ = _pair(Limits(rekey_shift=11))  # a rekey every 2,048 records: the epoch path too
    size = 64 if path != "seal_into" else SMALL_RECORD + 1
    seen: list[list[int]] = [[] for _ in range(threads)]
    refused = [0] * threads  # a thread that drew its counter two rekeys ago is refused (its key is gone)
    start = threading.Barrier(threads)

    def work(index: int) -> None:
        payload = bytes(size)
        out = bytearray(HEADER.size + size + 16)
        start.wait()
        for _ in range(per_thread):
            try:
                record = seal_one(payload, out)
            except ReplayError:
                refused[index] += 1
                continue
            seen[index].append(parse_header(record).counter)

    def seal_one(payload: bytes, out: bytearray) -> bytes | bytearray:
        if path == "seal_data":
            return sealer.seal_data(payload, channel)
        if path == "seal":
            return sealer.seal(payload, channel=channel)
        sealer.seal_into(out, payload, channel=channel)
        return out

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    used = [n for counters in seen for n in counters]
    assert len(set(used)) == len(used), "a counter (the AEAD nonce) was used twice"
    assert len(used) + sum(refused) == threads * per_thread
    assert set(used) <= set(range(threads * per_thread))
    assert sealer.next_counter(channel) == threads * per_thread
