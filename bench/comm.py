"""Ping-pong latency and bandwidth: raw mpi4py vs mpish.secure(comm) vs the seed's RSA+EAX scheme.

Run: ``mpiexec -n 2 python bench/comm.py`` (MPISH_HOME must hold an mpish key; a
temporary one is made when it is unset). Rank 0 then launches
``mpiexec -n 32 python bench/comm.py --setup`` itself to time ``secure(COMM_WORLD)``
at 32 ranks. Prints a table, then one RESULT line.

Robust to a loaded machine: for each size the modes run in short rounds, one after the
other (raw, secure, seed, raw, secure, seed, ...), ROUNDS times; the table shows the
median round of each mode and every ratio is the median of the per-round ratios, so
raw and secure are always measured side by side under the same load.

The seed scheme (seeds/004): every message gets a fresh AES-128 key, wrapped with the
receiver's RSA-2048 key (OAEP), and the payload is sealed with AES-EAX; the pieces go
through mpi4py's pickle-based ``send``/``recv``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZES = (8, 1024, 64 * 1024, 1 << 20, 16 << 20)
LABELS = {8: "8 B", 1024: "1 KiB", 64 * 1024: "64 KiB", 1 << 20: "1 MiB", 16 << 20: "16 MiB"}


ROUNDS = 7


def _iterations(size: int, mode: str) -> int:
    """Round trips per round."""
    if mode == "seed":
        return {8: 8, 1024: 8, 65536: 6, 1 << 20: 2, 16 << 20: 1}[size]
    return {8: 500, 1024: 500, 65536: 100, 1 << 20: 12, 16 << 20: 3}[size]


def _ensure_home() -> None:
    if os.environ.get("MPISH_HOME"):
        return
    # One temporary home for all ranks: rank 0's launcher sets it before mpiexec when unset.
    raise SystemExit("set MPISH_HOME to a directory holding an mpish key (mpish keygen)")


def setup_run() -> None:
    """Inside ``mpiexec -n 32``: time secure(COMM_WORLD) (max over ranks, best of 3)."""
    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    best = float("inf")
    for _ in range(3):
        world.Barrier()
        start = time.perf_counter()
        comm = mpish.secure(world)
        elapsed = time.perf_counter() - start
        slowest = world.allreduce(elapsed, op=MPI.MAX)
        best = min(best, slowest)
        comm.Free()
    if world.Get_rank() == 0:
        print(f"SETUP ranks={world.Get_size()} setup_ms={best * 1000:.1f}", flush=True)


def pair_handshake_ms(rounds: int = 100) -> float:
    """CPU time of one KK handshake, both sides, for extrapolating the setup to many ranks."""
    from mpish.wire.channel import Binding
    from mpish.wire.noise import HandshakeState, generate_keypair, public_bytes

    name = "Noise_KK_25519_AESGCM_SHA256"
    a, b = generate_keypair(), generate_keypair()
    prologue = Binding(b"\0" * 16, 0, 1, "bench").prologue(name)
    start = time.perf_counter()
    for _ in range(rounds):
        i = HandshakeState(name, initiator=True, prologue=prologue, s=a, rs=public_bytes(b))
        r = HandshakeState(name, initiator=False, prologue=prologue, s=b, rs=public_bytes(a))
        r.read_message(i.write_message(b""))
        i.read_message(r.write_message(b""))
    return (time.perf_counter() - start) / rounds * 1000


def launch_setup(ranks: int) -> float:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "MPICH_"))
    }
    mpiexec = Path(sys.executable).parent / "mpiexec"
    proc = subprocess.run(
        [
            str(mpiexec if mpiexec.exists() else "mpiexec"),
            "-n",
            str(ranks),
            sys.executable,
            __file__,
            "--setup",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("SETUP"):
            fields = dict(item.split("=") for item in line.split()[1:])
            return float(fields["setup_ms"])
    raise RuntimeError(f"setup run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


class Seed:
    """The seed's scheme: per message RSA-2048 OAEP key wrap + AES-EAX, over pickle."""

    def __init__(self, comm: Any) -> None:
        from Crypto.PublicKey import RSA

        self.comm = comm
        self.key = RSA.generate(2048)
        self.peer = RSA.import_key(comm.sendrecv(self.key.publickey().export_key(), 1 - comm.Get_rank(), 99))

    def send(self, data: bytes, dest: int) -> None:
        from Crypto.Cipher import AES, PKCS1_OAEP

        session = os.urandom(16)
        wrapped = PKCS1_OAEP.new(self.peer).encrypt(session)
        cipher = AES.new(session, AES.MODE_EAX)
        ciphertext, tag = cipher.encrypt_and_digest(data)
        self.comm.send((wrapped, cipher.nonce, tag, ciphertext), dest, 5)

    def recv(self, source: int) -> bytes:
        from Crypto.Cipher import AES, PKCS1_OAEP

        wrapped, nonce, tag, ciphertext = self.comm.recv(None, source, 5)
        session = PKCS1_OAEP.new(self.key).decrypt(wrapped)
        plain: bytes = AES.new(session, AES.MODE_EAX, nonce=nonce).decrypt_and_verify(ciphertext, tag)
        return plain


