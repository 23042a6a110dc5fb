"""``:put -r`` and ``:get -r`` in the ``mpish ssh`` console, at a terminal, on hosts whose
Python has nothing installed (the shipped server reads and rebuilds trees with the stdlib)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ssh_util import console_at_terminal
from sshd_server import SshServer

BARE = f"{sys.executable} -S -I"


def test_put_r_and_get_r_on_bare_hosts_name_copies_by_host(sshd: SshServer, tmp_path: Path) -> None:
    tree = tmp_path / "d"
    (tree / "sub" / "empty").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho ran\n")
    (tree / "sub" / "run.sh").chmod(0o755)
    (tree / "data.bin").write_bytes(os.urandom(2 << 20))
    (tree / "out").symlink_to("/etc")
    (tmp_path / "remote").mkdir()
    with console_at_terminal(sshd, "host[1-2]", tmp_path, python=BARE) as person:
        person.prompt()
        person.run(f"cd {tmp_path}/remote", "remote")
        screen = person.run(":put d")
        assert "'d' is a directory on the console's machine: use :put -r d" in screen, screen
        screen = person.run("@host1 :put -r d copy")
        assert "mpish: put host1: ok, SHA-256 verified (2 files" in screen, screen
        screen = person.run(":get -r copy")
        assert "mpish: get host[1-2]: ok, SHA-256 verified" in screen, screen
        assert f"  {tmp_path}/copy.host1/\r\n  {tmp_path}/copy.host2/\r\n" in screen, screen  # absolute
    for copy in (tmp_path / "remote" / "copy", tmp_path / "copy.host1", tmp_path / "copy.host2"):
        assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == [
            "data.bin", "out", "sub", "sub/empty", "sub/run.sh"]
        assert (copy / "data.bin").read_bytes() == (tree / "data.bin").read_bytes()
        assert os.access(copy / "sub" / "run.sh", os.X_OK) and os.readlink(copy / "out") == "/etc"
