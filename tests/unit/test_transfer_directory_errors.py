"""A copy that cannot be written because of its directory (read-only, full, not writable)
says so of the directory: the ``NAME.<host>`` copies of one :get then fail in the same words,
folded into one line for all hosts (transfer.cannot_write)."""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from mpish.shell import protocol as p
from mpish.shell.console_put_get import report
from mpish.shell.console_transfer import FileCopy, TreeCopy


class Named:
    """The console's names for its targets: host1, host2... folded as a node set."""

    @staticmethod
    def describe(ranks: Iterable[int]) -> str:
        ranks = sorted(ranks)
        return f"host[{ranks[0]}-{ranks[-1]}]" if len(ranks) > 1 else f"host{ranks[0]}"


def read_only(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


@pytest.mark.parametrize("tree", [False, True], ids=[":get", ":get -r"])
def test_gets_from_many_hosts_into_a_read_only_directory_fail_in_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tree: bool
) -> None:
    """`:lcd /tmp/ro` then `:get "x y.txt"` from node[1-3] said "cannot write x y.txt.node1:
    Read-only file system", and the same for node2 and node3: not folded, each copy's name
    being its own (a clush user's trial). Now one line names the directory."""
    monkeypatch.chdir(tmp_path)
    if tree:
        monkeypatch.setattr(os, "mkdir", read_only)  # the tree's root, NAME.<host>, cannot be made
    else:
        monkeypatch.setattr(tempfile, "mkstemp", read_only)  # nor a part file beside the copy
    verdicts = {}
    for rank in (1, 2, 3):
        if tree:
            copy = TreeCopy(Path(f"x y.host{rank}"))
            copy.writer.entry(p.Entry(7, "", "dir", 0o755, 0, ""))
            verdicts[rank] = copy.finish(p.GetEnd(7, 0, b"", "", 0))
        else:
            file = FileCopy(Path(f"x y.txt.host{rank}"), verify=False)
            file.write(b"data")
            verdicts[rank] = file.finish(p.GetEnd(7, 4, b"", "", 0o644))
    assert set(verdicts.values()) == {f"cannot write into {tmp_path}: Read-only file system"}, verdicts
    err = io.StringIO()
    assert report(Named(), "get", verdicts, 0, 0.1, err) == 1  # type: ignore[arg-type]
    assert err.getvalue() == f"mpish: get host[1-3]: cannot write into {tmp_path}: Read-only file system\n"
    assert capsys.readouterr().out == ""


def test_a_copy_into_a_directory_that_does_not_exist_says_so_of_the_directory(tmp_path: Path) -> None:
    """`--copy data.bin --dest /no/such/dir` said "cannot write /no/such/dir/data.bin: No such
    file or directory" (helper-138); the directory is what is missing."""
    from mpish.shell.transfer import cannot_write

    missing = tmp_path / "nodir"
    why = cannot_write(missing / "data.bin", FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
    assert why == f"cannot write into {missing}: no such directory (make it first)"
    here = cannot_write(tmp_path / "gone", FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))
    assert here == f"cannot write {tmp_path / 'gone'}: No such file or directory"  # its directory is there
