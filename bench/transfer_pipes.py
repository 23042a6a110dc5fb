"""``put`` and ``get`` of one file between a console and a shell server over bare pipes (no ssh).

Where the time of ``:put``/``:get`` over ssh goes, without ssh: the console runs here and
the server (``mpish.shell.remote.serve``, the code ``mpish ssh`` ships) in a child process,
joined by two pipes, as ssh's stdin and stdout join them. Prints, for each direction, the
rate and each side's CPU seconds per GiB and peak memory (VmHWM), beside ``cat`` through a
pipe of the same file (what moving the bytes costs at all) and ``sha256sum`` of it (the
cost of one digest). ``--profile DIR`` writes cProfile stats of both sides there (console:
``console-put.prof``, ...; server: ``server.prof``). Run:
python bench/transfer_pipes.py [--mib M] [--rounds N] [--profile DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mpish.shell import console_transfer as transfer
from mpish.shell.console import Console
from mpish.shell.session import Peer, Session
from mpish.transport.pipe import MultiLink, PipeLink
from mpish.transport.procfs import peak_rss_kib

SERVER = """
import cProfile, os, resource, sys
from mpish.shell.remote import serve
read_fd, write_fd, profile, report = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if profile:
    prof = cProfile.Profile()
    prof.enable()
serve(read_fd, write_fd, 1, 2)
if profile:
    prof.disable()
    prof.dump_stats(profile)
usage = resource.getrusage(resource.RUSAGE_SELF)
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
with open(report, "w") as out:
    out.write(f"{usage.ru_utime} {usage.ru_stime} {hwm}")
"""


class PipeSession(Session):
    def finish(self) -> None:
        self.link.close()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def shell_cmd(argv: str) -> tuple[float, float]:
    """Seconds and CPU seconds (all its processes) of one shell command."""
    before, start = children_cpu(), time.perf_counter()
    subprocess.run(["bash", "-c", argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", help="directory for cProfile stats of both sides")
    args = parser.parse_args()
    gib = args.mib / 1024
    with tempfile.TemporaryDirectory(prefix="mpish-xfer-") as tmp:
        work = Path(tmp)
        payload = work / "payload.bin"
        with open(payload, "wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(1 << 20))
        c2s, s2c = os.pipe(), os.pipe()
        report = work / "server.txt"
        profile_dir = Path(args.profile).resolve() if args.profile else None
        server_prof = str(profile_dir / "server.prof") if profile_dir else ""
        argv = [sys.executable, "-c", SERVER, str(c2s[0]), str(s2c[1]), server_prof, str(report)]
        child = subprocess.Popen(argv, pass_fds=(c2s[0], s2c[1]))
        os.close(c2s[0])
        os.close(s2c[1])
        link = PipeLink(s2c[0], c2s[1], rank=0, size=2, peer=1)
        session = PipeSession(MultiLink({1: link}), {1: Peer(1, link.plain_channel(), "pipe", ready=True)})
        console = Console(session)  # the server's Hello is dropped: it is ready
        rows: dict[str, list[tuple[float, float]]] = {"put": [], "get": []}
        profiles = {what: cProfile.Profile() for what in rows}
        for _ in range(args.rounds):
            for what in ("put", "get"):
                target = work / ("put.bin" if what == "put" else "got.bin")
                prof = profiles[what] if profile_dir else None
                before, start = cpu(), time.perf_counter()
                if prof:
                    prof.enable()
                if what == "put":
                    verdicts = transfer.put(console, payload, str(target), [1]).verdicts
                else:
                    verdicts = transfer.get(console, str(payload), str(target), [1])
                if prof:
                    prof.disable()
                rows[what].append((time.perf_counter() - start, cpu() - before))
                if verdicts != {1: ""} or target.stat().st_size != payload.stat().st_size:
                    raise SystemExit(f"bench: {what} failed: {verdicts}")
                target.unlink()
        console_hwm = peak_rss_kib()
        console.close()
        child.wait(timeout=60)
        server_user, server_sys, server_hwm = report.read_text().split()
        server_cpu = float(server_user) + float(server_sys)
        if profile_dir:
            for what, prof in profiles.items():
                prof.dump_stats(str(profile_dir / f"console-{what}.prof"))
        cat = [shell_cmd(f"cat {payload} | cat > /dev/null") for _ in range(args.rounds)]
        sha = [shell_cmd(f"sha256sum {payload}") for _ in range(args.rounds)]

    print(f"{'what':<10} {'MiB/s':>8} {'console CPU s/GiB':>18}")
    for what, times in rows.items():
        best = min(times)
        print(f"{what:<10} {args.mib / best[0]:>8.0f} {best[1] / gib:>18.2f}")
    print(f"{'cat|cat':<10} {args.mib / min(cat)[0]:>8.0f} {min(cat)[1] / gib:>18.2f} (both cats)")
    print(f"{'sha256sum':<10} {args.mib / min(sha)[0]:>8.0f} {min(sha)[1] / gib:>18.2f}")
    total = sum(t for times in rows.values() for t, _ in times)
    each = server_cpu / (2 * args.rounds) / gib
    print(f"server: {server_cpu:.2f} s CPU over {2 * args.rounds} transfers ({each:.2f} s/GiB each, start"
          f" included; {total:.1f} s of transfers); VmHWM server {int(server_hwm) // 1024} MiB,"
          f" console {console_hwm // 1024} MiB")
    put, get = min(rows["put"])[0], min(rows["get"])[0]
    print(f"RESULT put_mib_s={args.mib / put:.0f} get_mib_s={args.mib / get:.0f}"
          f" cat_mib_s={args.mib / min(cat)[0]:.0f}"
          f" put_cat_ratio={min(cat)[0] / put:.2f} get_cat_ratio={min(cat)[0] / get:.2f}"
          f" server_hwm_mib={int(server_hwm) // 1024} console_hwm_mib={console_hwm // 1024}")


if __name__ == "__main__":
    main()
