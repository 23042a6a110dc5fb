"""Two hosts on one kernel: network namespaces joined by a veth pair, and a stand-in for ssh.

Each host is a network namespace with ``lo`` and one end of a veth pair, both ends
named :data:`IFACE`, addressed in 10.99.0.0/24 (these addresses exist only inside the
two namespaces: nothing is routed anywhere else). Commands run on a host through
``ip netns exec`` inside a new UTS namespace whose host name is the host's, so each
rank's ``gethostname()`` tells the hosts apart. MPICH's launcher reaches host B
through :attr:`TwoHosts.ssh`, a script that takes ssh's arguments and runs the
command in the right namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

IFACE = "mpish0"
SUBNET = "10.99.0"

# ssh [options] HOST COMMAND...: COMMAND, joined as ssh joins it, run by sh on HOST
_STANDIN = """#!/bin/sh
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
case $host in
@CASES@
    *) echo "ssh-standin: unknown host $host" >&2; exit 255 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c 'hostname "$1"; shift; exec sh -c "$*"' sh "$host" "$@"
"""


def netns_problem() -> str:
    """Why two namespace hosts cannot be built here ("" if they can)."""
    missing = [name for name in ("ip", "unshare") if shutil.which(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed (scripts/setup --test installs iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class TwoHosts:
    """Hosts ``names[0]`` and ``names[1]``; :meth:`build`, then always :meth:`destroy`."""

    def __init__(self, work: Path) -> None:
        tag = secrets.token_hex(3)
        self.names = (f"hosta{tag}", f"hostb{tag}")
        self.netns = {name: f"mpish-{name}" for name in self.names}
        self.address = {self.names[0]: f"{SUBNET}.1", self.names[1]: f"{SUBNET}.2"}
        self.ssh = work / "ssh-standin"
        self.built: list[str] = []

    def build(self) -> None:
        a, b = self.names
        for name in self.names:
            _ip("netns", "add", self.netns[name])
            self.built.append(self.netns[name])
        # made in the root namespace under unique names, moved, then renamed inside
        ends = {a: f"mp{a[-6:]}a", b: f"mp{a[-6:]}b"}
        _ip("link", "add", ends[a], "type", "veth", "peer", "name", ends[b])
        for name in self.names:
            ns = self.netns[name]
            _ip("link", "set", ends[name], "netns", ns)
            _ip("-n", ns, "link", "set", ends[name], "name", IFACE)
            _ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", IFACE)
            _ip("-n", ns, "link", "set", IFACE, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        cases = "\n".join(f"    {name}) ns={self.netns[name]} ;;" for name in self.names)
        self.ssh.write_text(_STANDIN.replace("@CASES@", cases))
        self.ssh.chmod(0o700)

    def on(self, host: str, command: list[str]) -> list[str]:
        """``command`` as run on ``host`` (its network namespace and host name)."""
        script = 'hostname "$1"; shift; exec "$@"'
        return ["ip", "netns", "exec", self.netns[host], "unshare", "--uts", "sh", "-c", script, "sh", host,
                *command]

    def destroy(self) -> None:
        """Delete the namespaces (their veth ends go with them); kill what still runs in them."""
        for ns in reversed(self.built):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=10)
        self.built.clear()

    def describe(self) -> str:
        return " ".join(shlex.quote(f"{name}={self.netns[name]}") for name in self.names)
