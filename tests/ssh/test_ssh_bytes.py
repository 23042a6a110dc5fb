"""Bytes that are not UTF-8 in commands, scripts, file names and output go through ``mpish ssh``
as those bytes, as with ssh and clush (a clush user's trial, helper-141: a command of the byte
0xFF ended in a ~30-line traceback, a ``-C`` script holding it in another, and ``:get -r`` of a
directory holding a file so named ended the host's server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ssh_util import SRC
from sshd_server import SshServer

ODD = b"caf\xe9-\xff"  # a Latin-1 name and a lone byte


def run(
    sshd: SshServer, *args: bytes | str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options),
            "--python", sys.executable]
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1")
    return subprocess.run([*argv, *args], input=stdin, capture_output=True, timeout=60, env=env, cwd=cwd,
                          check=False)


def test_a_command_and_a_script_of_bytes_not_utf8_run_as_those_bytes(
    sshd: SshServer, tmp_path: Path
) -> None:
    done = run(sshd, "host1", "-c", b"printf '%s|' " + ODD)
    assert (done.returncode, done.stdout) == (0, ODD + b"|"), done.stderr
    script = tmp_path / "script"
    script.write_bytes(b"printf '%s|' " + ODD + b"\n")
    lines = script.read_bytes()
    for args, stdin in ((("-C", str(script)), b""), (("-C", "-"), lines), ((), lines)):
        done = run(sshd, "host1", *args, stdin=stdin)
        assert done.returncode == 0 and ODD + b"|" in done.stdout, (args, done.stdout, done.stderr)
        assert b"Traceback" not in done.stderr, done.stderr


def test_files_named_by_bytes_not_utf8_are_copied_both_ways(sshd: SshServer, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (Path(os.fsdecode(bytes(tree))) / os.fsdecode(ODD)).write_bytes(b"odd\n")
    odd_file = os.path.join(os.fsencode(tree), ODD)
    (tmp_path / "into").mkdir()
    into = os.fsencode(tmp_path / "into")
    script = b":get -r " + os.fsencode(tree) + b" back\n:put " + odd_file + b" " + into + b"/\n"
    done = run(sshd, "host[1-2]", stdin=script, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout, done.stderr)
    for host in ("host1", "host2"):
        copied = os.path.join(os.fsencode(tmp_path), b"back." + host.encode(), ODD)
        with open(copied, "rb") as handle:
            assert handle.read() == b"odd\n"
    with open(os.path.join(os.fsencode(tmp_path / "into"), ODD), "rb") as handle:
        assert handle.read() == b"odd\n"
    assert b"\xff" not in done.stdout + done.stderr  # what mpish says of them is escaped
