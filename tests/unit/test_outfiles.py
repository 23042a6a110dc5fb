"""clush's --outdir/--errdir (outfiles.FileTee): each server's streams also to a file of its
own, byte for byte, the display unchanged; a link planted under a name is not followed."""

from __future__ import annotations

import io
import os
from pathlib import Path

from mpish.shell.grouping import GroupedSink, Style
from mpish.shell.names import HostNames, RankNames, Result
from mpish.shell.options import make_directories
from mpish.shell.outfiles import FileTee, file_name
from mpish.shell.protocol import STDERR, STDOUT


def fed(tee: FileTee) -> None:
    tee.output(1, STDOUT, b"one\n\xff")
    tee.output(2, STDERR, b"oops\n")
    tee.output(1, STDOUT, b"two")
    for rank in (1, 2, 3):  # 3 wrote nothing (or never ran)
        tee.done(Result(rank, f"node{rank}", 0))
    tee.finish()


def test_each_servers_streams_go_to_its_file_and_to_the_display_unchanged(tmp_path: Path) -> None:
    out, err, shown = tmp_path / "out", tmp_path / "err", io.BytesIO()
    assert make_directories(str(out), str(err)) == ""  # made, as clush makes them
    names = HostNames({1: "node1", 2: "node2", 3: "node3"}, {})
    sink = GroupedSink(shown, io.BytesIO(), Style(False), names)
    fed(FileTee(sink, names, str(out), str(err), io.BytesIO()))
    assert (out / "node1").read_bytes() == b"one\n\xfftwo"  # as the bytes came (no newline added)
    assert (out / "node2").read_bytes() == b"" and (out / "node3").read_bytes() == b""
    assert (err / "node2").read_bytes() == b"oops\n" and (err / "node1").read_bytes() == b""
    assert b"one\n\xfftwo" in shown.getvalue()  # shown as without --outdir


def test_a_link_planted_under_a_servers_name_is_not_followed_and_said_once(tmp_path: Path) -> None:
    out, victim, said = tmp_path / "out", tmp_path / "victim", io.BytesIO()
    out.mkdir()
    victim.write_bytes(b"keep")
    for rank in (1, 2):
        (out / str(rank)).symlink_to(victim)  # another user's links, in a shared directory
    shown = io.BytesIO()
    names = RankNames()
    fed(FileTee(GroupedSink(shown, io.BytesIO(), Style(False), names), names, str(out), "", said))
    assert victim.read_bytes() == b"keep"
    assert said.getvalue().decode().count("\n") == 1, said.getvalue()
    assert said.getvalue().decode().startswith(f"mpish: cannot write {out}/1: Too many levels of symbolic")
    assert b"one\n\xfftwo" in shown.getvalue()  # the output is still shown
    assert (out / "3").read_bytes() == b""


def test_names_that_are_not_plain_file_names_are_the_ranks_number() -> None:
    names = HostNames({1: "..", 2: "a/b", 3: "node3"}, {})
    assert [file_name(names, rank) for rank in (1, 2, 3)] == ["1", "2", "node3"]
    assert file_name(RankNames(), 4) == "4"


def test_a_directory_that_cannot_be_made_is_an_error_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    assert make_directories(str(tmp_path / "file" / "sub")) == (
        f"cannot make the directory {tmp_path}/file/sub: Not a directory")
    assert not os.path.exists(tmp_path / "file" / "sub")
    assert make_directories(str(tmp_path / "file")) == (  # helper-144: it said "File exists"
        f"{tmp_path}/file is not a directory: give a directory, or a path to make one")


def test_the_tee_keeps_the_streaming_flag_of_the_sink_it_wraps() -> None:
    """helper-145: the console drops what was in flight at a Ctrl-C from a streaming sink (-v, or
    grouped output past its limit); behind the tee it read False and showed it."""
    from mpish.shell.grouping import LiveSink

    names = RankNames()
    live = LiveSink(io.BytesIO(), io.BytesIO(), Style(False), names)
    assert live.streams
    assert FileTee(live, names, "out", "", io.BytesIO()).streams
    grouped = GroupedSink(io.BytesIO(), io.BytesIO(), Style(False), names)
    assert FileTee(grouped, names, "out", "", io.BytesIO()).streams == grouped.streams
