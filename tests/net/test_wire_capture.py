"""THREAT-MODEL attack 15 on the wire: a loopback capture of MPICH's TCP transport.

One tcpdump on ``lo`` runs while, with MPICH forced onto TCP between all 3 ranks, an
``mpiexec -n 3 mpish`` session reads a command from stdin (its text, stdout and
stderr each carry a marker) and ``:put``s a file holding a marker, and an
``mpish.secure(comm)`` program sends markers with send, Send and bcast. No marker
may be in the capture. A raw mpi4py program in the same capture is the control: its
marker must be there, or the capture proves nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from jobs import TCP, explain, marker, run, write_markers
from wirecapture import capture_problem, tcpdump

from shell_util import MPIEXEC, MPISH, make_home, shell_env

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _can_capture() -> None:
    problem = capture_problem()
    if problem:
        pytest.skip(f"no packet capture: {problem}")


def test_loopback_capture_holds_no_shell_or_secure_comm_marker_but_the_raw_mpi4py_one(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    env = shell_env(home, **TCP)
    work = tmp_path / "work"
    work.mkdir()
    hidden = {name: marker(name) for name in ("command", "stdout", "stderr", "file", "send", "Send", "bcast")}
    control = {name: marker(f"raw-{name}") for name in ("send", "Send", "bcast")}
    upload = tmp_path / "upload.txt"
    upload.write_text(hidden["file"] + "\n")
    out_head, out_tail = hidden["stdout"][:10], hidden["stdout"][10:]
    err_head, err_tail = hidden["stderr"][:10], hidden["stderr"][10:]
    script = (
        f"true {hidden['command']}; printf '%s%s\\n' {out_head} {out_tail}; "
        f"printf '%s%s\\n' {err_head} {err_tail} >&2\n"
        f":put {upload} uploaded.txt\n"
        "exit\n"
    ).encode()
    secure_file = write_markers(tmp_path / "secure.json", {k: hidden[k] for k in ("send", "Send", "bcast")})
    raw_file = write_markers(tmp_path / "raw.json", control)
    program = str(HERE / "send_markers.py")

    with tcpdump("lo", tmp_path / "lo.pcap") as captured:
        shell = run([MPIEXEC, "-n", "3", MPISH], env, work, input=script)
        secure = run([MPIEXEC, "-n", "3", sys.executable, program, "secure", str(secure_file)], env, work)
        raw = run([MPIEXEC, "-n", "3", sys.executable, program, "raw", str(raw_file)], env, work)
    capture = captured[0]

    # each run did what it was asked, so an absent marker means it was sent encrypted
    assert shell.returncode == 0, explain(shell)
    assert hidden["stdout"].encode() in shell.stdout, explain(shell)
    assert hidden["stderr"].encode() in shell.stderr, explain(shell)
    assert b"put @1-2: ok" in shell.stdout, explain(shell)
    assert (work / "uploaded.txt").read_text() == hidden["file"] + "\n"
    for proc in (secure, raw):
        assert proc.returncode == 0, explain(proc)
        assert all(f"RECEIVED {rank}".encode() in proc.stdout for rank in range(3)), explain(proc)

    assert capture.found({k: v.encode() for k, v in control.items()}) == ["send", "Send", "bcast"], (
        f"the control leaked nothing: is MPI on TCP over lo? {capture.payload_bytes} payload bytes captured"
    )
    assert capture.found({k: v.encode() for k, v in hidden.items()}) == []
