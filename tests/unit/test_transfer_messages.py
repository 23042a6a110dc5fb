"""What a receiving console says of a copy it could not write shows the path escaped, as its
other messages do (a name holding terminal controls: a second-uid review found them raw)."""

from __future__ import annotations

from pathlib import Path

from mpish.shell.console_transfer import FileCopy


def test_a_copy_into_a_missing_directory_names_its_path_escaped(tmp_path: Path) -> None:
    copy = FileCopy(tmp_path / "no\x1b[2Jsuch" / "f")
    copy.write(b"data")
    missing = f"cannot write into {tmp_path}/no\\x1b[2Jsuch: no such directory (make it first)"
    assert copy.error == missing, copy.error
