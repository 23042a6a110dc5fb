""":put and :get through the console (commands on stdin, and at a terminal for -r): cp naming,
trees, part files another user cannot hijack (a second uid plants links and files where the
transfer writes), errors half-way."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from shell_util import MPISH, make_home, shell_env
from terminal import Person, at_terminal

pytestmark = [pytest.mark.mpi, pytest.mark.console]
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
    os.mkfifo(tmp_path / "fifo")
    done = console(tmp_path, ":timeout abc\n:timeout nan\n:put no-such-file\n:put adir\n:put fifo\nexit\n",
                   ranks=1)
    err = done.stderr.decode()
    assert "'fifo' is not a regular file (a FIFO, device or socket)" in err, err  # was: "no file 'fifo'"
    assert "'adir' is a directory on the console's machine" in err, err  # was: "no file 'adir'"
    assert "usage: :timeout SECONDS: 'abc' is not a timeout: seconds, a number from 0 (none) up" in err, err
    assert "usage: :timeout SECONDS: 'nan' is not a timeout" in err, err  # was taken: "timeout: nan s"
    assert f"no file 'no-such-file' in the console's directory {tmp_path}" in err, err
    assert "could not convert" not in err and "Errno" not in err


def make_tree(root: Path) -> Path:
    """A tree with a nested executable, an empty directory, links in and out of it, 3 MiB."""
    tree = root / "d"
    (tree / "sub" / "empty").mkdir(parents=True)
    (tree / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho ran\n")
    (tree / "sub" / "run.sh").chmod(0o755)
    (tree / "big.bin").write_bytes(os.urandom(3 << 20))
    (tree / "sub" / "up").symlink_to("../big.bin")
    (tree / "out").symlink_to("/etc")
    return tree


def same_tree(copy: Path, tree: Path) -> None:
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == names, copy
    assert (copy / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    assert os.access(copy / "sub" / "run.sh", os.X_OK) and (copy / "sub" / "empty").is_dir()
    assert os.readlink(copy / "out") == "/etc" and os.readlink(copy / "sub" / "up") == "../big.bin"


def test_put_r_and_get_r_copy_trees_as_cp_r_at_the_terminal(person: Person, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    remote = tmp_path / "remote"
    (remote / "dest").mkdir(parents=True)
    (tmp_path / "back").mkdir()
    person.prompt()
    person.run(f"cd {remote}", str(remote))
    screen = person.run(":put src/d")
    assert "'src/d' is a directory on the console's machine: use :put -r src/d" in screen, screen
    assert "ok" in person.run("@1 :put -r src/d dest/")  # an existing directory: dest/d
    assert "ok" in person.run("@2 :put -r src/d newcopy")  # no such path: it becomes the copy
    same_tree(remote / "dest" / "d", tree)
    same_tree(remote / "newcopy", tree)
    screen = person.run(":get dest/d")
    assert "is a directory (use :get -r)" in screen, screen
    screen = person.run(":get -r dest/d back")
    assert f"  {tmp_path}/back/d.1/\r\n  {tmp_path}/back/d.2/\r\n" in screen, screen  # absolute
    same_tree(tmp_path / "back" / "d.1", tree)
    same_tree(tmp_path / "back" / "d.2", tree)
    screen = person.run("@2 :get -r newcopy")
    assert "mpish: get @2: ok, SHA-256 verified" in screen and f"  {tmp_path}/newcopy/" in screen, screen
    same_tree(tmp_path / "newcopy", tree)
    assert not list(tmp_path.rglob("*.mpish-part"))


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv here")
def test_errors_half_way_through_a_tree_are_one_line_and_leave_no_partial_file(tmp_path: Path) -> None:
    """A file the reader may not read, one past the file-size limit (as a full disk would fail
    it): the rest arrives, each target says so in one line, no part file is left."""
    tree = tmp_path / "d"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"first\n")
    (tree / "big.bin").write_bytes(os.urandom(40 << 20))  # past ulimit -f below: EFBIG on write
    (tree / "secret").write_bytes(b"not for you\n")
    (tree / "secret").chmod(0)
    (tree / "z.txt").write_bytes(b"last\n")
    (tmp_path / "remote").mkdir()
    env = shell_env(make_home(tmp_path / "home"), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    shell = ["bash", "-c", f'ulimit -f {32 << 10}; exec "$0" -n 2', MPISH]  # KiB: 32 MiB
    if os.geteuid() == 0:  # root reads a mode-0 file: drop the capabilities that let it
        shell = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *shell]
    with at_terminal(shell[0], shell[1:], env, str(tmp_path)) as person:
        person.prompt()
        person.run("cd remote", "remote")
        screen = person.run(":put -r d")
        assert (f"mpish: put @1-2: cannot write {tmp_path}/remote/d/big.bin: File too large "
                "(and 1 more errors)") in screen, screen
        assert screen.count("mpish: put") == 1, screen
        assert sorted(os.listdir(tmp_path / "remote" / "d")) == ["a.txt", "z.txt"]
        (tmp_path / "remote" / "d2").mkdir()
        for name in ("big.bin", "secret", "z.txt"):
            shutil.copy(tree / name, tmp_path / "remote" / "d2" / name)
        (tmp_path / "remote" / "d2" / "secret").chmod(0)
        screen = person.run("@1 :get -r d2")
        assert "mpish: get @1: cannot write d2/big.bin: File too large (and 1 more errors)" in screen, screen
        assert sorted(os.listdir(tmp_path / "d2")) == ["z.txt"]
    assert not list(tmp_path.rglob("*.mpish-part"))


def test_put_r_to_ranks_sharing_a_file_system_gives_one_copy_as_cp_r_decided_before_any_write(
        tmp_path: Path) -> None:
    """Each rank read "does dest exist?" when its start arrived: the first one's mkdir made the
    others write dest/src/f beside dest/f (-n 3, one file system)."""
    tree = make_tree(tmp_path / "src")
    for attempt in range(3):
        dest = tmp_path / f"dest{attempt}"
        result = console(tmp_path, f":put -r {tree} {dest}\nexit\n", ranks=3)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert not (dest / tree.name).exists(), sorted(path.name for path in dest.iterdir())
        same_tree(dest, tree)  # dest did not exist: it became the copy, on every rank


def test_copy_and_rcopy_options_copy_files_and_trees_once_and_name_copies_as_clush(tmp_path: Path) -> None:
    """clush's --copy/--rcopy/--dest: the words after the options are the files; a tree goes as
    one; --rcopy names each copy NAME.<rank>, from one target too; the default directory is
    the source's own; a missing one is said, with status 1."""
    tree, data = make_tree(tmp_path), tmp_path / "data.bin"
    data.write_bytes(os.urandom(70000))
    (tmp_path / "remote").mkdir()
    (tmp_path / "back").mkdir()
    make_home(tmp_path / "home")
    env = shell_env(tmp_path / "home")

    def mpish(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MPISH, *argv], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=90, start_new_session=True)

    done = mpish("-n", "2", "--copy", "data.bin", "d", "--dest", str(tmp_path / "remote"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "remote" / "data.bin").read_bytes() == data.read_bytes()
    same_tree(tmp_path / "remote" / "d", tree)
    assert "mpish: put data.bin to @1-2: ok, SHA-256 verified" in done.stdout, done.stdout
    assert "mpish: put d to @1-2: ok, SHA-256 verified" in done.stdout, done.stdout
    done = mpish("-n", "2", "-w", "@2", "--rcopy", str(tmp_path / "remote" / "data.bin"),
                 str(tmp_path / "remote" / "d"), "--dest", "back")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "back" / "data.bin.2").read_bytes() == data.read_bytes()  # suffixed, from one target
    same_tree(tmp_path / "back" / "d.2", tree)
    assert f"  {tmp_path}/back/data.bin.2\n" in done.stdout and f"  {tmp_path}/back/d.2/\n" in done.stdout
    done = mpish("-n", "1", "--rcopy", str(tmp_path / "remote" / "data.bin"))  # into the source's directory
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "remote" / "data.bin.1").read_bytes() == data.read_bytes()
    done = mpish("-n", "1", "--copy", "data.bin", "--dest", str(tmp_path / "nowhere"))
    assert done.returncode == 1
    assert f"cannot write into {tmp_path}/nowhere: no such directory (make it" in done.stderr, done.stderr
    done = mpish("-n", "1", "--copy", "d", "--dest", str(tmp_path / "nowhere"))  # a tree too (not cp -r's)
    assert done.returncode == 1 and not (tmp_path / "nowhere").exists(), done.stdout
    assert f"cannot write into {tmp_path}/nowhere: no such directory (make it" in done.stderr, done.stderr
    (tmp_path / "-lead").write_bytes(b"dash\n")  # a file named like an option, after --
    done = mpish("-n", "2", "--copy", "--dest", str(tmp_path / "remote"), "-x", "@2", "--", "-lead")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "remote" / "-lead").read_bytes() == b"dash\n", done.stdout
    assert "put -lead to @1: ok" in done.stdout, done.stdout
    done = mpish("-n", "1", "--rcopy", "data.bin", "--dest", "nowhere")
    assert done.returncode == 1
    assert "--rcopy: nowhere is not a directory of this machine" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_lcd_moves_where_put_reads_and_get_writes_and_explains_a_bad_directory(tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "note.txt").write_text("from here\n")
    (tmp_path / "remote").mkdir()
    script = (f"cd {tmp_path}/remote\n:lcd -\n:lcd here\n:put note.txt\n:lcd {tmp_path}/remote\n"
              f":lcd ../no such\n:lcd '../no such'\n@1 :get note.txt copy.txt\n:lcd -\nexit\n")
    done = console(tmp_path, script, ranks=1)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert f"local directory: {tmp_path}/here\n" in out, out
    assert (tmp_path / "remote" / "note.txt").read_text() == "from here\n"  # read from the new directory
    assert (tmp_path / "remote" / "copy.txt").read_text() == "from here\n"  # written where :lcd went
    assert f"  {tmp_path}/remote/copy.txt\n" in out, out
    assert "usage: :lcd [DIR] (one directory; quote a name with blanks)" in err, err
    assert ":lcd: ../no such: No such file or directory (on the console's machine)" in err, err
    assert ":lcd: no previous local directory" in err, err  # :lcd - before any :lcd
    assert out.endswith(f"local directory: {tmp_path}/here\n"), out  # :lcd -: back to the one before
    assert "Errno" not in err and "Traceback" not in err
