"""mpish.secure(comm) against raw mpi4py, its floor and the seed's RSA+EAX scheme; setup cost.

Run: ``python bench/comm.py`` (not under mpiexec: it launches its own jobs). MPISH_HOME
must hold an mpish key, else a temporary one is made. One invocation runs:

1. ``mpiexec -n 2`` on shared memory: ping-pongs of raw mpi4py, secure(comm) and the
   seed's scheme, and the floor of the secure round trip measured in the same rounds;
2. ``mpiexec -n 2`` over TCP (MPICH: ``MPIR_CVAR_NOLOCAL=1 MPIR_CVAR_CH4_NETMOD=ofi
   FI_PROVIDER=tcp``): raw and secure ping-pongs;
3. ``mpiexec -n 2, 8, 32`` (oversubscribed on this machine): ``secure(COMM_WORLD)``,
   per-rank setup CPU.

Robust to a loaded machine: for each size the modes run in short rounds, one after the
other (raw, secure, seed, raw, secure, seed, ...), ROUNDS times; the table shows the
median round of each mode and every ratio is the median of the per-round ratios, so
raw and secure are always measured side by side under the same load.

The floor of a 1 KiB round trip is the raw round trip plus two seals and two opens of
1 KiB, timed in the same round with the AEAD object the secure communicator's sealer
uses (AES-256-GCM with the 44-byte header as associated data); the bandwidth floor is
min(raw, seal, open). The receiving core's cap (``bw_cap_*``): MPICH's shared memory
copies a large message in the receiving process (CMA), so a secure receiver does, in
series for every record, MPI's copy (at best at the raw rate), the open of 256 KiB and
the copy to the user's buffer; the bandwidth of that sum, over raw, is the most a secure
transfer over MPI can reach (comm/bulk.py). ``tcp_bw_cap_*``: over loopback TCP each core
does its socket copy (at the raw rate) and its own part in series: the sender seals, the
receiver opens and copies to the user; the slower side's sum. ``floor_rtt_ratio_1k`` is
secure / floor: what the record layer, matching and Python cost on top of the cipher.
``open_threads_x2``: two threads of rank 0 opening 256 KiB records at once, over one
thread's rate, while rank 1 waits in MPI: the room a helper thread would have to open
records beside MPI's copy (~2 with a spare core).

Setup CPU: per rank, the CPU time of ``secure(COMM_WORLD)`` minus the CPU time spent
inside MPI calls (the communicator is wrapped in a proxy that times them): with 32
ranks on 2 cores a waiting rank spins in MPI, so its CPU time says nothing about the
setup's own work. Each rank's figure is its least over 5 runs (interference only adds
CPU time); the RESULT is the slowest rank's. The model for 10,000
and 100,000 ranks multiplies what grows with the world size (see comm/setup.py).

The seed scheme (seeds/004): every message gets a fresh AES-128 key, wrapped with the
receiver's RSA-2048 key (OAEP), and the payload is sealed with AES-EAX; the pieces go
through mpi4py's pickle-based ``send``/``recv``.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import math
import os
import shutil
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
SETUP_RANKS = (2, 8, 32)
TCP_ENV = {"MPIR_CVAR_NOLOCAL": "1", "MPIR_CVAR_CH4_NETMOD": "ofi", "FI_PROVIDER": "tcp"}
SHM_MODES = ("raw-buf", "raw-obj", "secure-buf", "secure-obj", "seed")
TCP_MODES = ("raw-buf", "secure-buf")


def _iterations(size: int, mode: str) -> int:
    """Round trips per round."""
    if mode == "seed":
        return {8: 8, 1024: 8, 65536: 6, 1 << 20: 2, 16 << 20: 1}[size]
    return {8: 500, 1024: 500, 65536: 100, 1 << 20: 12, 16 << 20: 3}[size]


# -- worker: setup cost (inside mpiexec -n N)


def _timed(comm: Any) -> Any:
    """``comm`` as a real mpi4py communicator (secure() takes nothing else) whose MPI calls add
    their CPU time, and this wrapper's own (from the attribute lookup on), to ``_Inside.cpu``;
    the communicators it makes are timed too."""
    from mpi4py import MPI

    makers = frozenset({"Dup", "Split", "Split_type", "Create", "Create_group"})

    class Timed(MPI.Intracomm):  # type: ignore[misc]
        def __getattribute__(self, name: str) -> Any:
            looked_up = time.process_time()
            attr = super().__getattribute__(name)
            if name.startswith("_") or not callable(attr):
                return attr

            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = attr(*args, **kwargs)
                finally:
                    _Inside.cpu += time.process_time() - looked_up
                return Timed(result) if name in makers else result

            return call

    return Timed(comm)


class _Inside:
    """CPU of waiting, not of setup's work: MPI calls, and yielding the core to other ranks
    while a message is awaited (setup polls with Improbe + sched_yield where a blocking
    Mprobe would spin inside MPI; both are waiting, and grow with the time spent waiting)."""

    cpu = 0.0
    yields = 0

    @classmethod
    def sched_yield(cls, original: Any = os.sched_yield) -> None:
        start = time.process_time()
        original()
        cls.yields += 1
        cls.cpu += time.process_time() - start


def _opcodes(run: Callable[[], Any]) -> tuple[Any, int]:
    """``run()`` and the Python opcodes it executed outside waiting: a count of the setup's own
    work that, unlike CPU time, time slicing cannot inflate (C work such as X25519 is not in
    it). Waiting is setup's poll loop (``_await``) and this file's MPI call wrappers."""
    from mpish.comm import setup

    wait = getattr(setup, "_await", None)  # absent before the poll loop had its own function
    skip, count = getattr(wait, "__code__", None), [0]

    def local(frame: Any, event: str, arg: Any) -> Any:
        count[0] += event == "opcode"
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is skip or frame.f_code.co_filename == __file__:
            return None
        frame.f_trace_opcodes = True
        return local

    sys.settrace(tracer)
    try:
        result = run()
    finally:
        sys.settrace(None)
    return result, count[0]


def setup_run(repeats: int = 5) -> None:
    """Time secure(COMM_WORLD): per rank, the least CPU outside MPI calls over ``repeats``
    runs (interference only ever adds CPU time), then the slowest rank and the mean; beside
    it each rank's work (opcodes, one more untimed run) and involuntary context switches."""
    import resource

    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    os.sched_yield = _Inside.sched_yield  # counted as waiting, see _Inside
    cpus, walls, switches = [], [], []
    for _ in range(repeats):
        world.Barrier()
        _Inside.cpu = 0.0
        before = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        wall, cpu = time.perf_counter(), time.process_time()
        comm = mpish.secure(_timed(world))
        cpus.append(time.process_time() - cpu - _Inside.cpu)
        walls.append(time.perf_counter() - wall)
        switches.append(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - before)
        comm.Free()
    world.Barrier()
    comm, ops = _opcodes(lambda: mpish.secure(_timed(world)))
    comm.Free()
    best = cpus.index(min(cpus))
    values = world.gather((cpus[best], min(walls), ops, switches[best]), 0)
    if values is not None:
        slowest = max(range(len(values)), key=lambda r: values[r][0])
        result = {
            "ranks": world.Get_size(),
            "cpu_ms_max": values[slowest][0] * 1000,
            "cpu_ms_mean": statistics.mean(v[0] for v in values) * 1000,
            "wall_ms": max(v[1] for v in values) * 1000,
            "ops_max": max(v[2] for v in values),
            "ops_min": min(v[2] for v in values),
            "ops_slowest": values[slowest][2],
            "switches_slowest": values[slowest][3],
            # the rank with the least work (a leaf: one handshake, as at 2 ranks) and its CPU
            "cpu_ms_least_work": min(v[0] for v in values if v[2] == min(w[2] for w in values)) * 1000,
        }
        print("SETUP " + json.dumps(result), flush=True)