def pingpong(mode: str, size: int, raw: Any, sec: Any, seed: Seed) -> Callable[[int], float]:
    """A function timing ``n`` round trips of ``size`` bytes; returns seconds per round trip."""
    import numpy as np

    rank = raw.Get_rank()
    peer = 1 - rank
    buf = np.zeros(size, dtype="u1")
    payload = bytes(size)

    if mode in ("raw-buf", "secure-buf"):
        comm = raw if mode == "raw-buf" else sec

        def once() -> None:
            if rank == 0:
                comm.Send(buf, peer, 1)
                comm.Recv(buf, peer, 1)
            else:
                comm.Recv(buf, peer, 1)
                comm.Send(buf, peer, 1)

    elif mode in ("raw-obj", "secure-obj"):
        comm = raw if mode == "raw-obj" else sec

        def once() -> None:
            if rank == 0:
                comm.send(payload, peer, 1)
                comm.recv(None, peer, 1)
            else:
                comm.send(comm.recv(None, peer, 1), peer, 1)

    else:

        def once() -> None:
            if rank == 0:
                seed.send(payload, peer)
                seed.recv(peer)
            else:
                seed.send(seed.recv(peer), peer)

    def timed(n: int) -> float:
        raw.Barrier()
        start = time.perf_counter()
        for _ in range(n):
            once()
        elapsed = time.perf_counter() - start
        result: float = raw.bcast(elapsed / n, 0)
        return result

    return timed


