"""A real Console and a real ShellServer over pipes (no MPI, no ssh): :put -r and :get -r
move a tree larger than the credit window through the transfer machinery, and back."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpish.shell import console_transfer as transfer
from mpish.shell import protocol as p
from mpish.shell.console import Console
from wirepair import served_console


def changed_text(source: object) -> str:
    return (f"{source} changed while it was read: nothing was written (copy it again; a file that is "
            "still being written, a live log, copies as a snapshot made first: cp FILE FILE.copy)")


def test_a_tree_larger_than_the_window_goes_there_and_back(console: Console, tmp_path: Path) -> None:
    tree = tmp_path / "d"
    (tree / "sub" / "empty").mkdir(parents=True)
    (tree / "big.bin").write_bytes(os.urandom(3 * p.WINDOW // 2))
    for n in range(300):
        (tree / "sub" / f"f{n}").write_bytes(b"%d\n" % n)
    (tree / "sub" / "run").write_bytes(b"#!/bin/sh\n")
    (tree / "sub" / "run").chmod(0o750)
    (tree / "link").symlink_to("sub/run")
    (tmp_path / "remote").mkdir()
    sent = transfer.put_tree(console, tree, str(tmp_path / "remote"), [1])
    assert sent.verdicts == {1: ""} and sent.files == 302
    copy = tmp_path / "remote" / "d"
    got = transfer.get(console, str(copy), str(tmp_path / "back"), [1], tree=True)
    assert got == {1: ""}
    for root in (copy, tmp_path / "back"):
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == sorted(
            str(p.relative_to(tree)) for p in tree.rglob("*"))
        assert (root / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
        assert (root / "sub" / "f299").read_bytes() == b"299\n"
        assert os.stat(root / "sub" / "run").st_mode & 0o777 == 0o750
        assert os.readlink(root / "link") == "sub/run"


def test_a_directory_without_r_and_a_missing_tree_are_one_line_each(console: Console, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    assert transfer.get(console, str(tmp_path / "d"), str(tmp_path / "x"), [1]) == {
        1: f"{tmp_path}/d is a directory (use :get -r)"}
    assert transfer.get(console, str(tmp_path / "none"), str(tmp_path / "y"), [1], tree=True) == {
        1: f"cannot read {tmp_path}/none: No such file or directory"}
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_an_unreadable_local_file_or_tree_is_one_line_and_nothing_is_sent(
        console: Console, tmp_path: Path) -> None:
    for send in (transfer.put, transfer.put_tree):
        with pytest.raises(ValueError, match=r"cannot read .*none on the console's machine: No such file"):
            send(console, tmp_path / "none", str(tmp_path / "copy"), [1])
    assert sorted(os.listdir(tmp_path)) == []


def test_get_into_a_missing_local_directory_is_one_line_naming_it_and_nothing_is_sent(
        console: Console, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """New-user review: ``:get f.txt gotdir/`` without gotdir printed one line per target, in
    any order; it is one line naming the directory and where LOCAL is resolved."""
    import contextlib
    import io

    from mpish.shell.console_put_get import get_builtin

    (tmp_path / "f.txt").write_text("data\n")
    err = io.StringIO()
    words = f"{tmp_path}/f.txt {tmp_path}/gotdir/"
    status = get_builtin(console, frozenset({1}), words, contextlib.nullcontext, err)
    assert status == 1
    assert err.getvalue().count("\n") == 1, err.getvalue()
    assert f"the local directory {tmp_path}/gotdir does not exist" in err.getvalue()
    assert not (tmp_path / "gotdir").exists() and capsys.readouterr().out == ""


def test_a_tree_got_in_part_is_still_named_where_it_was_written(
        console: Console, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """New user: ``:get -r tree`` of a tree holding a FIFO printed only the FIFO's line: the copy
    of everything else was written, but nothing said so or where."""
    import contextlib
    import io

    from mpish.shell.console_put_get import get_builtin

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kept.txt").write_text("kept\n")
    os.mkfifo(tree / "fifo")
    (tmp_path / "got").mkdir()
    err = io.StringIO()
    status = get_builtin(console, frozenset({1}), f"-r {tree} {tmp_path}/got", contextlib.nullcontext, err)
    assert status == 1
    assert err.getvalue() == f"mpish: get @1: {tree}/fifo: not a regular file (not copied); 1 file copied\n"
    assert capsys.readouterr().out == f"  {tmp_path}/got/tree/ (written, but see the error above)\n"
    assert (tmp_path / "got" / "tree" / "kept.txt").read_text() == "kept\n"


def _aged(path: Path, data: bytes) -> Path:
    """``path`` holding ``data``, its times in the past: a write now changes its mtime."""
    path.write_bytes(data)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def test_over_the_plain_channel_of_ssh_a_file_is_not_hashed_and_arrives_whole(tmp_path: Path) -> None:
    # ssh's MAC authenticates the bytes in transit: no digest on either end (PutDone's is
    # b""), the sizes are still checked, and what arrives is the file; over a secure
    # channel (MPI) the SHA-256 stays
    data = os.urandom(3 * p.CHUNK + 17)
    source = _aged(tmp_path / "src.bin", data)
    (tmp_path / "remote").mkdir()
    with served_console(plain=True) as console:
        assert not transfer.verifies(console)
        done: list[p.PutDone] = []

        def answer(rank: int, message: object) -> None:
            if isinstance(message, p.PutDone):
                done.append(message)

        with console.routed(answer):
            xfer = console.new_id()
            console.send(1, p.PutStart(xfer, str(tmp_path / "remote"), len(data), 0o644, "raw.bin"))
            console.send(1, p.Chunk(data[:100]))
            console.send(1, p.PutEnd(xfer, len(data), b"", False))
            console.wait(lambda: bool(done))
        assert done[0].sha256 == b""  # not hashed
        assert transfer.put(console, source, str(tmp_path / "remote"), [1]).verdicts == {1: ""}
        assert (tmp_path / "remote" / "src.bin").read_bytes() == data
        back = transfer.get(console, str(tmp_path / "remote" / "src.bin"), str(tmp_path / "back"), [1])
        assert back == {1: ""} and (tmp_path / "back").read_bytes() == data
    with served_console() as console:
        assert transfer.verifies(console)


def test_a_file_changed_while_put_reads_it_is_not_written(console: Console, tmp_path: Path) -> None:
    source = _aged(tmp_path / "src.bin", os.urandom(3 * p.CHUNK))
    (tmp_path / "remote").mkdir()

    def rewrite(done: int, total: int) -> None:  # after the first chunk: same size, new bytes
        if done == p.CHUNK:
            with open(source, "r+b") as out:
                out.seek(2 * p.CHUNK)
                out.write(b"changed")

    sent = transfer.put(console, source, str(tmp_path / "remote"), [1], rewrite)
    assert sent.verdicts == {1: changed_text(source)}
    assert list((tmp_path / "remote").iterdir()) == []  # no copy, no part file left


@pytest.mark.parametrize("plain", [False, True], ids=["hashed", "plain_as_over_ssh"])
def test_a_proc_file_whose_stat_says_0_bytes_is_copied_whole_both_ways(tmp_path: Path, plain: bool) -> None:
    source = Path("/proc/version")  # stat size 0, content stable (helper-141: "checksum mismatch")
    assert os.stat(source).st_size == 0
    text = source.read_bytes()
    (tmp_path / "remote").mkdir()
    with served_console(plain) as console:
        assert transfer.put(console, source, str(tmp_path / "remote"), [1]).verdicts == {1: ""}
        assert transfer.get(console, str(source), str(tmp_path / "got"), [1]) == {1: ""}
    assert text and (tmp_path / "remote" / "version").read_bytes() == text
    assert (tmp_path / "got").read_bytes() == text


@pytest.mark.parametrize("plain", [False, True], ids=["hashed", "plain_as_over_ssh"])
def test_p_keeps_times_and_exact_modes_of_files_and_trees_both_ways(tmp_path: Path, plain: bool) -> None:
    # clush -p (scp -p): a clush user's --copy -p was refused ("unrecognized arguments: -p")
    old = (1_500_000_000_123_456_789, 1_600_000_000_987_654_321)  # (atime, mtime) in ns
    tree = tmp_path / "d"
    (tree / "sub").mkdir(parents=True)
    for path, mode in ((tree / "f", 0o604), (tree / "sub" / "g", 0o751)):
        path.write_bytes(b"x")
        path.chmod(mode)
        os.utime(path, ns=old)
    (tree / "sub").chmod(0o705)
    for directory in (tree / "sub", tree):  # (the inner one first: writing into a directory sets its mtime)
        os.utime(directory, ns=old)
    (tmp_path / "there").mkdir()
    previous = os.umask(0o077)  # the copies' modes are the sources', not masked
    try:
        with served_console(plain) as console:
            there = str(tmp_path / "there")
            assert transfer.put(console, tree / "f", there, [1], preserve=True).verdicts == {1: ""}
            assert transfer.put_tree(console, tree, there, [1], preserve=True).verdicts == {1: ""}
            got = transfer.get(console, str(tree / "sub" / "g"), str(tmp_path / "g"), [1], preserve=True)
            assert got == {1: ""}
            got = transfer.get(console, str(tree), str(tmp_path / "back"), [1], tree=True, preserve=True)
            assert got == {1: ""}
            assert transfer.put(console, tree / "f", str(tmp_path / "plain"), [1]).verdicts == {1: ""}
    finally:
        os.umask(previous)
    there, back = tmp_path / "there", tmp_path / "back"
    sub, g = tree / "sub", tree / "sub" / "g"
    pairs = {there / "f": tree / "f", tmp_path / "g": g,  # single files, put and get
             there / "d": tree, there / "d" / "sub": sub, there / "d" / "sub" / "g": g,  # trees
             back: tree, back / "sub": sub, back / "sub" / "g": g}
    for copy, source in pairs.items():
        got, want = os.stat(copy), os.stat(source)
        assert (got.st_mtime_ns, got.st_mode) == (want.st_mtime_ns, want.st_mode), (copy, oct(got.st_mode))
        assert got.st_mtime_ns == old[1], copy
    plain_copy = os.stat(tmp_path / "plain")
    assert plain_copy.st_mode & 0o777 == 0o600 and plain_copy.st_mtime_ns != old[1]  # without -p: as cp


def test_a_file_changed_while_get_reads_it_is_not_kept(console: Console, tmp_path: Path) -> None:
    # larger than the credit window: the server cannot have read to its end at the first chunk
    source = _aged(tmp_path / "src.bin", os.urandom(2 * p.WINDOW))
    (tmp_path / "local").mkdir()

    def rewrite(done: int, total: int) -> None:
        if done == p.CHUNK:
            with open(source, "r+b") as out:
                out.seek(2 * p.WINDOW - 7)
                out.write(b"changed")

    got = transfer.get(console, str(source), str(tmp_path / "local"), [1], rewrite)
    assert got == {1: changed_text(source)}
    assert list((tmp_path / "local").iterdir()) == []


def test_over_ssh_a_get_sends_16_mib_before_any_credit_and_no_more(tmp_path: Path) -> None:
    # over ssh the bytes in flight wait in pipes and ssh's buffers: the server may send
    # WINDOW + SSH_EXTRA_WINDOW without credit (4 MiB stalled it), and then stops
    from mpish.shell.transfer import SSH_EXTRA_WINDOW

    allowance = p.WINDOW + SSH_EXTRA_WINDOW
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(allowance + 3 * p.CHUNK))
    received: list[int] = []
    ended: list[p.GetEnd] = []

    def answer(rank: int, message: object) -> None:
        if isinstance(message, p.Chunk):
            received.append(len(message.data))
        elif isinstance(message, p.GetEnd):
            ended.append(message)

    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the server stopped before 16 MiB"))
    signal.alarm(60)  # a guard against a hang, not a timing assertion
    try:
        with served_console(plain=True) as console, console.routed(answer):
            console.send(1, p.GetStart(console.new_id(), str(source)))
            console.wait(lambda: sum(received) >= allowance)
            assert sum(received) == allowance  # not a byte more without credit
            console.consumed(1, sum(received), final=True)
            console.wait(lambda: bool(ended))
    finally:
        signal.alarm(0)
    assert sum(received) == source.stat().st_size and ended[0].error == ""


def test_several_sources_go_into_the_directory_named_last_as_cp_and_a_missing_one_is_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a review: `:put a b dir` was "usage: :put [-r] LOCAL [REMOTE]" (cp and scp take several)
    import contextlib
    import io

    from mpish.shell.console_put_get import get_builtin, put_builtin

    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "t").write_bytes(b"t")
    (tmp_path / "there").mkdir()
    (tmp_path / "back").mkdir()
    err = io.StringIO()
    with served_console() as console:
        put = f"-r {tmp_path}/a {tmp_path}/none {tmp_path}/b {tmp_path}/tree {tmp_path}/there"
        assert put_builtin(console, frozenset({1}), put, contextlib.nullcontext, err) == 1
        get = f"{tmp_path}/there/a {tmp_path}/there/b {tmp_path}/back"
        assert get_builtin(console, frozenset({1}), get, contextlib.nullcontext, err) == 0
    assert sorted(os.listdir(tmp_path / "there")) == ["a", "b", "tree"]
    assert (tmp_path / "there" / "tree" / "t").read_bytes() == b"t"
    assert (tmp_path / "back" / "a").read_bytes() == b"a" and (tmp_path / "back" / "b").read_bytes() == b"b"
    missing = f"mpish: :put copies a file of the console's machine: no file '{tmp_path}/none'\n"
    assert err.getvalue() == missing
    assert capsys.readouterr().out.count(": ok, ") == 5


def test_a_ctrl_c_during_one_of_several_sources_ends_the_copy_there_with_130() -> None:
    # helper-145: the Ctrl-C ended the file being sent; the next sources were copied, status 1
    import contextlib
    import io
    from types import SimpleNamespace

    from mpish.shell.console_put_get import _several

    ran: list[str] = []

    @contextlib.contextmanager
    def keys() -> Iterator[object]:  # as Repl.keys: its object says whether Ctrl-C was typed
        yield SimpleNamespace(interrupted=False)

    def builtin(line: str, watched: Any) -> int:
        with watched() as pressed:
            ran.append(line)
            pressed.interrupted = len(ran) == 2  # Ctrl-C typed during the second source
        return 1 if len(ran) == 2 else 0

    assert _several(builtin, ["a", "b", "c"], keys, io.StringIO()) == 130
    assert ran == ["a", "b"]


def test_several_sources_of_one_name_or_into_no_local_directory_are_refused_before_any_copy(
        tmp_path: Path) -> None:
    import contextlib
    import io

    from mpish.shell.console_put_get import get_builtin, put_builtin

    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "same").write_bytes(b"x")
    with served_console() as console:
        with pytest.raises(ValueError, match=r"'.*/a/same' and '.*/b/same' have the same name: both would "
                                             r"be written as .*/into/same; nothing was copied"):
            put_builtin(console, frozenset({1}), f"{tmp_path}/a/same {tmp_path}/b/same {tmp_path}/into",
                        contextlib.nullcontext, io.StringIO())
        with pytest.raises(ValueError, match=r"'.*/new' is not a directory of the console's machine: several "
                                             r"sources go into an existing one"):
            get_builtin(console, frozenset({1}), f"-r {tmp_path}/a {tmp_path}/b {tmp_path}/new",
                        contextlib.nullcontext, io.StringIO())
    assert not (tmp_path / "new").exists() and not (tmp_path / "into").exists()