# -- worker: ping-pongs (inside mpiexec -n 2)


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


def pingpong(mode: str, size: int, raw: Any, sec: Any, seed: Seed | None) -> Callable[[int], float]:
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
        assert seed is not None

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


def floor_costs(sec: Any) -> dict[str, float]:
    """Seconds per 1 KiB seal and open, and per-byte 1 MiB seal and open, with the sealer's AEAD."""
    sealer = sec._p2p.sealers[1]
    aead = sealer._state.aead  # the AES-GCM object that seals every tag to rank 1
    nonce, header = bytes(12), bytes(44)
    small, big = bytes(1024), bytes(1 << 20)
    sealed_small, sealed_big = aead.encrypt(nonce, small, header), aead.encrypt(nonce, big, header)
    out, plain = bytearray(len(sealed_big)), bytearray(1 << 20)
    # A continuation record's receiving-side work besides MPI's own copy (comm/bulk.py):
    # open 256 KiB into the scratch, then copy the scratch into a 16 MiB user buffer.
    chunk = 256 * 1024
    record = aead.encrypt(nonce, bytes(chunk), header)
    scratch, user = bytearray(chunk), bytearray(16 << 20)
    spots = [memoryview(user)[k : k + chunk] for k in range(0, len(user), chunk)]

    def copy_all() -> None:
        for spot in spots:
            spot[:] = scratch

    costs = {}
    for name, fn, n in (
        ("open_256k", lambda: aead.decrypt_into(nonce, record, header, scratch), 200),
        ("copy_16m", copy_all, 5),
        ("seal_1k", lambda: aead.encrypt(nonce, small, header), 2000),
        ("open_1k", lambda: aead.decrypt(nonce, sealed_small, header), 2000),
        ("seal_1m", lambda: aead.encrypt_into(nonce, big, header, out), 20),
        ("open_1m", lambda: aead.decrypt_into(nonce, sealed_big, header, plain), 20),
    ):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        costs[name] = (time.perf_counter() - start) / n
    costs["open_256k_2_threads"] = _two_threads(
        lambda out: aead.decrypt_into(nonce, record, header, out), chunk, 200
    )
    return costs


