"""Calls over ssh: mpish's persistent agent against execnet, the seed, and ssh cat.

Starts its own sshd on 127.0.0.1 (tests/ssh/sshd_server.py, keys made per run) and
measures, all through that same sshd and the system ssh:

  call      median round trip of a trivial call (``remote.call(abs, -1)``) on a live agent
  lambda    the same with a lambda (cloudpickled by value each time)
  data      ``remote.call_data("operator.neg", 1)`` (msgpack only)
  execnet   median round trip of an execnet channel echo over ``ssh=`` (needs the ``bench``
            extra: pip install -e '.[bench]')
  seed      one new ``ssh host python agent.py`` per object, pickle length-prefixed on stdin,
            as seed 002 does (the baseline mpish replaces)
  connect   mpish: connect + run(obj) + close (what one object costs without reuse)
  bulk      a 256 MiB bytes object to the agent and back (``remote.call(identity, blob)``)
  ssh cat   the same 256 MiB through ``ssh host cat`` (written and read back concurrently,
            timed after the connection is up): the pipe's ceiling, both directions at once
  serial    256 MiB up through ssh, then 256 MiB down (``head -c``): the ceiling of a call,
            whose result cannot start before its argument has arrived

MB/s are 2**20-byte units of the object size over the round-trip time (the same
definition for bulk and ssh cat). Run: python bench/ssh_calls.py [--calls N] [--mib M]
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ssh"))
from sshd_server import SshServer

from mpish.ssh import Remote, connect

SEED_AGENT = """\
import pickle, struct, sys
size = struct.unpack(">L", sys.stdin.buffer.read(4))[0]
worker = pickle.loads(sys.stdin.buffer.read(size))
worker.run()
"""

SEED_TYPES = """\
class RemoteWorker(object):
    def run(self):
        print("Hello")
