"""``--diff`` and gathering of outputs that differ only by a missing final newline (grouping.py)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from mpish.shell import protocol as p
from mpish.shell.grouping import GroupedSink, Style
from mpish.shell.names import Result


def _diff(outputs: dict[int, bytes]) -> bytes:
    out = io.BytesIO()
    sink = GroupedSink(out, io.BytesIO(), Style(), diff=True)
    for rank, data in outputs.items():
        sink.output(rank, p.STDOUT, data)
    for rank in outputs:
        sink.done(Result(rank, "h", 0))
    sink.finish()
    return out.getvalue()


@pytest.mark.parametrize(("first", "second"), [
    (b"x\ny\nz", b"x\nY\nz\n"),  # the user trial's: the first lacks its final newline
    (b"abc", b"abc\n"),
    (b"abc\n", b"q\nabc"),
    (b"q\nabc", b"abc"),  # alike last lines without a newline: context, marked
    (b"a\n", b""),  # a rank that printed nothing
])
def test_diff_is_what_gnu_diff_u_prints_and_patch_applies_it(
    tmp_path: Path, first: bytes, second: bytes,
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_bytes(first)
    new.write_bytes(second)
    gnu = subprocess.run(["diff", "-u", "old", "new"], cwd=tmp_path, capture_output=True, check=False).stdout
    shown = _diff({1: first, 2: second})
    assert shown.split(b"\n", 2)[:2] == [b"--- @1", b"+++ @2"]
    assert shown.split(b"\n", 2)[2] == gnu.split(b"\n", 2)[2]  # the hunks, byte for byte
    (tmp_path / "fix.patch").write_bytes(shown)
    subprocess.run(["patch", "-s", "old", "fix.patch"], cwd=tmp_path, check=True)
    assert old.read_bytes() == second


def _gathered(outputs: dict[int, bytes], stream: int = p.STDOUT, **how: bool) -> tuple[str, str]:
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), **how)
    for rank, data in outputs.items():
        sink.output(rank, stream, data)
    for rank in outputs:
        sink.done(Result(rank, "h", 0))
    sink.finish()
    return out.getvalue().decode(), err.getvalue().decode()


def test_outputs_differing_only_by_a_missing_final_newline_are_gathered_as_one_block() -> None:
    """``printf x`` on @1, ``echo x`` on @2: two blocks both showing ``x`` (the user trial); clush -b
    shows one, and so does -bL, and stderr's labelled lines."""
    line = "-" * 15
    assert _gathered({1: b"x", 2: b"x\n"}) == (f"{line}\n@1-2 (2)\n{line}\nx\n", "")
    assert _gathered({1: b"a\nx", 2: b"a\nx\n"}, prefixed=True) == ("@1-2: a\n@1-2: x\n", "")
    assert _gathered({1: b"oops", 2: b"oops\n"}, p.STDERR) == ("", "@1-2: oops\n")
    assert _gathered({1: b"x", 2: b"x\n", 3: b"x\n\n"})[0].count(line) == 4  # an empty line is a line


def test_where_bytes_are_shown_as_they_are_a_missing_final_newline_still_tells_outputs_apart() -> None:
    assert _gathered({1: b"x", 2: b"x\n"}, lines=True)[0] == "@1: x\n@2: x\n"  # -L: each server's lines
    assert "\\ No newline at end of file" in _diff({1: b"x", 2: b"x\n"}).decode()  # --diff shows it