def _two_threads(work: Callable[[bytearray], Any], size: int, n: int) -> float:
    """Seconds per ``work`` when two threads each run it ``n`` times at once (each into its
    own buffer of ``size`` bytes): the headroom for a thread opening records beside MPI's
    copy on the receiving rank (comm/bulk.py), measured while the peer rank waits in MPI."""
    import threading

    def loop() -> None:
        out = bytearray(size)
        for _ in range(n):
            work(out)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.perf_counter() - start) / (2 * n)


def pingpong_run(modes: tuple[str, ...], rounds: int) -> None:
    """Per mode and size, ``rounds`` samples of seconds per round trip, modes interleaved."""
    from mpi4py import MPI

    import mpish

    world = MPI.COMM_WORLD
    if world.Get_size() != 2:
        raise SystemExit("the ping-pong runs with mpiexec -n 2")
    raw = world.Dup()
    sec = mpish.secure(world)
    seed = Seed(raw) if "seed" in modes else None
    samples: dict[str, list[float]] = {}
    floors: dict[str, list[float]] = {}
    for size in SIZES:
        runs = {mode: pingpong(mode, size, raw, sec, seed) for mode in modes}
        for run in runs.values():  # warm-up
            run(max(2, _iterations(size, "raw-buf") // 5))
        for _ in range(rounds):
            for mode, run in runs.items():
                samples.setdefault(f"{mode} {size}", []).append(run(_iterations(size, mode)))
            if size == 1024 and world.Get_rank() == 0:  # the floor, in the same round
                for key, value in floor_costs(sec).items():
                    floors.setdefault(key, []).append(value)
    raw.Barrier()
    assert sec.rejected == 0
    if world.Get_rank() == 0:
        print("SAMPLES " + json.dumps({"samples": samples, "floors": floors}), flush=True)
    sec.Free()
    raw.Free()


# -- driver (no MPI in this process)


def _launch(ranks: int, args: list[str], extra_env: dict[str, str], prefix: str) -> dict[str, Any]:
    drop = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "FI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra_env)
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable, __file__]
    proc = subprocess.run(command + args, env=env, capture_output=True, text=True, timeout=900, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith(prefix + " "):
            result: dict[str, Any] = json.loads(line[len(prefix) + 1 :])
            return result
    failed = f"{' '.join(command + args)} failed ({proc.returncode})"
    raise RuntimeError(f"{failed}:\n{proc.stdout}\n{proc.stderr}")


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios num[i] / den[i] (the rounds ran side by side)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def spread(num: list[float], den: list[float]) -> str:
    ratios = sorted(a / b for a, b in zip(num, den, strict=True))
    return f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}..{ratios[-1]:.2f})"


