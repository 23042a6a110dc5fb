"""--copy/--rcopy's loop over the files and -f batches of connected targets
(copying.copy_files), with the transfers replaced: a Ctrl-C ends the copy there, as cp and
scp stop; each file gets one report for all its batches, naming it."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from mpish.shell import copying
from mpish.shell.console_put_get import Tally
from mpish.shell.options import CopyRequest

STOPPED = "the transfer was stopped on the console's side (interrupted); nothing was written"  # the server's


class Pressed:
    interrupted = False


class Console:
    """What the copy asks of the console: a name for a set of targets, and its session (no
    host to connect in a later batch: over MPI, or ssh within -f)."""

    session = SimpleNamespace(later={})
    peers: ClassVar[dict[int, Any]] = {}  # none still greeting (ssh's copies: test_ssh_fanout.py)

    @staticmethod
    def describe(ranks: Iterable[int]) -> str:
        return "@" + ",".join(str(rank) for rank in sorted(ranks))


def keys_of(pressed: Pressed) -> Any:
    @contextlib.contextmanager
    def keys() -> Iterator[Pressed]:
        yield pressed
    return keys


def batch_put(verdicts: Callable[[frozenset[int]], dict[int, str]],
              calls: list[tuple[str, list[int]]] | None = None) -> Any:
    """A stand-in for put_builtin: each batch's verdicts (or its KeyboardInterrupt) go to the tally."""
    def put(console: Any, targets: frozenset[int], line: str, keys_: Any, err: Any, into: bool = False,
            tally: Tally | None = None) -> int:
        if calls is not None:
            calls.append(("put", sorted(targets)))
        assert tally is not None
        tally.verdicts.update(verdicts(targets))  # as the transfer's answers come
        return tally.add(targets, 1, 0.1, "", "checked")
    return put


def test_a_ctrl_c_during_one_file_ends_the_copy_with_130_and_says_how_many_were_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [tmp_path / name for name in ("a", "b", "c")]
    for path in files:
        path.write_bytes(b"x")
    sent: list[str] = []
    pressed = Pressed()

    def put(console: Any, targets: Any, line: str, keys_: Any, err: Any, into: bool = False,
            tally: Tally | None = None) -> int:
        with keys_():
            sent.append(line)
            pressed.interrupted = len(sent) == 2  # Ctrl-C typed during the second file
        assert tally is not None
        verdict = STOPPED if pressed.interrupted else ""
        tally.verdicts[1] = verdict
        return tally.add([1], 1, 0.1, "", "checked")

    monkeypatch.setattr(copying, "put_builtin", put)
    err = io.StringIO()
    request = CopyRequest(tuple(map(str, files)), str(tmp_path / "dest"), False)
    assert copying.copy_files(Console(), frozenset({1}), request, keys_of(pressed), err) == 130  # type: ignore[arg-type]
    assert sent == [f"-r -- {files[0]} {tmp_path}/dest/", f"-r -- {files[1]} {tmp_path}/dest/"]
    assert f"mpish: put {files[0]} to @1: ok, checked" in capsys.readouterr().out
    assert err.getvalue() == (f"mpish: put {files[1]} to @1: {STOPPED}\n"
                              f"mpish: interrupted: {files[2]} was not sent to @1\n")


