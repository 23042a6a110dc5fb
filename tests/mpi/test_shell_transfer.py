""":put and :get through the console (commands on stdin): cp naming, part files another
user cannot hijack (a second uid plants links and files where the transfer writes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from shell_util import MPISH, make_home, shell_env

pytestmark = pytest.mark.mpi
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def console(tmp_path: Path, script: str, ranks: int = 2) -> subprocess.CompletedProcess[bytes]:
    home = tmp_path / "home"
    if not home.exists():
        make_home(home)
    return subprocess.run([MPISH, "-n", str(ranks)], input=script.encode(), env=shell_env(home),
                          cwd=tmp_path, capture_output=True, timeout=90, start_new_session=True)


def test_put_into_a_directory_keeps_the_name_and_get_names_copies_by_rank(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(5000))
    remote = tmp_path / "remote"
    (remote / "dir").mkdir(parents=True)
    back = tmp_path / "back"
    back.mkdir()
    script = (f"cd {remote}\n@1 :put {source} .\n@1 :put {source} dir\n@1 :put {source} dir/\n"
              f":get data.bin {back}\n@2 :get dir/data.bin {back}/one.bin\nexit\n")
    done = console(tmp_path, script)
    assert done.returncode == 0, done.stderr
    assert (remote / "data.bin").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (remote / "dir").iterdir()) == ["data.bin"]
    assert (back / "data.bin.1").read_bytes() == source.read_bytes()
    assert (back / "data.bin.2").read_bytes() == source.read_bytes()  # the cwd is shared here
    out = done.stdout.decode()
    assert f"  {back}/data.bin.1\n" in out and f"  {back}/one.bin\n" in out, out
    assert (back / "one.bin").read_bytes() == source.read_bytes()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_another_user_cannot_hijack_the_part_files(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="mpish-hijack-"))  # pytest's tmp is 0700: nobody cannot enter
    try:
        _hijack_attempts(base, tmp_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _hijack_attempts(base: Path, tmp_path: Path) -> None:
    base.chmod(0o755)
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: everybody may create files there
    victim = base / "victim"
    victim.write_bytes(b"precious\n")
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(100_000))
    source.chmod(0o644)
    plant = " ".join(AS_NOBODY)
    # the server's old part names were .<name>.mpish-part-<server pid> ($PPID of its bash)
    script = (f"cd {shared}\n"
              f"{plant} ln -s {victim} .linked.bin.mpish-part-$PPID\n"
              f"{plant} sh -c 'umask 0; echo planted > .planted.bin.mpish-part-'$PPID\n"
              f":put {source} linked.bin\n:put {source} planted.bin\nexit\n")
    done = console(tmp_path, script, ranks=1)
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == b"precious\n"
    for name in ("linked.bin", "planted.bin"):
        final = shared / name
        assert final.read_bytes() == source.read_bytes()
        info = final.lstat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o644), (name, oct(info.st_mode))
    # the console's old part name for a get was .<name>.mpish-part
    subprocess.run([*AS_NOBODY, "ln", "-s", str(victim), f"{shared}/.got.bin.mpish-part"], check=True)
    done = console(tmp_path, f":get {shared}/linked.bin {shared}/got.bin\nexit\n", ranks=1)
    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == b"precious\n"
    got = (shared / "got.bin").lstat()
    assert got.st_uid == 0 and (shared / "got.bin").read_bytes() == source.read_bytes()


def test_bad_timeout_and_missing_local_file_are_explained(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    done = console(tmp_path, ":timeout abc\n:put no-such-file\n:put adir\nexit\n", ranks=1)
    err = done.stderr.decode()
    assert "'adir' is a directory on the console's machine" in err, err  # was: "no file 'adir'"
    assert "usage: :timeout SECONDS (a number, 0 = none), not 'abc'" in err, err
    assert f"no file 'no-such-file' in the console's directory {tmp_path}" in err, err
    assert "could not convert" not in err and "Errno" not in err
