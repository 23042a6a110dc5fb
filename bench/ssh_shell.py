"""The shell over ssh against clush and scp, through the same sshd and the same system ssh.

Starts its own sshd on 127.0.0.1 (tests/ssh/sshd_server.py, keys made per run; the aliases
host1..host8 all reach it) and measures, alternating the two sides round by round so that
a change in the machine's load hits both alike:

  true     ``mpish ssh 'host[1-8]' -c true`` against ``clush -w 'host[1-8]' true``: a whole
           command, from process start to exit (connect, run, gather, print, close)
  put      ``:put`` of a file to host1 through the console (commands on its stdin) against
           ``scp`` of the same file to the same place: MB/s of the file's size over the
           whole command (both include connecting)

clush is ClusterShell's, installed with mpish (the ``clush`` of this venv), given the same
ssh options with ``-o``. Run: python bench/ssh_shell.py [--rounds N] [--mib M]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ssh"))
from sshd_server import SshServer

BIN = Path(sys.executable).parent
HOSTS = "host[1-8]"


def timed(argv: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None) -> float:
    """Seconds from start to exit of one command, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace")
        raise SystemExit(f"bench: {argv[0]} failed ({done.returncode}): {reason}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--mib", type=int, default=256, help="size of the file for put/scp")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mpish-bench-") as tmp:
        work = Path(tmp)
        server = SshServer(work / "sshd")
        server.start()
        try:
            options = " ".join(server.ssh_options)
            env = dict(os.environ, NO_COLOR="1")
            mpish = [str(BIN / "mpish"), "ssh", "-o", options, "--python", sys.executable]
            clush = [str(BIN / "clush"), "-o", options, "-w", HOSTS, "-b"]
            payload = work / "payload.bin"
            with open(payload, "wb") as out:
                for _ in range(args.mib):
                    out.write(os.urandom(1 << 20))
            target = work / "received.bin"
            put_script = f":put {payload} {target}\nexit\n".encode()
            # -O: the scp protocol (the test sshd has no sftp subsystem)
            scp = ["scp", "-O", "-q", *server.ssh_options, str(payload), f"host1:{target}"]

            rows: dict[str, list[float]] = {"mpish true": [], "clush true": [], "mpish put": [], "scp": []}
            for _ in range(args.rounds):
                rows["mpish true"].append(timed([*mpish, HOSTS, "-c", "true"], env=env))
                rows["clush true"].append(timed([*clush, "true"], env=env))
            for _ in range(max(3, args.rounds // 2)):
                rows["mpish put"].append(timed([*mpish, "host1"], stdin=put_script, env=env))
                if target.stat().st_size != payload.stat().st_size:
                    raise SystemExit("bench: :put wrote a file of the wrong size")
                target.unlink()
                rows["scp"].append(timed(scp, env=env))
                target.unlink()
        finally:
            server.stop()

    median = {name: statistics.median(times) for name, times in rows.items()}
    print(f"{'what':<12} {'median':>10} {'min':>10} {'max':>10}")
    for name, times in rows.items():
        low, high = min(times) * 1e3, max(times) * 1e3
        print(f"{name:<12} {median[name] * 1e3:>8.0f}ms {low:>8.0f}ms {high:>8.0f}ms")
    put_mb_s = args.mib / median["mpish put"]
    scp_mb_s = args.mib / median["scp"]
    print(f"put {put_mb_s:.0f} MB/s, scp {scp_mb_s:.0f} MB/s ({args.mib} MiB file, whole command)")
    print(
        f"RESULT true_ms={median['mpish true'] * 1e3:.0f} clush_true_ms={median['clush true'] * 1e3:.0f}"
        f" true_ratio={median['mpish true'] / median['clush true']:.2f}"
        f" put_mb_s={put_mb_s:.0f} scp_mb_s={scp_mb_s:.0f} put_ratio={put_mb_s / scp_mb_s:.2f}"
    )


if __name__ == "__main__":
    main()
