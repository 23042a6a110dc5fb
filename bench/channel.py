"""Per-record cost of the secure channel against bare AES-GCM, side by side.

For each size, one "op" is seal + open of one record:
  bare     AESGCM.encrypt + AESGCM.decrypt (44-byte associated data, as a record header)
  records  Sealer.seal + Opener.open (record layer: header, counters, replay window)
  channel  SecureChannel.send + SecureChannel.receive_record (the full channel API)
Rounds alternate between the three so machine drift hits all alike; the median of the
rounds is reported. Run: python bench/channel.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mpish.wire.channel import Binding, Role, SecureChannel
from mpish.wire.noise import AESGCM_FUNCTIONS, HASHES, generate_keypair, public_bytes
from mpish.wire.record import Opener, Sealer

SIZES = (64, 1024, 64 * 1024, 1024 * 1024)


def _pair() -> tuple[SecureChannel, SecureChannel]:
    k0, k1 = generate_keypair(), generate_keypair()
    binding = Binding(os.urandom(16), 0, 1, "bench")
    init = SecureChannel(role=Role.INITIATOR, binding=binding, static_key=k0, remote_static=public_bytes(k1))
    resp = SecureChannel(role=Role.RESPONDER, binding=binding, static_key=k1, remote_static=public_bytes(k0))
    for r in init.initiate():
        resp.receive_record(r)
    for r in resp.records_to_send():
        init.receive_record(r)
    return init, resp


def _ops(size: int) -> dict[str, Callable[[], None]]:
    data = os.urandom(size)
    key = os.urandom(32)
    aead = AESGCM(key)
    nonce = bytes(12)
    ad = os.urandom(44)

    def bare() -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, data, ad), ad)

    session = os.urandom(16)
    sealer = Sealer(AESGCM_FUNCTIONS, HASHES["SHA256"], key, session, 0, 1)
    opener = Opener(AESGCM_FUNCTIONS, HASHES["SHA256"], key, session, 0, 1)

    def records() -> None:
        opener.open(sealer.seal(data))

    init, resp = _pair()
    send, receive = init.send, resp.receive_record

    def channel() -> None:
        for record in send(data):
            receive(record)

    return {"bare": bare, "records": records, "channel": channel}


def _time(op: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        op()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results: dict[tuple[int, str], float] = {}
    print(f"{'size':>8} {'kind':>8} {'us/op':>10} {'ops/s':>12} {'GB/s':>8} {'vs bare':>8}")
    for size in SIZES:
        ops = _ops(size)
        count = max(20, min(20000, 40_000_000 // (size * 20 + 20_000)))
        samples: dict[str, list[float]] = {name: [] for name in ops}
        for op in ops.values():  # warm-up
            _time(op, max(5, count // 10))
        for _ in range(args.rounds):
            for name, op in ops.items():
                samples[name].append(_time(op, count))
        for name in ops:
            results[(size, name)] = statistics.median(samples[name])
        bare = results[(size, "bare")]
        for name in ops:
            t = results[(size, name)]
            gbps = size / t / 1e9
            print(f"{size:>8} {name:>8} {t * 1e6:>10.2f} {1 / t:>12.0f} {gbps:>8.3f} {t / bare:>8.2f}")
    mib = 1024 * 1024
    overhead_1k = results[(1024, "channel")] / results[(1024, "bare")]
    gbps_1m = mib / results[(mib, "channel")] / 1e9
    aead_gbps_1m = mib / results[(mib, "bare")] / 1e9
    print(f"RESULT overhead_1k={overhead_1k:.2f} gbps_1m={gbps_1m:.3f} aead_gbps_1m={aead_gbps_1m:.3f}")


if __name__ == "__main__":
    main()