def pair_handshake_ms(rounds: int = 100) -> float:
    """CPU time of one KK handshake, both sides (what the eager pairwise setup paid per pair)."""
    from mpish.wire.channel import Binding
    from mpish.wire.noise import HandshakeState, generate_keypair, public_bytes

    name = "Noise_KK_25519_AESGCM_SHA256"
    a, b = generate_keypair(), generate_keypair()
    prologue = Binding(b"\0" * 16, 0, 1, "bench").prologue(name)
    start = time.process_time()
    for _ in range(rounds):
        i = HandshakeState(name, initiator=True, prologue=prologue, s=a, rs=public_bytes(b))
        r = HandshakeState(name, initiator=False, prologue=prologue, s=b, rs=public_bytes(a))
        r.read_message(i.write_message(b""))
        i.read_message(r.write_message(b""))
    return (time.process_time() - start) / rounds * 1000


def table(name: str, data: dict[str, Any], modes: tuple[str, ...]) -> None:
    samples = data["samples"]
    print(f"== {name}: median round trip (us) and bandwidth (2 x size / RTT, MB/s)")
    print(f"{'size':>8} | " + " | ".join(f"{m + ' us':>14} {'MB/s':>7}" for m in modes))
    for size in SIZES:
        cells = []
        for mode in modes:
            rtt = statistics.median(samples[f"{mode} {size}"])
            cells.append(f"{rtt * 1e6:14.1f} {2 * size / rtt / 1e6:7.0f}")
        print(f"{LABELS[size]:>8} | " + " | ".join(cells))
    print(f"   secure-buf / raw-buf RTT, median of {len(samples['raw-buf 8'])} rounds (min..max):")
    for size in SIZES:
        print(f"  {LABELS[size]:>6} {spread(samples[f'secure-buf {size}'], samples[f'raw-buf {size}'])}")


def floor_rtts(data: dict[str, Any]) -> list[float]:
    floors, raw = data["floors"], data["samples"]["raw-buf 1024"]
    return [r + 2 * s + 2 * o for r, s, o in zip(raw, floors["seal_1k"], floors["open_1k"], strict=True)]


