"""The shell over ssh against clush and scp, through the same sshd and the same system ssh.

Starts its own sshd on 127.0.0.1 (tests/ssh/sshd_server.py, keys made per run; the aliases
host1..host8 all reach it) and measures, alternating the two sides round by round so that
a change in the machine's load hits both alike:

  true     ``mpish ssh 'host[1-8]' -c true`` against ``clush -w 'host[1-8]' true``: a whole
           command, from process start to exit (connect, run, gather, print, close)
  put      ``:put`` of a file (1 GiB by default) to host1 through the console (commands on
           its stdin) against ``scp`` of the same file to the same place: MB/s of the
           file's size over the whole command (both include connecting)
  get      the same the other way: ``:get`` from host1 against ``scp host1:FILE``
  scp-gcm  scp given the cipher mpish's ssh prefers where no configuration chose one
           (``-c aes256-gcm@openssh.com``, transport/ssh_ciphers.py): ``*_same_cipher`` ratios
           show what is left once the cipher is the same

clush is ClusterShell's, installed with mpish (the ``clush`` of this venv), given the same
ssh options with ``-o``. Both run with bytecode caching on (``PYTHONDONTWRITEBYTECODE``
removed), as an installed clush and mpish do: otherwise mpish, installed editable, would
compile its modules on every start and clush would not. The ratios: mpish's time over
clush's, mpish's rate over scp's. For `true`, the CPU of each side is printed too (medians per
command, all 8 hosts): the client's (the command's process tree: the console or clush, and
its ssh clients) and the hosts' (what sshd reaped: sshd's session processes and the remote
programs, the shipped shell server and its bash, or clush's ``sh -c true``), from sshd's
cutime/cstime in /proc. For put and get the same two, per GiB moved (the console or scp and
its ssh; sshd's session and the shell server or ``scp -t``/``-f``), medians.
Run: python bench/ssh_shell.py [--rounds N] [--mib M] [--xfer-only]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (and theirs)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def reaped_cpu(pid: int) -> float:
    """CPU seconds of the children that process ``pid`` reaped (cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None,
          cpu: list[float] | None = None, sshd: int = 0) -> float:
    """Seconds from start to exit of one command, which must succeed; with ``cpu``, append
    the CPU seconds of the command's processes and of what sshd (``sshd``'s pid) reaped."""
    before, hosts_before = children_cpu(), reaped_cpu(sshd) if sshd else 0.0
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
    seconds = time.perf_counter() - start
    if cpu is not None:
        time.sleep(0.05)  # sshd reaps its session processes just after the client saw them end
        cpu += [children_cpu() - before, reaped_cpu(sshd) - hosts_before]
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace")
        raise SystemExit(f"bench: {argv[0]} failed ({done.returncode}): {reason}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--mib", type=int, default=1024, help="size of the file for put/get/scp")
    parser.add_argument("--true-only", action="store_true", help="only the `true` rows (no put/get)")
    parser.add_argument("--xfer-only", action="store_true", help="measure put and get only (no true)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mpish-bench-") as tmp:
        work = Path(tmp)
        server = SshServer(work / "sshd")
        server.start()
        try:
            options = " ".join(server.ssh_options)
            env = dict(os.environ, NO_COLOR="1")
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            mpish = [str(BIN / "mpish"), "ssh", "-o", options, "--python", sys.executable]
            clush = [str(BIN / "clush"), "-o", options, "-w", HOSTS, "-b"]
            payload = work / "payload.bin"
            with open(payload, "wb") as out:
                for _ in range(0 if args.true_only else args.mib):
                    out.write(os.urandom(1 << 20))
            target = work / "received.bin"
            put_script = f":put {payload} {target}\nexit\n".encode()
            fetched = work / "fetched"
            fetched.mkdir()
            get_script = f":get {payload} {fetched}/\nexit\n".encode()
            # -O: the scp protocol (the test sshd has no sftp subsystem)
            scp = ["scp", "-O", "-q", *server.ssh_options, str(payload), f"host1:{target}"]
            scp_get = ["scp", "-O", "-q", *server.ssh_options, f"host1:{payload}", str(target)]
            # the cipher mpish prefers where nobody chose one (transport/ssh_ciphers.py), given to
            # scp too: what is left of the difference is not the cipher
            gcm = ["-c", "aes256-gcm@openssh.com"]
            scp_gcm, scp_gcm_get = [*scp[:3], *gcm, *scp[3:]], [*scp_get[:3], *gcm, *scp_get[3:]]

            names = ("mpish true", "clush true", "mpish put", "scp put", "scp-gcm put",
                     "mpish get", "scp get", "scp-gcm get")
            rows: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            assert server.process is not None
            sshd = server.process.pid
            for _ in range(0 if args.xfer_only else args.rounds):
                rows["mpish true"].append(timed([*mpish, HOSTS, "-c", "true"], env=env,
                                                cpu=cpu["mpish true"], sshd=sshd))
                rows["clush true"].append(timed([*clush, "true"], env=env, cpu=cpu["clush true"], sshd=sshd))
            for _ in range(0 if args.true_only else max(3, args.rounds // 2)):
                rows["mpish put"].append(timed([*mpish, "host1"], stdin=put_script, env=env,
                                               cpu=cpu["mpish put"], sshd=sshd))
                if target.stat().st_size != payload.stat().st_size:
                    raise SystemExit("bench: :put wrote a file of the wrong size")
                target.unlink()
                rows["scp put"].append(timed(scp, env=env, cpu=cpu["scp put"], sshd=sshd))
                target.unlink()
                rows["scp-gcm put"].append(timed(scp_gcm, env=env, cpu=cpu["scp-gcm put"], sshd=sshd))
                target.unlink()
                rows["mpish get"].append(timed([*mpish, "host1"], stdin=get_script, env=env,
                                               cpu=cpu["mpish get"], sshd=sshd))
                (got,) = fetched.iterdir()
                if got.stat().st_size != payload.stat().st_size:
                    raise SystemExit("bench: :get wrote a file of the wrong size")
                got.unlink()
                rows["scp get"].append(timed(scp_get, env=env, cpu=cpu["scp get"], sshd=sshd))
                target.unlink()
                rows["scp-gcm get"].append(timed(scp_gcm_get, env=env, cpu=cpu["scp-gcm get"], sshd=sshd))
                target.unlink()
        finally:
            server.stop()

    rows = {name: times for name, times in rows.items() if times}
    median = {name: statistics.median(times) for name, times in rows.items()}
    print(f"{'what':<12} {'median':>10} {'min':>10} {'max':>10}")
    for name, times in rows.items():
        low, high = min(times) * 1e3, max(times) * 1e3
        print(f"{name:<12} {median[name] * 1e3:>8.0f}ms {low:>8.0f}ms {high:>8.0f}ms")
    true = ""
    used = {name: (statistics.median(samples[0::2]) * 1e3, statistics.median(samples[1::2]) * 1e3)
            for name, samples in cpu.items() if samples}
    if not args.xfer_only:
        for name, (client, hosts) in used.items():
            if not name.endswith("true"):
                continue
            print(f"{name:<12} CPU: client {client:.0f} ms, hosts {hosts:.0f} ms ({hosts / 8:.0f} per host)")
        true = (
            f" true_ms={median['mpish true'] * 1e3:.0f} clush_true_ms={median['clush true'] * 1e3:.0f}"
            f" true_ratio={median['mpish true'] / median['clush true']:.2f}"
            f" client_cpu_ms={used['mpish true'][0]:.0f} clush_client_cpu_ms={used['clush true'][0]:.0f}"
            f" host_cpu_ms={used['mpish true'][1]:.0f} clush_host_cpu_ms={used['clush true'][1]:.0f}")
    if args.true_only:
        print(f"RESULT{true}")
        return
    rate = {name: args.mib / median[name] for name in names if not name.endswith("true")}
    gib = args.mib / 1024
    per_gib = {name: (client / gib, hosts / gib) for name, (client, hosts) in used.items()
               if not name.endswith("true")}
    for name, (client, hosts) in per_gib.items():
        print(f"{name:<12} CPU per GiB: client {client:.0f} ms, host {hosts:.0f} ms (whole command)")
    print(f"put {rate['mpish put']:.0f} MiB/s, scp {rate['scp put']:.0f} (with AES-GCM"
          f" {rate['scp-gcm put']:.0f}) MiB/s; get {rate['mpish get']:.0f} MiB/s,"
          f" scp {rate['scp get']:.0f} (with AES-GCM"
          f" {rate['scp-gcm get']:.0f}) MiB/s ({args.mib} MiB file, whole command)")
    print(
        f"RESULT{true}"
        f" put_mib_s={rate['mpish put']:.0f} scp_put_mib_s={rate['scp put']:.0f}"
        f" put_ratio={rate['mpish put'] / rate['scp put']:.2f}"
        f" get_mib_s={rate['mpish get']:.0f} scp_get_mib_s={rate['scp get']:.0f}"
        f" get_ratio={rate['mpish get'] / rate['scp get']:.2f}"
        f" put_ratio_same_cipher={rate['mpish put'] / rate['scp-gcm put']:.2f}"
        f" get_ratio_same_cipher={rate['mpish get'] / rate['scp-gcm get']:.2f}"
        + "".join(f" {name.replace(' ', '_').replace('-', '_')}_cpu_ms_per_gib={client + hosts:.0f}"
                  for name, (client, hosts) in per_gib.items())
    )


if __name__ == "__main__":
    main()