"""


def median_us(fn: object, n: int) -> float:
    assert callable(fn)
    for _ in range(min(50, n)):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def bench_calls(remote: Remote, n: int) -> dict[str, float]:
    return {
        "call": median_us(lambda: remote.call(abs, -1), n),
        "lambda": median_us(lambda: remote.call(lambda: 1), n),
        "data": median_us(lambda: remote.call_data("operator.neg", 1), n),
    }


def bench_seed(server: SshServer, workdir: Path, runs: int) -> float:
    (workdir / "seed_agent.py").write_text(SEED_AGENT)
    (workdir / "seed_types.py").write_text(SEED_TYPES)
    sys.path.insert(0, str(workdir))
    from seed_types import RemoteWorker  # type: ignore[import-not-found]

    command = f"cd {workdir} && {sys.executable} seed_agent.py"
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        workload = pickle.dumps(RemoteWorker())
        done = subprocess.run(
            ["ssh", *server.ssh_options, "host1", command],
            input=struct.pack(">L", len(workload)) + workload,
            capture_output=True,
            check=True,
        )
        times.append(time.perf_counter() - t)
        assert done.stdout == b"Hello\n", done
    return statistics.median(times) * 1e3


class Worker:
    def run(self) -> int:
        return 1


def bench_connect(server: SshServer, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        with connect("host1", python=sys.executable, ssh_options=server.ssh_options) as remote:
            remote.run(Worker())
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def identity(blob: bytes) -> bytes:
    return blob


def bench_bulk(remote: Remote, size: int, runs: int) -> float:
    blob = bytes(range(256)) * (size // 256)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        back = remote.call(identity, blob)
        times.append(time.perf_counter() - t)
        assert len(back) == size
        del back
    return size / 2**20 / statistics.median(times)


def bench_ssh_cat(server: SshServer, size: int, runs: int) -> float:
    blob = memoryview(bytes(range(256)) * (size // 256))
    rates = []
    for _ in range(runs):
        cat = subprocess.Popen(
            ["ssh", *server.ssh_options, "-T", "host1", "cat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert cat.stdin and cat.stdout
        cat.stdin.write(b"!")
        assert cat.stdout.read(1) == b"!"  # connected and echoing
        stdin = cat.stdin

        def feed(stdin: object = stdin) -> None:
            assert hasattr(stdin, "write")
            step = 1 << 20
            for i in range(0, size, step):
                stdin.write(blob[i : i + step])
            stdin.close()

        t = time.perf_counter()
        writer = threading.Thread(target=feed)
        writer.start()
        got = 0
        while True:
            data = cat.stdout.read(1 << 20)
            if not data:
                break
            got += len(data)
        elapsed = time.perf_counter() - t
        writer.join()
        cat.stdout.close()
        cat.wait()
        assert got == size
        rates.append(size / 2**20 / elapsed)
    return statistics.median(rates)


def bench_ssh_serial(server: SshServer, size: int, runs: int) -> float:
    """256 MiB up through ssh, then 256 MiB down: what a call's serial round trip can reach."""
    blob = memoryview(bytes(range(256)) * (size // 256))
    command = f"echo ready; head -c {size} >/dev/null; echo ok; head -c {size} /dev/zero"
    rates = []
    for _ in range(runs):
        proc = subprocess.Popen(
            ["ssh", *server.ssh_options, "-T", "host1", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert proc.stdin and proc.stdout
        assert proc.stdout.read(6) == b"ready\n"
        t = time.perf_counter()
        step = 1 << 20
        for i in range(0, size, step):
            proc.stdin.write(blob[i : i + step])
        assert proc.stdout.read(3) == b"ok\n"
        got = 0
        while got < size:
            data = proc.stdout.read(min(1 << 20, size - got))
            assert data
            got += len(data)
        elapsed = time.perf_counter() - t
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()
        rates.append(size / 2**20 / elapsed)
    return statistics.median(rates)


def open_execnet(server: SshServer) -> tuple[object, object] | None:
    try:
        import execnet
    except ImportError:
        return None
    gateway = execnet.makegateway(f"ssh=-F {server.ssh_config} host1//python={sys.executable}")
    channel = gateway.remote_exec("for item in channel:\n    channel.send(item)\n")
    return gateway, channel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="round trips per latency figure")
    parser.add_argument("--mib", type=int, default=256, help="bulk object size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="bulk and ssh cat repetitions")
    parser.add_argument("--rounds", type=int, default=10, help="latency rounds (methods alternate)")
    options = parser.parse_args()
    size = options.mib * 2**20
    per_round = max(1, options.calls // options.rounds)
    latency: dict[str, list[float]] = {"call": [], "lambda": [], "data": [], "execnet": []}
    bulk_runs: dict[str, list[float]] = {"bulk": [], "cat": [], "serial": []}
    with tempfile.TemporaryDirectory(prefix="mpish-bench-") as tmp:
        server = SshServer(Path(tmp) / "sshd")
        server.start()
        try:
            ex = open_execnet(server)
            with connect("host1", python=sys.executable, ssh_options=server.ssh_options) as remote:
                # rounds alternate between the methods so that machine drift hits all alike
                for _ in range(options.rounds):
                    for name, value in bench_calls(remote, per_round).items():
                        latency[name].append(value)
                    if ex is not None:
                        channel = ex[1]

                        def echo(channel: object = channel) -> None:
                            channel.send(1)  # type: ignore[attr-defined]
                            channel.receive()  # type: ignore[attr-defined]

                        latency["execnet"].append(median_us(echo, per_round))
                for _ in range(options.runs):
                    bulk_runs["bulk"].append(bench_bulk(remote, size, 1))
                    bulk_runs["cat"].append(bench_ssh_cat(server, size, 1))
                    bulk_runs["serial"].append(bench_ssh_serial(server, size, 1))
            if ex is not None:
                ex[0].exit()  # type: ignore[attr-defined]
            seed_ms = bench_seed(server, Path(tmp), 10)
            connect_ms = bench_connect(server, 10)
        finally:
            server.stop()
    calls = {k: statistics.median(v) for k, v in latency.items() if v}
    execnet_us = calls.get("execnet")
    bulk, cat, serial = (statistics.median(bulk_runs[k]) for k in ("bulk", "cat", "serial"))
    execnet_text = "n/a (pip install -e '.[bench]')" if execnet_us is None else f"{execnet_us:9.1f} us"
    rows = [
        ("mpish call(abs, -1)", f"{calls['call']:9.1f} us"),
        ("mpish call(lambda)", f"{calls['lambda']:9.1f} us"),
        ("mpish call_data (msgpack)", f"{calls['data']:9.1f} us"),
        ("execnet channel echo", execnet_text),
        ("seed: new ssh + python per object", f"{seed_ms:9.1f} ms"),
        ("mpish connect + run + close", f"{connect_ms:9.1f} ms"),
        (f"mpish bulk {options.mib} MiB round trip", f"{bulk:9.1f} MB/s"),
        (f"ssh cat {options.mib} MiB", f"{cat:9.1f} MB/s"),
        ("bulk / ssh cat", f"{100 * bulk / cat:9.1f} %"),
        (f"ssh up then down {options.mib} MiB", f"{serial:9.1f} MB/s"),
        ("bulk / ssh up then down", f"{100 * bulk / serial:9.1f} %"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'what':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    execnet_field = "nan" if execnet_us is None else f"{execnet_us:.1f}"
    print(
        f"RESULT call_us={calls['call']:.1f} execnet_us={execnet_field} seed_ms={seed_ms:.1f} "
        f"bulk_mb_s={bulk:.1f} ssh_cat_mb_s={cat:.1f}"
    )


if __name__ == "__main__":
    main()
