"""A throwaway OpenSSH sshd on 127.0.0.1 with keys made per run (tests and bench).

Everything lives in one temporary directory: host key, user key, a second user key that
is *not* authorized, ``authorized_keys``, ``sshd_config`` and an ``ssh_config`` that
defines the aliases ``host1`` .. ``host8`` (all 127.0.0.1:port) and ``badkey`` (the
unauthorized key). Use it with ``ssh -F <ssh_config>`` (``SshServer.ssh_options``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
ALIASES = tuple(f"host{i}" for i in range(1, 9))


def find_sshd() -> str | None:
    """The sshd binary (an absolute path: sshd refuses to re-exec otherwise), or None."""
    found = shutil.which("sshd")
    if found:
        return os.path.abspath(found)
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mpish-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


class SshServer:
    """sshd -D -e on 127.0.0.1:port, plus the client config that reaches it."""

    def __init__(self, directory: Path, *, sshd: str | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        found = sshd or find_sshd()
        if found is None:
            raise FileNotFoundError("sshd not found")
        self.sshd = found
        self.port = free_port()
        self.host_key = self.dir / "host_ed25519"
        self.user_key = self.dir / "user_ed25519"
        self.bad_key = self.dir / "bad_ed25519"
        for key in (self.host_key, self.user_key, self.bad_key):
            keygen(key)
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text((self.dir / "user_ed25519.pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.sshd_config = self.dir / "sshd_config"
        self.sshd_config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "PidFile none",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin yes",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "AllowTcpForwarding no",
                    "X11Forwarding no",
                    "MaxStartups 64:30:128",
                    "MaxSessions 64",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        self.ssh_config = self.dir / "ssh_config"
        common = [
            "  HostName 127.0.0.1",
            f"  Port {self.port}",
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  GlobalKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "  IdentitiesOnly yes",
            "  IdentityAgent none",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            "  ConnectTimeout 10",
        ]
        lines: list[str] = []
        for alias in ALIASES:
            lines += [f"Host {alias}", *common, f"  IdentityFile {self.user_key}", ""]
        lines += ["Host badkey", *common, f"  IdentityFile {self.bad_key}", ""]
        self.ssh_config.write_text("\n".join(lines))
        self.log = self.dir / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def ssh_options(self) -> tuple[str, ...]:
        """The options that make the system ssh use this server's config."""
        return ("-F", str(self.ssh_config))

    def start(self, timeout: float = 10.0) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True) if os.geteuid() == 0 else None
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [self.sshd, "-D", "-e", "-f", str(self.sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not accept connections within {timeout} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def main() -> int:
    """Try ``mpish ssh`` on this machine without touching your own ssh setup: a throwaway sshd
    on 127.0.0.1 with the aliases host1..host8, until Ctrl-C (then it and its keys are gone)."""
    import signal
    import sys
    import tempfile

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: sshd and its keys go

    sshd = find_sshd()
    if sshd is None:
        print("no sshd here: install OpenSSH first (scripts/setup --test does)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="mpish-try-ssh-") as directory:
        server = SshServer(Path(directory), sshd=sshd)
        server.start()
        print(f"sshd on 127.0.0.1:{server.port}, hosts host1..host8 in {server.ssh_config}; "
              "in another shell:\n"
              f"  mpish ssh -o '-F {server.ssh_config}' 'host[1-8]' uptime\n"
              f"  mpish ssh -o '-F {server.ssh_config}' 'host[1-3]'     # the console\n"
              "Ctrl-C here stops it.", flush=True)
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
