"""Benchmark of the MPI shell: round trip, streaming throughput, fan-out.

Run: .venv/bin/python bench/shell.py [-n K] [--mib 1024]
Prints a table, then one RESULT line. The console is this process (embedded spawn of K
servers, as ``mpish -n K``); keys are made in a temporary MPISH_HOME. The streaming and
the local-pipe figures are measured in alternating rounds (--rounds, same bytes in
total), so that a machine whose load changes during the run affects both alike.
"""

from __future__ import annotations

import argparse
import os
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


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=4, help="shell servers for the fan-out")
    parser.add_argument("--mib", type=int, default=1024, help="MiB to stream")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4, help="alternating stream/pipe rounds")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mpish-bench-")
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
        part = size // args.rounds
        command = f"head -c {part} /dev/zero"
        stream_s = pipe_s = 0.0
        for _ in range(args.rounds):
            sink = CountingSink()
            start = time.perf_counter()
            console.run(command, one, sink)
            stream_s += time.perf_counter() - start
            assert sink.nbytes == part, sink.nbytes
            start = time.perf_counter()
            with subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE) as proc:
                assert proc.stdout is not None
                got = 0
                while chunk := proc.stdout.read1(1 << 20):
                    got += len(chunk)
            pipe_s += time.perf_counter() - start
            assert got == part
        stream = part * args.rounds / stream_s / 1e6
        pipe = part * args.rounds / pipe_s / 1e6
        every = list(console.hosts)
        fan = []
        for _ in range(max(5, args.repeat // 2)):
            start = time.perf_counter()
            console.run("hostname", every, CountingSink())
            fan.append(time.perf_counter() - start)
        fan_ms = median_ms(fan)
    finally:
        console.close()
    k = len(every)
    rows = [
        ("round trip 'true', one server (median ms)", f"{true_ms:.2f}"),
        ("local subprocess.run bash -c true (median ms)", f"{local_ms:.2f}"),
        (f"stream {args.mib} MiB server -> console (MB/s)", f"{stream:.0f}"),
        (f"same {args.mib} MiB through a local pipe (MB/s)", f"{pipe:.0f}"),
        (f"'hostname' on all {k} servers (median ms)", f"{fan_ms:.2f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10}")
    print(
        f"RESULT true_ms={true_ms:.2f} local_true_ms={local_ms:.2f} stream_mb_s={stream:.0f} "
        f"pipe_mb_s={pipe:.0f} fanout_ms_{k}={fan_ms:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
