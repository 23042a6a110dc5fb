"""``mpish ssh`` against hosts whose Python has no mpish, msgpack or cryptography.

``python -S -I`` is such a Python: no site-packages, no PYTHON* variables. The console
ships the shell server over ssh's stdin (mpish.transport.ship); nothing is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
from ssh_util import SRC, mpish_ssh
from sshd_server import SshServer

BARE = f"{sys.executable} -S -I"


def test_the_bare_python_cannot_import_mpish_or_its_dependencies() -> None:
    for module in ("mpish", "msgpack", "cryptography"):
        done = subprocess.run([sys.executable, "-S", "-I", "-c", f"import {module}"],
                              capture_output=True, check=False)
        assert done.returncode == 1 and b"ModuleNotFoundError" in done.stderr


def test_c_runs_on_hosts_with_nothing_installed_and_stdin_reaches_every_host(sshd: SshServer) -> None:
    command = 'tr "\\0" " " < /proc/$PPID/cmdline; echo; read -r line; echo "$MPISH_RANK got $line"'
    done = mpish_ssh(sshd, "--python", BARE, "host[1-3]", "--json", "-c", command, input="hello\n")
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert len(lines) == 3
    for rank, line in enumerate(lines, 1):
        assert f'"host": "host{rank}"' in line and f"{rank} got hello" in line
        assert f"{sys.executable} -S -I -c " in line  # the server ran on the bare Python


def test_console_puts_and_gets_files_on_bare_hosts(sshd: SshServer, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(os.urandom(3 << 20))
    (tmp_path / "remote").mkdir()
    script = (f"cd {tmp_path}/remote\n:put {source} copy.bin\n"
              f":get {tmp_path}/remote/copy.bin {tmp_path}/back.bin\nsha256sum copy.bin\n")
    done = mpish_ssh(sshd, "--python", BARE, "host[1-2]", input=script)
    assert done.returncode == 0, done.stderr
    assert "put host[1-2]: ok, size verified, bytes authenticated by ssh" in done.stdout
    assert "get host[1-2]: ok, size verified, bytes authenticated by ssh" in done.stdout
    assert hashlib.sha256(source.read_bytes()).hexdigest() + "  copy.bin" in done.stdout
    for rank in (1, 2):
        assert (tmp_path / f"back.bin.host{rank}").read_bytes() == source.read_bytes()


def test_interactive_console_on_bare_hosts_keeps_state_and_ends_on_exit(
    sshd: SshServer, tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC), NO_COLOR="1", TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    argv = ["-m", "mpish", "ssh", "-o", " ".join(sshd.ssh_options), "--python", BARE, "host[1-2]"]
    child = pexpect.spawn(sys.executable, argv, env=env, cwd=str(tmp_path), timeout=30,
                          encoding="utf-8", codec_errors="replace", dimensions=(50, 250))
    try:
        child.expect(r"#>")
        child.sendline(f"cd {tmp_path} && export WORD=kept")
        child.expect(re.escape(str(tmp_path)) + r"#>")
        child.sendline("echo $WORD-$MPISH_RANK")
        seen = {child.expect(["kept-1\r\n", "kept-2\r\n"]) for _ in range(2)}  # in any order
        assert seen == {0, 1}
        child.expect(r"#>")
        child.sendline("exit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)