def test_fanout_sends_and_gets_each_file_to_at_most_that_many_targets_at_once_and_reports_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # clush's -f holds for its copies too: a 1 GiB file to 128 hosts went to all at once; the
    # batches' reports were one line each, naming no file (a reviewer: 100 lines per file at -f 1)
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls: list[tuple[str, list[int]]] = []

    def get(console: Any, targets: Any, line: str, keys_: Any, err: Any, suffixed: bool = False,
            tally: Tally | None = None) -> int:
        calls.append(("get", sorted(targets)))
        assert tally is not None
        tally.paths.update({rank: Path(f"{source}.{rank}") for rank in targets})
        tally.verdicts.update({rank: "no such file" if rank == 5 else "" for rank in targets})
        return tally.add(targets, 0, 0.1, "", "checked")

    all_ok = batch_put(lambda batch: dict.fromkeys(batch, ""), calls)
    monkeypatch.setattr(copying, "put_builtin", all_ok)
    monkeypatch.setattr(copying, "get_builtin", get)
    targets = frozenset({5, 1, 4, 2, 3})
    keys = keys_of(Pressed())
    put_request = CopyRequest((str(source),), str(tmp_path), False)
    get_request = CopyRequest((str(source),), str(tmp_path), True)
    err = io.StringIO()
    assert copying.copy_files(Console(), targets, put_request, keys, err, fanout=2) == 0  # type: ignore[arg-type]
    assert copying.copy_files(Console(), targets, get_request, keys, err, fanout=2) == 1  # type: ignore[arg-type]
    assert copying.copy_files(Console(), targets, put_request, keys, err) == 0  # type: ignore[arg-type]
    assert calls == [("put", [1, 2]), ("put", [3, 4]), ("put", [5]),
                     ("get", [1, 2]), ("get", [3, 4]), ("get", [5]),
                     ("put", [1, 2, 3, 4, 5])]  # without -f: all at once
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"mpish: put {source} to @1,2,3,4,5: ok, checked (")
    assert out[1].startswith(f"mpish: get {source} from @1,2,3,4: ok, checked (")
    assert out[2:6] == [f"  {source}.{rank}" for rank in (1, 2, 3, 4)]
    assert out[6].startswith(f"mpish: put {source} to @1,2,3,4,5: ok")
    assert len(out) == 7
    assert err.getvalue() == f"mpish: get {source} from @5: no such file\n"


def test_a_ctrl_c_while_a_batch_awaits_its_answers_says_what_may_and_what_did_not_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the Ctrl-C escaped as a bare "mpish: interrupted" (the file had in fact arrived)
    source = tmp_path / "f"
    source.write_bytes(b"x")

    def verdicts(batch: frozenset[int]) -> dict[int, str]:
        if 3 in batch:
            raise KeyboardInterrupt  # as console.wait raises it for a Ctrl-C key
        return dict.fromkeys(batch, "")

    monkeypatch.setattr(copying, "put_builtin", batch_put(verdicts))
    err = io.StringIO()
    request = CopyRequest((str(source), str(source)), str(tmp_path), False)
    status = copying.copy_files(Console(), frozenset(range(1, 7)), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                        err, fanout=2)
    assert status == 130
    out = capsys.readouterr().out.splitlines()  # batch after batch, each file to a batch before the next
    assert [line.split(": ok")[0] for line in out] == [f"mpish: put {source} to @1,2"] * 2
    assert err.getvalue() == (
        f"mpish: put {source} to @3,4: interrupted before its answer came (the copy may be complete)\n"
        f"mpish: interrupted: {source} was not sent to @5,6\n"
        f"mpish: interrupted: {source} was not sent to @3,4,5,6\n")


