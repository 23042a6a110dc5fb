"""A FIFO (or another non-regular file) under the name of a file to send is refused with one
line, at both ends: the server rank of :get and the console of :put never block in open()."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from mpish.shell import console_transfer as transfer
from mpish.shell import protocol as p
from mpish.shell.console import Console
from mpish.shell.server.transfer_files import Get


def test_the_server_refuses_to_send_a_fifo_as_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "results"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer: the old open() returned, no hang
    try:
        os.write(writer, b"planted\n")
        get = Get(p.GetStart(1, fifo), str(tmp_path))
        assert get.error == f"cannot read {fifo}: not a regular file"
        assert get.finished and get.read(p.CHUNK) == b""
    finally:
        os.close(writer)


def guarded(call: Callable[[], object], fifo: Path) -> object:
    """``call()``, in a thread: the old code blocked forever in open(); after a while a writer
    opens the FIFO, so that a test on the old code fails instead of hanging."""
    outcome: list[object] = []

    def attempt() -> None:
        try:
            outcome.append(call())
        except ValueError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=30)
    return outcome[0] if outcome else "hung"


def test_get_of_a_fifo_with_no_writer_answers_one_line_and_leaves_the_server_usable(
    console: Console, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "real").write_bytes(b"real\n")
    verdicts = guarded(lambda: transfer.get(console, str(fifo), str(tmp_path / "got"), [1]), fifo)
    assert verdicts == {1: f"cannot read {fifo}: not a regular file"}
    assert not (tmp_path / "got").exists()
    assert transfer.get(console, str(tmp_path / "real"), str(tmp_path / "got"), [1]) == {1: ""}
    assert (tmp_path / "got").read_bytes() == b"real\n"


def test_put_of_a_local_fifo_with_no_writer_is_refused_with_one_line(
    console: Console, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome = guarded(lambda: transfer.put(console, fifo, str(tmp_path / "remote"), [1]), fifo)
    assert outcome == f"cannot read {fifo} on the console's machine: not a regular file"
    assert not (tmp_path / "remote").exists()


def test_get_into_a_directory_others_can_write_warns_once(console: Console, tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"real\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    console.err = io.StringIO()
    assert transfer.get(console, str(tmp_path / "real"), str(shared / "got"), [1]) == {1: ""}
    lines = console.err.getvalue().splitlines()
    assert len(lines) == 1 and f"warning: {shared} can be written by other users" in lines[0]
    # a --rcopy over ssh gets from one group of hosts at a time: said once, not per group
    assert transfer.get(console, str(tmp_path / "real"), str(shared / "again"), [1]) == {1: ""}
    assert len(console.err.getvalue().splitlines()) == 1, console.err.getvalue()


def _sha256(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha256(data).digest()


def test_a_file_received_into_dev_null_is_written_into_it_and_dev_null_stays_a_device(tmp_path: Path) -> None:
    """`:get results /dev/null` and `:put f /dev/null` (as cp and scp: the bytes are thrown
    away); renaming the part file over it replaced the machine's /dev/null with a file.
    A /dev/null of its own (the same device, 1:3), so that a regression cannot break the host's."""
    import stat

    from mpish.shell.transfer import PartFile

    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    part = PartFile(null)
    part.write(b"thrown away\n")
    assert part.commit(_sha256(b"thrown away\n"), 12, 0o644) == ""
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert os.listdir(tmp_path) == ["null"]  # no part file left, nothing renamed


def test_a_fifo_at_the_destination_is_refused_not_replaced(tmp_path: Path) -> None:
    from mpish.shell.transfer import PartFile

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    try:
        PartFile(fifo)
    except OSError as exc:
        assert "it is a FIFO, not replaced" in exc.strerror
    else:
        raise AssertionError("a part file was made for a FIFO destination")
    assert os.path.exists(fifo) and not fifo.is_file() and os.listdir(tmp_path) == ["pipe"]


def _device_node(path: Path) -> None:
    import stat

    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")


def test_another_users_device_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    from mpish.shell.transfer import PartFile

    planted = tmp_path / "out"
    _device_node(planted)
    os.chown(planted, 65534, 65534)
    with pytest.raises(OSError, match="another user's device, not replaced"):
        PartFile(planted)


