"""CPU a host spends on one `mpish ssh` session against one `ssh HOST true`, through the same sshd.

Starts its own sshd on 127.0.0.1 (tests/ssh/sshd_server.py) and runs, alternating round by
round, on host1:

  ssh true     ``ssh host1 true``: what clush's remote side costs (sshd's session and the
               login shell running ``true``)
  ssh python   ``ssh host1 exec PYTHON -c pass``: the same plus an empty Python's start
  server       ``ssh host1 exec PYTHON -c STUB 1 2`` with the shell server's payload on stdin,
               then end of input, as ``mpish ssh`` starts it: the server loads, starts bash,
               says Hello, and ends (the console's hang-up)

Each sample is the CPU that sshd reaped for the command (cutime + cstime of the sshd
process: its session processes and everything they ran), so the client's ssh and this
script are not in it. ``server_extra_ms`` is the median server sample less the median
``ssh true`` sample: the CPU the shipped Python adds on every host. Run: python
bench/ssh_host_cpu.py [--rounds N] (PYTHONPATH=OTHER/src measures another mpish's server).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ssh"))
from sshd_server import SshServer

from mpish.shell import ssh_session
from mpish.shell.ssh_session import REMOTE_ENTRY
from mpish.transport import ship


def reaped_cpu(pid: int) -> float:
    """CPU milliseconds of the children that process ``pid`` reaped (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) * 1e3 / os.sysconf("SC_CLK_TCK")


def host_cpu(sshd: int, argv: list[str], stdin: bytes) -> float:
    """What sshd reaped for one command, which must succeed (or end with the server's 1)."""
    before = reaped_cpu(sshd)
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench: {argv} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
    for _ in range(100):  # sshd reaps its session processes just after the client saw them end
        time.sleep(0.02)
        after = reaped_cpu(sshd)
        if after > before:
            break
    return after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    payload = ship.payload(REMOTE_ENTRY, also=getattr(ssh_session, "REMOTE_ALSO", ()))  # as mpish ssh does
    with tempfile.TemporaryDirectory(prefix="mpish-bench-") as tmp:
        server = SshServer(Path(tmp) / "sshd")
        server.start()
        try:
            assert server.process is not None
            sshd = server.process.pid
            ssh = ["ssh", *server.ssh_options, "host1"]
            kinds = {
                "ssh true": ([*ssh, "true"], b""),
                "ssh python": ([*ssh, "exec", sys.executable, "-c", "pass"], b""),
                "server": ([*ssh, shlex.join(ship.command([sys.executable], ("1", "2")))], payload),
            }
            samples: dict[str, list[float]] = {name: [] for name in kinds}
            for _ in range(args.rounds):
                for name, (argv, stdin) in kinds.items():
                    samples[name].append(host_cpu(sshd, argv, stdin))
        finally:
            server.stop()
    median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{'what':<12} {'median':>8} {'min':>8} {'max':>8}   (ms of host CPU per session)")
    for name, values in samples.items():
        print(f"{name:<12} {median[name]:>8.0f} {min(values):>8.0f} {max(values):>8.0f}")
    print(f"RESULT server_ms={median['server']:.0f} ssh_true_ms={median['ssh true']:.0f}"
          f" ssh_python_ms={median['ssh python']:.0f}"
          f" server_extra_ms={median['server'] - median['ssh true']:.0f}"
          f" payload_bytes={len(payload)}")


if __name__ == "__main__":
    main()