def driver(rounds: int) -> None:
    if not os.environ.get("MPISH_HOME"):
        from mpish.keys import ensure_identity

        home = tempfile.mkdtemp(prefix="mpish-bench-")
        atexit.register(shutil.rmtree, home, True)  # its private key is of this run only
        ensure_identity(home)
        os.environ["MPISH_HOME"] = home
    load_before = os.getloadavg()[0]
    shm = _launch(2, ["--pingpong", *SHM_MODES, "--rounds", str(rounds)], {}, "SAMPLES")
    tcp = _launch(2, ["--pingpong", *TCP_MODES, "--rounds", str(rounds)], TCP_ENV, "SAMPLES")
    setups = {n: _launch(n, ["--setup"], {}, "SETUP") for n in SETUP_RANKS}
    pair_ms = pair_handshake_ms()
    load_after = os.getloadavg()[0]

    table("shared memory", shm, SHM_MODES)
    table("TCP (" + " ".join(f"{k}={v}" for k, v in TCP_ENV.items()) + ")", tcp, TCP_MODES)
    s, t = shm["samples"], tcp["samples"]
    floors = floor_rtts(shm)
    f = shm["floors"]
    seal_bw = statistics.median(1 / x for x in f["seal_1m"]) * (1 << 20) / 1e9
    open_bw = statistics.median(1 / x for x in f["open_1m"]) * (1 << 20) / 1e9
    raw_1k = statistics.median(s["raw-buf 1024"])
    print(
        f"floor (shared memory): 1 KiB seal {statistics.median(f['seal_1k']) * 1e6:.2f} us, open "
        f"{statistics.median(f['open_1k']) * 1e6:.2f} us; raw RTT {raw_1k * 1e6:.1f} us "
        f"+ 2 seals + 2 opens = {statistics.median(floors) * 1e6:.1f} us; secure / floor "
        f"{spread(s['secure-buf 1024'], floors)}"
    )
    open_rec = statistics.median(1 / x for x in f["open_256k"]) * (256 << 10) / 1e9
    # Two threads of one rank opening at once, over one: ~2 if a second core is free for a
    # helper thread (cryptography's AEAD calls release the GIL), ~1 if not (the peer rank
    # spins in MPI while it waits, and other load takes the rest).
    threads_x2 = median_ratio(f["open_256k"], f["open_256k_2_threads"])
    print(
        f"two threads of one rank open 256 KiB records at {threads_x2:.2f} x one thread's rate (the peer "
        "rank waiting in MPI): the room for a helper thread opening record k while MPI copies record k+1"
    )
    copy_bw = statistics.median(1 / x for x in f["copy_16m"]) * (16 << 20) / 1e9
    caps = {}
    for size in (1 << 20, 16 << 20):
        raw_bw = 2 * size / statistics.median(s[f"raw-buf {size}"]) / 1e9
        sec_bw = 2 * size / statistics.median(s[f"secure-buf {size}"]) / 1e9
        print(
            f"floor bandwidth {LABELS[size]}: min(raw {raw_bw:.2f}, seal {seal_bw:.2f}, "
            f"open {open_bw:.2f}) = "
            f"{min(raw_bw, seal_bw, open_bw):.2f} GB/s; secure {sec_bw:.2f} GB/s"
        )
        # The receiving core does, one after the other for every record: MPI's copy (CMA:
        # the receiver pulls, at the raw rate), the open into the scratch, the copy to the user.
        cap = 1 / (1 / raw_bw + 1 / open_rec + 1 / copy_bw)
        window = 1 / (1 / open_rec + 1 / copy_bw)
        caps[size] = cap / raw_bw
        print(
            f"  receiving core {LABELS[size]}: MPI copy {raw_bw:.2f} + open 256 KiB {open_rec:.2f} + copy to "
            f"user {copy_bw:.2f} GB/s in series = at most {cap:.2f} GB/s, {cap / raw_bw:.2f} of raw "
            f"(secure reached {sec_bw / raw_bw:.2f}); without MPI's copy (a shared window) "
            f"{window:.2f} GB/s, {window / raw_bw:.2f} of raw"
        )
    # Over loopback TCP the socket copies are the cores' own work (the sender's send copies
    # into the kernel, the receiver's recv copies out), at the raw rate; besides, the sender
    # seals every byte and the receiver opens it and copies it to the user: the slower side.
    tcp_caps = {}
    own = max(1 / seal_bw, 1 / open_rec + 1 / copy_bw)  # seconds per GB of the slower side's own work
    for size in (1 << 20, 16 << 20):
        raw_bw = 2 * size / statistics.median(t[f"raw-buf {size}"]) / 1e9
        sec_bw = 2 * size / statistics.median(t[f"secure-buf {size}"]) / 1e9
        cap = 1 / (1 / raw_bw + own)
        tcp_caps[size] = cap / raw_bw
        print(
            f"  TCP {LABELS[size]}: socket copies at the raw rate {raw_bw:.2f} GB/s + the slower side's "
            f"own work ({1 / own:.2f} GB/s) in series = at most {cap:.2f} GB/s, {cap / raw_bw:.2f} of raw "
            f"(secure reached {sec_bw / raw_bw:.2f})"
        )
    print("setup: secure(COMM_WORLD), CPU per rank outside MPI calls (each rank's best of 5), wall time")
    for n, setup in setups.items():
        print(
            f"  {n:>3} ranks: CPU max {setup['cpu_ms_max']:.2f} ms, mean {setup['cpu_ms_mean']:.2f} ms; "
            f"wall {setup['wall_ms']:.1f} ms (oversubscribed on {os.cpu_count()} cores)"
        )
        print(
            f"       work: opcodes outside waiting {setup['ops_min']}..{setup['ops_max']} per rank "
            f"(slowest rank {setup['ops_slowest']}, {setup['switches_slowest']} involuntary context "
            f"switches); least-work rank {setup['cpu_ms_least_work']:.2f} ms of CPU"
        )
    work = setups[32]["ops_max"] / setups[2]["ops_max"]
    slicing = setups[32]["cpu_ms_least_work"] / setups[2]["cpu_ms_least_work"]
    print(
        f"  32 over 2 ranks: work (opcodes) x{work:.2f} (an inner rank runs 3 handshakes, a 2-rank job's "
        f"1; X25519 in C, not counted, x3); CPU of the same work (least-work ranks) x{slicing:.2f}: "
        "time slicing (32 ranks on 2 cores: cold caches after each switch), not work"
    )
    top = setups[SETUP_RANKS[-1]]["cpu_ms_max"]
    for n in (10_000, 100_000):
        print(
            f"  model at {n:,} ranks: CPU per rank {top:.2f} ms (bounded: at most one tree parent and two "
            f"children, see comm/setup.py), {math.ceil(math.log2(n + 1))} tree levels of latency; the eager "
            f"pairwise KK setup it replaced: {pair_ms / 2 * (n - 1) / 1000:.1f} s per rank "
            f"({pair_ms:.3f} ms per handshake, both sides)"
        )
    print(
        f"load average (1 min) {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores: "
        "above ~1 the raw RTTs rise and every ratio drifts towards 1"
    )
    result = {
        "rtt_ratio_1k": median_ratio(s["secure-buf 1024"], s["raw-buf 1024"]),
        "bw_ratio_1m": median_ratio(s[f"raw-buf {1 << 20}"], s[f"secure-buf {1 << 20}"]),
        "bw_ratio_16m": median_ratio(s[f"raw-buf {16 << 20}"], s[f"secure-buf {16 << 20}"]),
        "floor_rtt_ratio_1k": median_ratio(s["secure-buf 1024"], floors),
        "tcp_rtt_ratio_1k": median_ratio(t["secure-buf 1024"], t["raw-buf 1024"]),
        "tcp_bw_ratio_1m": median_ratio(t[f"raw-buf {1 << 20}"], t[f"secure-buf {1 << 20}"]),
        "tcp_bw_ratio_16m": median_ratio(t[f"raw-buf {16 << 20}"], t[f"secure-buf {16 << 20}"]),
    }
    line = " ".join(f"{key}={value:.2f}" for key, value in result.items())
    speedup = median_ratio(s["seed 1024"], s["secure-buf 1024"])
    print(
        f"RESULT {line} seed_speedup_1k={speedup:.0f} setup_cpu_ms_2={setups[2]['cpu_ms_max']:.2f} "
        f"setup_cpu_ms_32={setups[32]['cpu_ms_max']:.2f} setup_work_ratio_32={work:.2f} "
        f"setup_slicing_ratio_32={slicing:.2f} bw_cap_1m={caps[1 << 20]:.2f} "
        f"bw_cap_16m={caps[16 << 20]:.2f} tcp_bw_cap_1m={tcp_caps[1 << 20]:.2f} "
        f"tcp_bw_cap_16m={tcp_caps[16 << 20]:.2f} open_threads_x2={threads_x2:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--setup", action="store_true", help="worker: time secure(COMM_WORLD)")
    parser.add_argument("--pingpong", nargs="+", choices=SHM_MODES, help="worker: ping-pong these modes")
    args = parser.parse_args()
    if args.setup:
        setup_run()
    elif args.pingpong:
        pingpong_run(tuple(args.pingpong), args.rounds)
    elif "PMI_RANK" in os.environ or "PMIX_RANK" in os.environ:
        raise SystemExit("run python bench/comm.py without mpiexec: it starts its own jobs")
    elif importlib.util.find_spec("Crypto") is None:  # the seed's baseline (pycryptodome)
        raise SystemExit(
            "bench/comm.py compares against the seed's scheme, which needs pycryptodome: "
            "install the bench extra first (.venv/bin/pip install -e '.[bench]')"
        )
    else:
        driver(args.rounds)


if __name__ == "__main__":
    main()