def test_a_device_swapped_for_a_file_between_check_and_open_gets_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user swaps the device at the destination with a file of hers between mpish's
    check and its open: the open must not write into her file (the race a reviewer won 174 times
    in 3 s with renameat2 RENAME_EXCHANGE)."""
    from mpish.shell import transfer

    target, hers = tmp_path / "out", tmp_path / "hers"
    _device_node(target)
    hers.write_bytes(b"")
    real_open = os.open

    def swapped_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if Path(str(path)) == target:
            os.replace(hers, target)  # her file now stands where the device was
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transfer.os, "open", swapped_open)
    with pytest.raises(OSError, match="replaced while it was opened"):
        transfer.PartFile(target)
    monkeypatch.undo()
    assert target.read_bytes() == b""


def test_our_link_to_a_device_is_written_through_not_replaced(tmp_path: Path) -> None:
    """`:get x /dev/stdout` as root: /dev/stdout is root's link to the terminal; renaming over
    it replaced the host's /dev/stdout. Our (or root's) link to a device is written through."""
    from mpish.shell.transfer import PartFile

    device, link = tmp_path / "null", tmp_path / "stdout"
    _device_node(device)
    link.symlink_to(device)
    part = PartFile(link)
    part.write(b"x")
    assert part.commit(_sha256(b"x"), 1, 0o644) == ""
    assert link.is_symlink() and os.readlink(link) == str(device)
    assert sorted(os.listdir(tmp_path)) == ["null", "stdout"]


def test_a_device_other_than_dev_null_zero_or_full_is_refused_even_through_our_own_link(
    tmp_path: Path,
) -> None:
    """A remote host's bytes went raw into a terminal (or, as root, any device a link named:
    /dev/mem, /dev/watchdog): --rcopy's NAME.<host> was our link, left by an earlier tree copy
    from that host, to /dev/pts/N, and the copy was reported "ok, SHA-256 verified" (security
    review). Only /dev/null, /dev/zero and /dev/full are written into; others are refused."""
    import stat

    from mpish.shell.transfer import PartFile
    from mpish.shell.tree import TreeWriter

    other = tmp_path / "random"  # 1:8, /dev/random's numbers: harmless if a regression writes to it
    try:
        os.mknod(other, stat.S_IFCHR | 0o666, os.makedev(1, 8))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    (tmp_path / "log.1").symlink_to(other)
    with pytest.raises(OSError, match="a character device other than /dev/null, /dev/zero or /dev/full"):
        PartFile(other)
    with pytest.raises(OSError, match="symbolic link, neither followed"):
        PartFile(tmp_path / "log.1")
    writer = TreeWriter(tmp_path / "log.1", 0o022)  # --rcopy's root, where our link is
    writer.entry(p.Entry(1, "", "file", 0o644, 0, ""))
    assert "symbolic link, neither followed" in writer.finish(), writer.first_error
    assert (tmp_path / "log.1").is_symlink() and stat.S_ISCHR(os.lstat(other).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["log.1", "random"]  # no part file


def test_our_link_through_another_users_link_is_not_followed(tmp_path: Path) -> None:
    """Our link into a shared directory, where another user's link names /dev/null: the copy
    vanished into it, reported ok (security review). A chain is followed only by our or root's links."""
    from mpish.shell.transfer import PartFile

    device, hers, ours = tmp_path / "null", tmp_path / "current", tmp_path / "log"
    _device_node(device)
    hers.symlink_to(device)
    os.lchown(hers, 65534, 65534)
    ours.symlink_to(hers)
    with pytest.raises(OSError, match="symbolic link, neither followed"):
        PartFile(ours)
    assert ours.is_symlink() and hers.is_symlink()


@pytest.mark.parametrize("recursive", [False, True], ids=[":put", ":put -r"])
def test_put_of_a_dangling_link_says_it_is_a_link_to_nothing_not_that_no_file_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recursive: bool
) -> None:
    """`:put tree/dangling` (and with -r) said "no file 'tree/dangling' in the console's
    directory" of a link that is there, to a target that is not (a clush user's trial)."""
    from mpish.shell.console_put_get import put_builtin

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "dangling").symlink_to("gone")
    with pytest.raises(ValueError) as refused:  # before the console is asked anything
        put_builtin(None, frozenset({1}), f"{'-r ' if recursive else ''}tree/dangling", None,  # type: ignore[arg-type]
                    io.StringIO())
    said = str(refused.value)
    assert "no file" not in said, said
    assert said.startswith(f"'tree/dangling' in the console's directory {tmp_path} (not the targets') is a "
                           "symbolic link to 'gone', which does not exist: "), said
