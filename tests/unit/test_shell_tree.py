"""Trees of :put -r / :get -r (mpish.shell.tree): cp -r naming, hostile names, links never
written through, modes, empty directories, no partial file under a final name."""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
from pathlib import Path

import pytest

from mpish.shell import protocol as p
from mpish.shell import tree
from mpish.shell.tree import HostileName, TreeReader, TreeWriter, split_relative, times

UMASK = 0o022


def copy(source: Path, final: Path) -> str:
    """Send ``source`` through a reader into a writer at ``final``; the writer's verdict."""
    reader = TreeReader(source, 1)
    writer = TreeWriter(final, UMASK)
    while (message := reader.next(p.CHUNK)) is not None:
        feed(writer, message)
    return writer.finish()


def feed(writer: TreeWriter, message: object) -> None:
    if isinstance(message, p.Entry):
        writer.entry(message)
    elif isinstance(message, p.Chunk):
        writer.write(message.data)
    elif isinstance(message, p.FileEnd):
        writer.end_file(message)


def entry(path: str, kind: str = "file", mode: int = 0o644, target: str = "") -> p.Entry:
    return p.Entry(1, path, kind, mode, 0, target)


def file_end(data: bytes) -> p.FileEnd:
    return p.FileEnd(1, len(data), hashlib.sha256(data).digest(), "")


def listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("name", ["/etc/passwd", "..", "a/../../x", "a//b", "./a", "a/.", "a\0b", "a/"])
def test_entry_names_that_could_leave_the_tree_are_refused(name: str) -> None:
    with pytest.raises(HostileName):
        split_relative(name)


def test_a_tree_deeper_than_the_limit_is_refused_so_descriptors_stay_bounded() -> None:
    """A hostile host's :get -r of 3000 nested directories held 3000 descriptors (security review)."""
    assert len(split_relative("/".join(["d"] * tree.MAX_DEPTH))) == tree.MAX_DEPTH
    with pytest.raises(HostileName, match=f"deeper than {tree.MAX_DEPTH} directory levels"):
        split_relative("/".join(["d"] * (tree.MAX_DEPTH + 1)))


def test_plain_relative_names_are_split_and_the_root_is_empty() -> None:
    assert split_relative("") == ()
    assert split_relative("a/b c/..d") == ("a", "b c", "..d")