def test_a_host_lost_between_batches_is_reported_lost_and_the_copy_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a rank lost during an earlier batch was left out of its own (the transfer only takes the
    # idle ones): no verdict, so "put f to @1-3: ok" and status 0 (a reviewer)
    source = tmp_path / "f"
    source.write_bytes(b"x")

    gone = batch_put(lambda batch: {rank: "" for rank in batch if rank != 4})  # 4: no verdict, gone
    monkeypatch.setattr(copying, "put_builtin", gone)
    err = io.StringIO()
    request = CopyRequest((str(source),), str(tmp_path), False)
    status = copying.copy_files(Console(), frozenset(range(1, 5)), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                        err, fanout=2)
    assert status == 1
    assert capsys.readouterr().out.startswith(f"mpish: put {source} to @1,2,3: ok")
    assert err.getvalue() == f"mpish: put {source} to @4: rank lost\n"


def test_a_copy_the_timeout_cut_exits_255_as_a_command_that_timed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # helper-141: -u on a copy exited 1, on a command 255 (clush -S: 255 after a "command timeout")
    source = tmp_path / "f"
    source.write_bytes(b"x")
    cut = f"timed out after 1 s: {STOPPED}"
    monkeypatch.setattr(copying, "put_builtin", batch_put(lambda batch: {rank: cut if rank == 2 else ""
                                                                         for rank in batch}))
    err = io.StringIO()
    request = CopyRequest((str(source),), str(tmp_path), False)
    status = copying.copy_files(Console(), frozenset(range(1, 4)), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                err, fanout=2)
    assert status == 255
    assert err.getvalue() == f"mpish: put {source} to @2: {cut}\n"
    assert capsys.readouterr().out.startswith(f"mpish: put {source} to @1,3: ok")


@pytest.mark.parametrize("kind", ["fifo", "dangling link"])
def test_a_source_that_is_no_file_nor_directory_is_refused_before_any_transfer_and_no_rank_is_called_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """`--copy fifo` (or a link to nothing) said ':put copies regular files...', then 'put fifo
    to @1-2: rank lost' though no rank was lost, twice over ssh (a clush user's review)."""
    source = tmp_path / "src"
    if kind == "fifo":
        os.mkfifo(source)
    else:
        source.symlink_to(tmp_path / "nothing")
    (tmp_path / "dest").mkdir()
    calls: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(copying, "put_builtin", batch_put(lambda batch: {}, calls))
    err = io.StringIO()
    request = CopyRequest((str(source),), str(tmp_path / "dest"), False)
    status = copying.copy_files(Console(), frozenset({1, 2}), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                err, fanout=1)
    assert status == 2 and calls == []  # a usage error, as a missing source
    said = err.getvalue()
    assert said.count("\n") == 1 and "--copy:" in said and "lost" not in said and ":put" not in said, said
    reason = "not a regular file or a directory" if kind == "fifo" else "a symbolic link to nothing"
    assert reason in said, said


def test_a_missing_source_among_others_is_a_usage_error_and_nothing_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--copy tree run.sh` without run.sh said so in a line, copied tree all the same and
    exited 1 (a clush user's trial: clush checks every source first). Now nothing is copied:
    one line naming the missing source, status 2."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_bytes(b"x")
    calls: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(copying, "put_builtin", batch_put(lambda batch: dict.fromkeys(batch, ""), calls))
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    request = CopyRequest(("tree", "run.sh"), str(tmp_path / "dest"), False)
    status = copying.copy_files(Console(), frozenset({1, 2}), request, keys_of(Pressed()), err)  # type: ignore[arg-type]
    assert (status, calls, capsys.readouterr().out) == (2, [], "")
    assert err.getvalue() == ("mpish: --copy: no file or directory 'run.sh' on this machine "
                              f"(in {tmp_path}); nothing was copied\n")


def test_a_source_refused_by_the_transfer_itself_is_said_once_and_its_targets_are_not_called_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source changed between the check and the transfer (put_builtin's ValueError): one
    line for it, whatever the number of batches, and its targets 'not copied', not 'rank lost'."""
    source = tmp_path / "f"
    source.write_bytes(b"x")

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise ValueError("'f' is not a regular file")
    monkeypatch.setattr(copying, "put_builtin", refuse)
    err = io.StringIO()
    request = CopyRequest((str(source),), str(tmp_path), False)
    status = copying.copy_files(Console(), frozenset(range(1, 5)), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                err, fanout=2)
    assert status == 1
    lines = err.getvalue().splitlines()
    assert lines.count("mpish: 'f' is not a regular file") == 1, lines
    assert not any("lost" in line for line in lines) and copying.NOT_SENT in lines[-1], lines


def test_a_source_named_with_a_newline_is_shown_escaped_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--copy 'new<NL>line'` printed 'put src/new' and 'line to ...: ok' on two lines, which a
    script reading the outcome cannot parse (a clush user's review); shown as `ls -b` would."""
    source = tmp_path / "new\nline"
    source.write_bytes(b"x")
    monkeypatch.setattr(copying, "put_builtin", batch_put(lambda batch: {rank: "" for rank in batch}))
    request = CopyRequest((str(source),), str(tmp_path), False)
    status = copying.copy_files(Console(), frozenset({1, 2}), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                io.StringIO())
    shown = capsys.readouterr().out
    assert status == 0 and shown.count("\n") == 1, shown
    assert shown.startswith(f"mpish: put {tmp_path}/new\\x0aline to @1,2: ok"), shown


def test_the_local_copies_of_an_rcopy_are_listed_in_host_order_whatever_turn_ended_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """With -f, the turns of --rcopy end in any order, and their copies were listed in that
    order (sub.host2 before sub.host1, against the README's node-set order: a clush user)."""
    class Named:
        def describe(self, ranks: list[int]) -> str:
            return ",".join(f"host{rank}" for rank in sorted(ranks))

    tally = Tally(tree=True)
    for rank in (3, 1, 2):  # the order the turns ended in
        (tmp_path / f"sub.host{rank}").mkdir()
        tally.paths[rank] = tmp_path / f"sub.host{rank}"
        tally.verdicts[rank] = ""
        tally.add([rank], 0, 0.1, "", "SHA-256 verified")
    assert tally.report(Named(), "rcopy", io.StringIO()) == 0  # type: ignore[arg-type]
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert listed == [f"  {tmp_path}/sub.host{rank}/" for rank in (1, 2, 3)], listed


class Connected(Console):
    """Enough of a console for the real put_builtin and get_builtin (their transfers replaced)."""

    @staticmethod
    def idle(ranks: Iterable[int]) -> list[int]:
        return sorted(ranks)

    @staticmethod
    def file_suffix(rank: int) -> str:
        return f"host{rank}"


@pytest.mark.parametrize("reverse", [False, True], ids=["copy", "rcopy"])
def test_a_ctrl_c_just_after_every_answer_came_keeps_them_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], reverse: bool
) -> None:
    """A SIGINT that lands after the transfer's last answer (here: as its progress bar ends)
    made every copy of the turn "interrupted before its answer came", the answers being still
    the transfer's own: CI saw it for an --rcopy interrupted once its copies were in place. The
    answers go to the tally as they come."""
    source, into = tmp_path / "data", tmp_path / "into"
    source.write_bytes(b"x")
    into.mkdir()

    def answered(targets: Iterable[int], verdicts: dict[int, str] | None) -> dict[int, str]:
        verdicts = {} if verdicts is None else verdicts
        verdicts.update(dict.fromkeys(targets, ""))
        return verdicts

    def get(console: Any, remote: str, local: str, targets: Iterable[int], progress: Any,
            verdicts: dict[int, str] | None = None, **_: Any) -> dict[int, str]:
        return answered(targets, verdicts)

    def put(console: Any, local: str, remote: str, targets: Iterable[int], progress: Any,
            verdicts: dict[int, str] | None = None, **_: Any) -> Any:
        return SimpleNamespace(bytes=1, files=1, verdicts=answered(targets, verdicts))

    def ended(progress: Any) -> None:
        raise KeyboardInterrupt  # the SIGINT's handler runs here

    from mpish.shell import console_put_get
    monkeypatch.setattr(console_put_get.transfer, "get", get)
    monkeypatch.setattr(console_put_get.transfer, "put", put)
    monkeypatch.setattr(console_put_get.Progress, "end", ended)
    err = io.StringIO()
    request = CopyRequest((str(source),), str(into), reverse)
    status = copying.copy_files(Connected(), frozenset({1, 2}), request, keys_of(Pressed()),  # type: ignore[arg-type]
                                err)
    what = f"get {source} from" if reverse else f"put {source} to"
    assert status == 130 and f"mpish: {what} @1,2: ok" in capsys.readouterr().out, err.getvalue()
    assert "interrupted before its answer came" not in err.getvalue()


@pytest.mark.parametrize("reverse", [False, True], ids=["copy", "rcopy"])
def test_two_sources_of_one_name_are_refused_before_any_copy(tmp_path: Path, reverse: bool) -> None:
    # helper-144: --rcopy /a/same /b/same wrote same.host1 twice and exited 0
    from mpish.shell.options import refused_sources

    for where in ("a", "b"):
        (tmp_path / where).mkdir()
        (tmp_path / where / "same").write_bytes(where.encode())
    request = CopyRequest((f"{tmp_path}/a/same", f"{tmp_path}/b/./same"), str(tmp_path), reverse)
    suffix = ".<host or rank>" if reverse else ""
    assert refused_sources(request) == [
        f"--{'rcopy' if reverse else 'copy'}: '{tmp_path}/a/same' and '{tmp_path}/b/./same' would both be "
        f"written as {tmp_path}/same{suffix} (copy them in two runs, with another --dest); nothing was "
        "copied"]
    # without --dest each goes to its own source's directory: no clash (helper-145)
    assert refused_sources(CopyRequest((f"{tmp_path}/a/same", f"{tmp_path}/b/same"), "", reverse)) == []
