"""--copy/--rcopy's loop over the files (console_put_get.copy_files), with the transfers
replaced: a Ctrl-C during one file ends the copy there, as cp and scp stop."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpish.shell import console_put_get
from mpish.shell.options import CopyRequest


class Pressed:
    interrupted = False


def test_a_ctrl_c_during_one_file_ends_the_copy_with_130_and_says_how_many_were_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [tmp_path / name for name in ("a", "b", "c")]
    for path in files:
        path.write_bytes(b"x")
    sent: list[str] = []
    pressed = Pressed()

    @contextlib.contextmanager
    def keys() -> Iterator[Pressed]:
        yield pressed

    def put(console: Any, targets: Any, line: str, keys_: Any, err: Any, into: bool = False) -> int:
        with keys_():
            sent.append(line)
            pressed.interrupted = len(sent) == 2  # Ctrl-C typed during the second file
        return 1

    monkeypatch.setattr(console_put_get, "put_builtin", put)
    err = io.StringIO()
    request = CopyRequest(tuple(map(str, files)), str(tmp_path / "dest"), False)
    assert console_put_get.copy_files(None, frozenset({1}), request, keys, err) == 130  # type: ignore[arg-type]
    assert sent == [f"-r -- {files[0]} {tmp_path}/dest/", f"-r -- {files[1]} {tmp_path}/dest/"]
    assert err.getvalue() == "mpish: interrupted: 1 more file(s) not copied\n"


def test_fanout_sends_and_gets_each_file_to_at_most_that_many_targets_at_once_in_rank_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # clush's -f holds for its copies too: a 1 GiB file to 128 hosts went to all at once
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls: list[tuple[str, list[int]]] = []

    @contextlib.contextmanager
    def keys() -> Iterator[Pressed]:
        yield Pressed()

    def put(console: Any, targets: Any, line: str, keys_: Any, err: Any, into: bool = False) -> int:
        calls.append(("put", sorted(targets)))
        return 0

    def get(console: Any, targets: Any, line: str, keys_: Any, err: Any, suffixed: bool = False) -> int:
        calls.append(("get", sorted(targets)))
        return 1 if 5 in targets else 0

    monkeypatch.setattr(console_put_get, "put_builtin", put)
    monkeypatch.setattr(console_put_get, "get_builtin", get)
    targets = frozenset({5, 1, 4, 2, 3})
    put_request = CopyRequest((str(source),), str(tmp_path), False)
    get_request = CopyRequest((str(source),), str(tmp_path), True)
    err = io.StringIO()
    assert console_put_get.copy_files(None, targets, put_request, keys, err, fanout=2) == 0  # type: ignore[arg-type]
    assert console_put_get.copy_files(None, targets, get_request, keys, err, fanout=2) == 1  # type: ignore[arg-type]
    assert console_put_get.copy_files(None, targets, put_request, keys, err) == 0  # type: ignore[arg-type]
    assert calls == [("put", [1, 2]), ("put", [3, 4]), ("put", [5]),
                     ("get", [1, 2]), ("get", [3, 4]), ("get", [5]),
                     ("put", [1, 2, 3, 4, 5])]  # without -f: all at once
