"""Benchmark of the MPI shell: round trip, streaming throughput, fan-out.

Run: .venv/bin/python bench/shell.py [-n K] [--mib 1024]
Prints a table, then one RESULT line. The console is this process (embedded spawn of K
servers, as ``mpish -n K``); keys are made in a temporary MPISH_HOME. The streaming
figure (``head -c N /dev/zero`` on one server, its output counted by the console) and
the local pipe's (``head -c N /dev/zero | cat > /dev/null``) are measured in alternating
rounds (--rounds, each round N bytes both ways), and every sample is printed; the rates
reported are the medians, and ``stream_ratio`` is the median stream rate over the median
pipe rate, so one pipe sample that the scheduler happened to favour (the pipe's rate swings
2-6 GB/s on a 2-core machine) does not decide the ratio. Where the stream's time goes: the
console's and the server's CPU seconds per GiB over all rounds (os.times, /proc stat).

The floor, measured in the same run: AES-GCM sealing and opening of one record's worth
(``Sealer.seal_into`` into a reused buffer, ``Opener.open_fields``) in this process, and
raw MPI bandwidth for records of the same size between two ranks of a separate
``mpiexec -n 2`` (rank 1 keeps up to 4 ``Isend`` in flight, rank 0 ``Improbe`` and
``Recv``s into one buffer, as :class:`~mpish.transport.mpi.MpiLink` does), no crypto.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


class CountingSink:
    """Counts output bytes; keeps nothing."""

    def __init__(self) -> None:
        self.nbytes = 0

    def output(self, rank: int, stream: int, data: bytes) -> None:
        self.nbytes += len(data)

    def done(self, result: object) -> None:
        pass

    def finish(self) -> None:
        pass


def server_cpu_seconds() -> float:
    """CPU seconds (user + system) used so far by this console's spawned servers."""
    mine = str(os.getpid()).encode()
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if b"mpish.shell.mpi_server" in argv and mine in argv:
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def raw_mpi(total: int, size: int) -> None:
    """Under ``mpiexec -n 2``: rank 1 sends ``total`` bytes to rank 0 in ``size``-byte
    messages; rank 0 prints the rate (MB/s)."""
    from mpish.transport.mpi import mpi

    MPI = mpi()
    comm = MPI.COMM_WORLD
    count = max(1, total // size)
    comm.Barrier()
    start = time.perf_counter()
    if comm.Get_rank() == 1:
        buffers = [bytearray(size) for _ in range(4)]
        pending: list[object] = []
        for i in range(count):
            while len(pending) >= len(buffers):
                done = set(MPI.Request.Testsome(pending) or ())
                pending = [r for j, r in enumerate(pending) if j not in done]
            pending.append(comm.Isend([buffers[i % len(buffers)], MPI.BYTE], 0, 7))
        MPI.Request.Waitall(pending)
    elif comm.Get_rank() == 0:
        buffer = bytearray(size)
        status = MPI.Status()
        for _ in range(count):
            message = None
            while message is None:
                message = comm.Improbe(1, 7, status)
            message.Recv([buffer, MPI.BYTE])
    comm.Barrier()
    if comm.Get_rank() == 0:
        print(f"{count * size / (time.perf_counter() - start) / 1e6:.0f}", flush=True)


def raw_mpi_rate(total: int, size: int) -> float:
    """raw_mpi in a separate ``mpiexec -n 2`` (the venv's, as the session uses)."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec), "-n", "2", sys.executable, __file__, "--raw-mpi", str(total), str(size)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=600).stdout
    return float(out.split()[-1])


def crypto_rates(total: int, payload_size: int) -> tuple[float, float]:
    """AES-GCM seal and open rates (MB/s) of records as the shell's channels make them:
    ``seal_into`` reused buffers, ``open_fields`` (its fast path, a fresh plaintext)."""
    from mpish.wire.noise import ProtocolName
    from mpish.wire.record import MAX_RECORD, Opener, Sealer

    suite = ProtocolName.parse("Noise_KK_25519_AESGCM_SHA256")
    key, session = os.urandom(32), os.urandom(16)
    payload = bytearray(os.urandom(payload_size))
    records = [bytearray(MAX_RECORD) for _ in range(16)]
    rounds = max(1, total // payload_size // len(records))
    seal_s = open_s = 0.0
    for _ in range(rounds):
        sealer = Sealer(suite.cipher, suite.hash, key, session, 1, 0)
        opener = Opener(suite.cipher, suite.hash, key, session, 1, 0)
        start = time.perf_counter()
        views = [memoryview(out)[: sealer.seal_into(out, payload, channel=1)] for out in records]
        seal_s += time.perf_counter() - start
        start = time.perf_counter()
        for view in views:
            opener.open_fields(view)
        open_s += time.perf_counter() - start
    done = rounds * len(records) * payload_size / 1e6
    return done / seal_s, done / open_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=4, help="shell servers for the fan-out")
    parser.add_argument("--mib", type=int, default=1024, help="MiB to stream")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="alternating stream/pipe rounds of --mib each")
    parser.add_argument("--raw-mpi", nargs=2, type=int, metavar=("BYTES", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_mpi:
        raw_mpi(*args.raw_mpi)
        return 0
    home = tempfile.mkdtemp(prefix="mpish-bench-")
    atexit.register(shutil.rmtree, home, True)  # its private key is of this run only
    os.environ["MPISH_HOME"] = home
    from mpish import keys
    from mpish.shell import mpi_session as launch
    from mpish.shell.console import Console

    keys.generate_identity(home)
    size = args.mib << 20
    rows: list[tuple[str, str]] = []

    session = launch.start_console(args.n)
    console = Console(session)
    try:
        one = [min(console.hosts)]
        console.run("true", one, CountingSink())  # warm up
        samples = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            console.run("true", one, CountingSink())
            samples.append(time.perf_counter() - start)
        true_ms = median_ms(samples)
        local = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            subprocess.run(["bash", "--noprofile", "--norc", "-c", "true"], check=True)
            local.append(time.perf_counter() - start)
        local_ms = median_ms(local)
        command = f"head -c {size} /dev/zero"
        stream_s = console_cpu = server_cpu = 0.0
        streams: list[float] = []
        pipes: list[float] = []
        for turn in range(args.rounds):
            # alternate which goes first, so neither always runs right after the other
            order = ("stream", "pipe") if turn % 2 == 0 else ("pipe", "stream")
            for what in order:
                if what == "pipe":
                    start = time.perf_counter()
                    subprocess.run(["bash", "-c", f"{command} | cat > /dev/null"], check=True)
                    pipes.append(size / (time.perf_counter() - start) / 1e6)
                    continue
                sink = CountingSink()
                cpu, served = os.times(), server_cpu_seconds()
                start = time.perf_counter()
                console.run(command, one, sink)
                took = time.perf_counter() - start
                stream_s += took
                streams.append(size / took / 1e6)
                after = os.times()
                console_cpu += after.user + after.system - cpu.user - cpu.system
                server_cpu += server_cpu_seconds() - served
                assert sink.nbytes == size, sink.nbytes
        stream = statistics.median(streams)
        pipe = statistics.median(pipes)
        gib = size * args.rounds / (1 << 30)
        every = list(console.hosts)
        fan = []
        for _ in range(max(5, args.repeat // 2)):
            start = time.perf_counter()
            console.run("hostname", every, CountingSink())
            fan.append(time.perf_counter() - start)
        fan_ms = median_ms(fan)
    finally:
        console.close()
    from mpish.shell.server.loop import READ_SIZE
    from mpish.wire.noise import TAGLEN
    from mpish.wire.record import HEADER_SIZE

    record = HEADER_SIZE + READ_SIZE + TAGLEN  # the server's full records
    seal, opened = crypto_rates(min(size, 512 << 20), READ_SIZE)
    raw = raw_mpi_rate(min(size, 1 << 30), record)
    ratio = stream / pipe
    k = len(every)
    rows = [
        ("round trip 'true', one server (median ms)", f"{true_ms:.2f}"),
        ("local subprocess.run bash -c true (median ms)", f"{local_ms:.2f}"),
        (f"stream {args.mib} MiB server -> console (MB/s, median of {len(streams)})", f"{stream:.0f}"),
        (f"same {args.mib} MiB, head | cat > /dev/null (MB/s, median of {len(pipes)})", f"{pipe:.0f}"),
        ("stream / pipe (medians)", f"{ratio:.2f}"),
        ("stream: wall seconds per GiB", f"{stream_s / gib:.3f}"),
        ("stream: console CPU seconds per GiB", f"{console_cpu / gib:.3f}"),
        ("stream: server CPU seconds per GiB (its rank process)", f"{server_cpu / gib:.3f}"),
        (f"floor: raw MPI, {record}-byte messages, no crypto (MB/s)", f"{raw:.0f}"),
        (f"floor: AES-GCM seal, {record}-byte records (MB/s)", f"{seal:.0f}"),
        (f"floor: AES-GCM open, {record}-byte records (MB/s)", f"{opened:.0f}"),
        (f"'hostname' on all {k} servers (median ms)", f"{fan_ms:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    print("samples in run order (MB/s): stream " + " ".join(f"{x:.0f}" for x in streams)
          + " | pipe " + " ".join(f"{x:.0f}" for x in pipes))
    print(
        f"RESULT true_ms={true_ms:.2f} local_true_ms={local_ms:.2f} stream_mb_s={stream:.0f} "
        f"pipe_mb_s={pipe:.0f} fanout_ms_{k}={fan_ms:.2f} raw_mpi_mb_s={raw:.0f} seal_mb_s={seal:.0f} "
        f"open_mb_s={opened:.0f} console_cpu_s_gib={console_cpu / gib:.3f} "
        f"server_cpu_s_gib={server_cpu / gib:.3f} stream_min_mb_s={min(streams):.0f} "
        f"stream_max_mb_s={max(streams):.0f} pipe_min_mb_s={min(pipes):.0f} pipe_max_mb_s={max(pipes):.0f} "
        f"stream_ratio={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