def measure(size: int, modes: tuple[str, ...], raw: Any, sec: Any, seed: Seed) -> dict[str, list[float]]:
    """Per mode, ROUNDS samples of seconds per round trip, the modes interleaved round by round."""
    runs = {mode: pingpong(mode, size, raw, sec, seed) for mode in modes}
    for mode, run in runs.items():  # warm-up
        run(max(2, _iterations(size, mode) // 5))
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(ROUNDS):
        for mode, run in runs.items():
            samples[mode].append(run(_iterations(size, mode)))
    return samples


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios num[i] / den[i] (the rounds ran side by side)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def _aead_rates(name: str, cls: Any) -> str:
    """Speeds of one AEAD of ``cryptography`` on one core, and with two threads sealing."""
    import threading

    data, nonce, ad = bytes(1 << 20), bytes(12), bytes(44)
    aeads = [cls(bytes(32)), cls(bytes(32))]
    outs = [bytearray((1 << 20) + 16), bytearray((1 << 20) + 16)]

    def seal(n: int, k: int) -> None:
        for _ in range(n):
            aeads[k].encrypt_into(nonce, data, ad, outs[k])

    seal(10, 0)
    start = time.perf_counter()
    seal(200, 0)
    serial = time.perf_counter() - start
    opened, sealed = bytearray(1 << 20), aeads[0].encrypt(nonce, data, ad)
    start = time.perf_counter()
    for _ in range(200):
        aeads[0].decrypt_into(nonce, sealed, ad, opened)
    opening = time.perf_counter() - start
    threads = [threading.Thread(target=seal, args=(100, k)) for k in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parallel = time.perf_counter() - start
    small = bytes(1024)
    start = time.perf_counter()
    for _ in range(20000):
        aeads[0].encrypt(nonce, small, ad)
    one_k = (time.perf_counter() - start) / 20000
    gigabytes = 200 * len(data) / 1e9
    return (
        f"{name}: seal {gigabytes / serial:.2f} GB/s, open {gigabytes / opening:.2f} GB/s on one core; "
        f"1 KiB seal {one_k * 1e6:.2f} us; two threads sealing: x{serial / parallel:.2f}"
    )


def crypto_rates() -> str:
    """AES-GCM and ChaCha20-Poly1305 speeds (a speedup > 1 with two threads: the GIL is released)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    return "\n".join(
        _aead_rates(name, cls)
        for name, cls in (("AES-256-GCM", AESGCM), ("ChaCha20-Poly1305", ChaCha20Poly1305))
    )


def main() -> None:
    if "--setup" in sys.argv:
        setup_run()
        return
    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    if world.Get_size() != 2:
        raise SystemExit("run with mpiexec -n 2")
    _ensure_home()
    raw = world.Dup()
    sec = mpish.secure(world)
    seed = Seed(raw)
    modes = ("raw-buf", "raw-obj", "secure-buf", "secure-obj", "seed")
    load_before = os.getloadavg()[0]
    samples: dict[tuple[str, int], list[float]] = {}
    for size in SIZES:
        for mode, values in measure(size, modes, raw, sec, seed).items():
            samples[mode, size] = values
    table = {key: statistics.median(values) for key, values in samples.items()}
    assert sec.rejected == 0
    setup_ms, pair_ms, rates = float("nan"), float("nan"), ""
    if world.Get_rank() == 0:
        pair_ms = pair_handshake_ms()
        rates = crypto_rates()
        try:
            setup_ms = launch_setup(32)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"setup run failed: {exc}", file=sys.stderr)
    request = raw.Ibarrier()  # rank 1 waits without spinning a core while rank 0 runs the 32-rank job
    while not request.Test():
        time.sleep(0.01)
    if world.Get_rank() != 0:
        return

    print(f"{'size':>8} | " + " | ".join(f"{m + ' RTT us':>16} {'MB/s':>8}" for m in modes))
    for size in SIZES:
        cells = []
        for mode in modes:
            rtt = table[mode, size]
            cells.append(f"{rtt * 1e6:16.1f} {2 * size / rtt / 1e6:8.1f}")
        print(f"{LABELS[size]:>8} | " + " | ".join(cells))
    print(
        f"secure(COMM_WORLD) at 32 ranks on {os.cpu_count()} cores: {setup_ms:.1f} ms; one KK handshake "
        f"(both sides): {pair_ms:.3f} ms, so eager setup costs each rank ~{pair_ms / 2:.2f} ms x (ranks - 1) "
        f"of CPU: ~{pair_ms / 2 * 9999 / 1000:.1f} s at 10,000 ranks"
    )
    print(rates)
    print(
        f"load average (1 min) {load_before:.1f} before the ping-pongs, {os.getloadavg()[0]:.1f} after, "
        f"on {os.cpu_count()} cores: above ~1 the raw RTTs rise and every ratio drifts towards 1"
    )
    print(f"ratios: median of {ROUNDS} side-by-side rounds (min..max):")
    for size in SIZES:
        ratios = sorted(
            a / b for a, b in zip(samples["secure-buf", size], samples["raw-buf", size], strict=True)
        )
        print(
            f"  {LABELS[size]:>6} secure-buf / raw-buf RTT {statistics.median(ratios):.2f} "
            f"({ratios[0]:.2f}..{ratios[-1]:.2f})"
        )
    rtt_ratio = median_ratio(samples["secure-buf", 1024], samples["raw-buf", 1024])
    bw_1m = median_ratio(samples["raw-buf", 1 << 20], samples["secure-buf", 1 << 20])
    bw_16m = median_ratio(samples["raw-buf", 16 << 20], samples["secure-buf", 16 << 20])
    speedup = median_ratio(samples["seed", 1024], samples["secure-buf", 1024])
    print(
        f"RESULT rtt_ratio_1k={rtt_ratio:.2f} bw_ratio_1m={bw_1m:.2f} bw_ratio_16m={bw_16m:.2f} "
        f"seed_speedup_1k={speedup:.0f} setup_ms_32={setup_ms:.1f}"
    )
    sec.Free()
    raw.Free()


if __name__ == "__main__":
    if "--setup" not in sys.argv and not os.environ.get("MPISH_HOME") and "PMI_RANK" not in os.environ:
        # Convenience: `python bench/comm.py` alone re-launches itself under mpiexec -n 2 with a temp key.
        from mpish.keys import ensure_identity

        home = tempfile.mkdtemp(prefix="mpish-bench-")
        ensure_identity(home)
        os.environ["MPISH_HOME"] = home
        mpiexec = Path(sys.executable).parent / "mpiexec"
        raise SystemExit(subprocess.call([str(mpiexec), "-n", "2", sys.executable, __file__]))
    main()