def test_cp_r_naming_an_existing_directory_receives_the_tree_under_its_name(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    assert tree.tree_destination(tmp_path / "dest", "d") == tmp_path / "dest" / "d"
    assert tree.tree_destination(tmp_path / "new", "d") == tmp_path / "new"  # it becomes the copy
    assert tree.tree_destination(tmp_path / "dest", "") == tmp_path / "dest"  # :put -r . dest
    assert [tree.source_name(s) for s in ("a/d/", "d", ".", "..", "/", "/x/y")] == ["d", "d", "", "", "", "y"]


def test_a_tree_arrives_with_modes_empty_directories_and_links_as_links(tmp_path: Path) -> None:
    source = tmp_path / "d"
    (source / "sub" / "empty").mkdir(parents=True)
    (source / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho run\n")
    (source / "sub" / "run.sh").chmod(0o755)
    (source / "big.bin").write_bytes(os.urandom(3 * p.CHUNK + 17))
    (source / "ro").mkdir()
    (source / "ro" / "kept").write_bytes(b"inside a read-only directory\n")
    (source / "ro").chmod(0o555)
    (source / "out").symlink_to("/etc")  # a link out of the tree: copied as a link, never followed
    os.mkfifo(source / "fifo")
    final = tmp_path / "copy"
    verdict = copy(source, final)
    assert verdict == f"{source}/fifo: not a regular file (not copied); 3 files copied"  # said: the rest came
    assert listing(final) == ["big.bin", "out", "ro", "ro/kept", "sub", "sub/empty", "sub/run.sh"]
    assert (final / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert stat.S_IMODE((final / "sub" / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((final / "ro").stat().st_mode) == 0o555  # set once its entries were written
    assert os.readlink(final / "out") == "/etc" and (final / "out").is_symlink()
    assert not [n for n in os.listdir(final) if n.endswith(".mpish-part")]


def test_a_link_then_a_file_below_it_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    writer = TreeWriter(tmp_path / "copy", UMASK)
    writer.entry(entry("", "dir", 0o755))
    writer.entry(entry("a", "link", target=str(outside)))
    writer.entry(entry("a/passwd"))
    writer.write(b"owned\n")
    writer.end_file(file_end(b"owned\n"))
    verdict = writer.finish()
    assert "a symbolic link (not followed)" in verdict, verdict
    assert os.listdir(outside) == []


@pytest.mark.parametrize("name", ["../escaped", "/tmp/escaped-abs", "sub/../../escaped"])
def test_hostile_names_are_refused_and_nothing_is_written_outside(tmp_path: Path, name: str) -> None:
    final = tmp_path / "t" / "copy"
    final.parent.mkdir()
    writer = TreeWriter(final, UMASK)
    writer.entry(entry("", "dir", 0o755))
    writer.entry(entry("sub", "dir", 0o755))
    writer.entry(entry(name))
    writer.write(b"x")
    writer.end_file(file_end(b"x"))
    writer.entry(entry("fine"))
    writer.write(b"ok")
    writer.end_file(file_end(b"ok"))
    assert f"refused the entry name {name!r}" in writer.finish()
    assert listing(tmp_path / "t") == ["copy", "copy/fine", "copy/sub"]
    assert not Path("/tmp/escaped-abs").exists()


def test_a_link_planted_in_the_destination_is_not_followed(tmp_path: Path) -> None:
    source = tmp_path / "d"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f").write_bytes(b"data")
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "sub").symlink_to(victim)  # planted by another user where the tree goes
    verdict = copy(source, dest / "d")
    assert verdict.startswith(f"cannot write {dest}/d/sub: a symbolic link (not followed)"), verdict
    assert os.listdir(victim) == []
    (dest / "d" / "sub").unlink()
    (dest / "d").rmdir()
    (dest / "d").symlink_to(victim)  # the root itself planted as a link
    assert copy(source, dest / "d") == f"cannot write {dest}/d: a symbolic link (not followed)"
    assert os.listdir(victim) == []


def test_a_bad_file_leaves_no_file_under_its_name_and_no_part_file(tmp_path: Path) -> None:
    final = tmp_path / "copy"
    writer = TreeWriter(final, UMASK)
    writer.entry(entry("", "dir", 0o755))
    writer.entry(entry("wrong-digest"))
    writer.write(b"abc")
    writer.end_file(file_end(b"abd"))
    writer.entry(entry("sender-failed"))
    writer.write(b"half")
    writer.end_file(p.FileEnd(1, 4, b"", "cannot read /src/sender-failed: Input/output error"))
    writer.entry(entry("cut-short"))
    writer.write(b"partial")
    verdict = writer.finish(aborted=True)
    assert verdict == (
        "stopped on the console's side (interrupted); the files that arrived whole before it are kept"
    )
    assert os.listdir(final) == []


def test_an_existing_file_where_the_tree_goes_is_one_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "d"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    (tmp_path / "dest").write_bytes(b"a file")
    assert copy(source, tmp_path / "dest") == f"cannot write {tmp_path}/dest: exists and is not a directory"
    missing = f"cannot write into {tmp_path}/no: no such directory (make it first)"
    assert copy(source, tmp_path / "no" / "such") == missing


def test_the_reader_sends_a_swapped_in_link_as_a_link_not_its_target(tmp_path: Path) -> None:
    source = tmp_path / "d"
    source.mkdir()
    (source / "x").mkdir()
    before = times(os.stat(source))  # (the reader's listing may set its atime)
    reader = TreeReader(source, 1)
    assert reader.next(p.CHUNK) == p.Entry(1, "", "dir", 0o755, 0, "", *before)
    (source / "x").rmdir()
    (source / "x").symlink_to("/etc")  # between the listing and the visit
    sent = reader.next(p.CHUNK)
    assert sent == p.Entry(1, "x", "link", 0o777, 0, "/etc")
    assert reader.next(p.CHUNK) is None


def test_tab_after_put_r_completes_the_local_path_and_after_get_r_the_remote_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from mpish.shell.completion import make_completer

    (tmp_path / "srcdir").mkdir()
    monkeypatch.chdir(tmp_path)
    completer = make_completer([":put", ":get"], lambda target, prefix: ["REMOTE/"])

    def names(line: str) -> list[str]:  # the word completed (it replaces the word typed)
        return [c.text for c in completer.get_completions(Document(line), CompleteEvent())]

    assert names(":put -r src") == ["srcdir/"]  # the console's srcdir/, not the target's
    assert names(":put -r srcdir rem") == ["REMOTE/"]
    assert names(":get -r rem") == ["REMOTE/"]
    assert names(":get -r remote src") == ["srcdir/"]


def test_tab_inserts_a_remote_name_with_a_blank_escaped_so_the_line_names_that_one_file(
        tmp_path: Path) -> None:
    # `rm /data/my<Tab>` became `rm /data/my file`: two other files; bash inserts `my\ file`
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from mpish.shell.completion import complete_path, make_completer

    (tmp_path / "my file").write_text("x")
    (tmp_path / "it's $HOME").write_text("x")
    completer = make_completer([], lambda target, prefix: complete_path(prefix, str(tmp_path)))

    def texts(line: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(line), CompleteEvent())]

    assert texts("rm my") == ["my\\ file "]
    assert texts("cat it") == ["it\\'s\\ \\$HOME "]


def test_tab_inserts_a_local_name_for_put_with_its_blanks_escaped_as_put_splits_its_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `:put my<Tab>` became `:put my file`: "no file my" (:put splits its words as shlex does)
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from mpish.shell.completion import make_completer

    (tmp_path / "my file.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    completer = make_completer([":put"], lambda target, prefix: [])
    line = ":put my"
    completions = list(completer.get_completions(Document(line), CompleteEvent()))
    assert [(c.text, c.start_position) for c in completions] == [("my\\ file.txt ", -2)]  # the word replaced
    completed = line[:-2] + completions[0].text
    assert shlex.split(completed) == [":put", "my file.txt"]


def test_a_tree_copy_writes_into_a_device_at_its_root_or_inside_and_refuses_a_fifo(tmp_path: Path) -> None:
    """`:get -r results /dev/null` (and --rcopy, which always takes -r) renamed the part file
    over the device node: as root, the machine's /dev/null became a regular file. As cp -r,
    the bytes now go into it; a FIFO there is refused with one line, never replaced."""
    source, run = tmp_path / "results", tmp_path / "run"
    source.write_bytes(b"thrown away\n")
    run.mkdir()
    (run / "results").write_bytes(b"thrown away too\n")
    null, fifo, dest = tmp_path / "null", tmp_path / "fifo", tmp_path / "dest"
    dest.mkdir()
    try:
        for node in (null, dest / "results"):
            os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    os.mkfifo(fifo)
    (tmp_path / "link").symlink_to(null)  # our link to a device, named by the user: followed
    for final in (null, tmp_path / "link"):  # the root of the copy is the device
        assert copy(source, final) == "", final
    assert copy(run, dest) == ""  # a file of the tree where a device is: written into it
    assert copy(source, fifo).endswith("it is a FIFO, not replaced (mpish writes regular files and devices "
                                       "such as /dev/null)")
    for node in (null, dest / "results"):
        assert stat.S_ISCHR(os.lstat(node).st_mode) and os.lstat(node).st_rdev == os.makedev(1, 3), node
    assert (tmp_path / "link").is_symlink() and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["dest", "fifo", "link", "null", "results", "run"]  # no part file
    assert os.listdir(dest) == ["results"]


@pytest.mark.parametrize("root", ["tree", "tree/grow.log"])
def test_a_file_written_to_while_a_tree_is_read_is_refused_not_verified(tmp_path: Path, root: str) -> None:
    """A file appended to while it was copied (a live log in the tree) was copied with old and new
    bytes mixed and said "ok, SHA-256 verified" (helper-141): it is refused as a single file is."""
    source = tmp_path / "tree"
    source.mkdir()
    (source / "grow.log").write_bytes(b"x" * (3 * p.CHUNK))
    reader = TreeReader(tmp_path / root, 1)
    writer = TreeWriter(tmp_path / "copy", UMASK)
    ends, chunks = [], 0
    while (message := reader.next(p.CHUNK)) is not None:
        if isinstance(message, p.Chunk) and not chunks:  # the writer of the log goes on meanwhile
            with open(source / "grow.log", "ab") as log:
                log.write(b"more\n")
        chunks += isinstance(message, p.Chunk)
        if isinstance(message, p.FileEnd):
            ends.append(message)
        feed(writer, message)
    assert [end.error.partition(" changed while it was read")[:2] for end in ends] == [
        (f"{source}/grow.log", " changed while it was read")], ends
    assert "changed while it was read" in writer.finish()
    assert not (tmp_path / "copy" / "grow.log").exists() and not (tmp_path / "copy").is_file()
