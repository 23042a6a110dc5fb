"""Two hosts (network namespaces and a veth pair) under MPICH's own launcher, over TCP.

``mpiexec -launcher ssh -launcher-exec <stand-in> -iface mpish0 -hosts A,B -n 4 -ppn 2``
run on host A: ranks 0-1 on A (the console and one server), ranks 2-3 on B. The
captures are taken on A's end of the veth, so they hold exactly what crossed
between the hosts: MPI's traffic and the launcher's own.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from jobs import explain, marker, run, write_markers
from twohosts import IFACE, TwoHosts, netns_problem
from wirecapture import Capture, capture_problem, tcpdump

from shell_util import MPIEXEC, MPISH, make_home, shell_env

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoHosts]:
    problem = netns_problem() or capture_problem()
    if problem:  # CI runs as root with iproute2 and tcpdump (scripts/setup --test): no skip there
        pytest.skip(f"no two-host network: {problem}")
    two = TwoHosts(tmp_path_factory.mktemp("hosts"))
    try:
        two.build()
        yield two
    finally:
        two.destroy()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = make_home(tmp_path / "home")
    # ofi, not the wheel's default UCX: UCX sees one kernel and would use shared memory between the hosts
    return shell_env(home, MPIR_CVAR_CH4_NETMOD="ofi", FI_PROVIDER="tcp", FI_TCP_IFACE=IFACE)


def across(hosts: TwoHosts, *args: str) -> list[str]:
    """``mpiexec -n 4 -ppn 2 ARGS`` started on host A over both hosts."""
    a, b = hosts.names
    launcher = [MPIEXEC, "-launcher", "ssh", "-launcher-exec", str(hosts.ssh), "-iface", IFACE]
    return hosts.on(a, [*launcher, "-hosts", f"{a},{b}", "-n", "4", "-ppn", "2", *args])


def veth_capture(hosts: TwoHosts, pcap: Path) -> AbstractContextManager[list[Capture]]:
    return tcpdump(IFACE, pcap, netns=hosts.netns[hosts.names[0]])


def test_shell_console_on_host_a_groups_the_servers_output_per_host(
    hosts: TwoHosts, env: dict[str, str], tmp_path: Path
) -> None:
    a, b = hosts.names
    proc = run(across(hosts, MPISH, "-C", "-"), env, tmp_path, input=b"hostname\n")
    assert proc.returncode == 0, explain(proc)
    out = proc.stdout.decode()
    assert out.index("@1 (1)") < out.index(a) < out.index("@2-3 (2)") < out.index(b), out
    assert b"warning" not in proc.stderr, explain(proc)


def test_capture_between_hosts_holds_no_shell_or_secure_comm_marker_but_the_raw_mpi4py_one(
    hosts: TwoHosts, env: dict[str, str], tmp_path: Path
) -> None:
    hidden = {name: marker(name) for name in ("command", "stdout", "stderr", "file", "send", "Send", "bcast")}
    control = {name: marker(f"raw-{name}") for name in ("send", "Send", "bcast")}
    upload = tmp_path / "upload.txt"
    upload.write_text(hidden["file"] + "\n")
    out, err = hidden["stdout"], hidden["stderr"]
    lines = (
        f"true {hidden['command']}; printf '%s%s\\n' {out[:10]} {out[10:]}; "
        f"printf '%s%s\\n' {err[:10]} {err[10:]} >&2\n"
        f":put {upload} uploaded.txt\n"
    ).encode()
    secure_file = write_markers(tmp_path / "secure.json", {k: hidden[k] for k in ("send", "Send", "bcast")})
    raw_file = write_markers(tmp_path / "raw.json", control)
    program = str(HERE / "send_markers.py")

    with veth_capture(hosts, tmp_path / "veth.pcap") as captured:
        shell = run(across(hosts, MPISH, "-C", "-"), env, tmp_path, input=lines)
        secure = run(across(hosts, sys.executable, program, "secure", str(secure_file)), env, tmp_path)
        raw = run(across(hosts, sys.executable, program, "raw", str(raw_file)), env, tmp_path)
    capture = captured[0]

    assert shell.returncode == 0, explain(shell)
    assert shell.stdout.count(out.encode()) == 1 and b"@1-3 (3)" in shell.stdout, explain(shell)
    assert err.encode() in shell.stderr, explain(shell)
    assert b"put @1-3: ok" in shell.stdout, explain(shell)
    assert (tmp_path / "uploaded.txt").read_text() == hidden["file"] + "\n"
    for proc in (secure, raw):
        assert proc.returncode == 0, explain(proc)
        assert all(f"RECEIVED {rank}".encode() in proc.stdout for rank in range(4)), explain(proc)

    assert capture.found({k: v.encode() for k, v in control.items()}) == ["send", "Send", "bcast"], (
        f"the control leaked nothing: did MPI cross the veth? {capture.payload_bytes} payload bytes captured"
    )
    assert capture.found({k: v.encode() for k, v in hidden.items()}) == []


def test_commands_from_stdin_or_a_file_never_cross_between_hosts_but_c_does_and_warns(
    hosts: TwoHosts, env: dict[str, str], tmp_path: Path
) -> None:
    by_stdin, by_file, by_argv = marker("stdin"), marker("file"), marker("argv")
    commands = tmp_path / "commands"
    commands.write_text(f"true {by_file}\n")

    with veth_capture(hosts, tmp_path / "veth.pcap") as captured:
        stdin = run(across(hosts, MPISH, "-C", "-"), env, tmp_path, input=f"true {by_stdin}\n".encode())
        file = run(across(hosts, MPISH, "-C", str(commands)), env, tmp_path)
        argv = run(across(hosts, MPISH, "-c", f"true {by_argv}"), env, tmp_path)
    capture = captured[0]

    for proc in (stdin, file, argv):
        assert proc.returncode == 0, explain(proc)
    assert capture.found({"stdin": by_stdin.encode(), "file": by_file.encode()}) == []
    assert capture.contains(by_argv.encode())  # the control: the launcher forwards argv in clear
    assert b"warning: -c put the command in argv" in argv.stderr, explain(argv)
    assert b"warning" not in stdin.stderr + file.stderr
