"""Grouped output past its gather limit gives way to labelled lines as they come (grouping.py)."""

from __future__ import annotations

import argparse
import io

import pytest

from mpish.shell import protocol as p
from mpish.shell.grouping import GroupedSink, Style, make_sink
from mpish.shell.names import Result
from mpish.shell.options import GATHER_LIMIT, OutputMode, add_output_options


def test_past_the_limit_what_was_gathered_and_what_follows_are_shown_as_labelled_lines_at_once() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), limit=20)
    sink.output(1, p.STDOUT, b"one\ntw")
    sink.output(2, p.STDOUT, b"alpha\n")
    sink.output(2, p.STDERR, b"oops\n")
    assert out.getvalue() == b"" and err.getvalue() == b""  # 15 bytes: still gathering
    sink.output(1, p.STDOUT, b"o\nthree\n")  # 23 bytes gathered: past the limit
    assert out.getvalue() == b"@1: one\n@1: two\n@1: three\n@2: alpha\n"
    notice, rest = err.getvalue().split(b"\n", 1)
    assert b"more than" in notice and b"--gather-limit" in notice and rest == b"@2: oops\n"
    sink.output(2, p.STDOUT, b"beta\n")  # later output is written as it comes, not gathered
    assert out.getvalue().endswith(b"@2: beta\n")
    sink.output(1, p.STDOUT, b"no newline")
    sink.done(Result(1, "h", 0))
    sink.done(Result(2, "h", 0))
    sink.finish()
    assert out.getvalue().endswith(b"@1: no newline\n")
    assert err.getvalue().count(b"more than") == 1  # said once


def test_a_rank_that_ended_before_the_limit_gets_its_unfinished_line_ended() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), limit=8)
    sink.output(1, p.STDOUT, b"last")
    sink.done(Result(1, "h", 0))
    sink.output(2, p.STDOUT, b"0123456789\n")
    sink.finish()
    assert out.getvalue() == b"@1: last\n@2: 0123456789\n"


def test_below_the_limit_grouped_output_is_unchanged() -> None:
    shown = []
    for limit in (0, 1 << 20):
        out, err = io.BytesIO(), io.BytesIO()
        sink = GroupedSink(out, err, Style(), limit=limit)
        for rank in (1, 2):
            sink.output(rank, p.STDOUT, b"same\n")
            sink.done(Result(rank, "h", 0))
        sink.finish()
        shown.append((out.getvalue(), err.getvalue()))
    assert shown[0] == shown[1]
    assert shown[0][0] == b"---------------\n@1-2 (2)\n---------------\nsame\n" and shown[0][1] == b""


def test_no_labels_and_merged_stderr_are_kept_past_the_limit() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), merge_stderr=True, labels=False, limit=4)
    sink.output(1, p.STDERR, b"err\n")
    sink.output(1, p.STDOUT, b"out\n")
    sink.finish()
    assert out.getvalue() == b"err\nout\n"


def test_gather_limit_option_sets_the_sinks_limit_in_mib_and_refuses_nonsense(
        capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_output_options(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", dest="verbose", action="store_true")
    assert OutputMode.from_args(parser.parse_args([])).gather_limit == GATHER_LIMIT == 64 << 20
    mode = OutputMode.from_args(parser.parse_args(["--gather-limit", "0.5"]))
    sink = make_sink(mode, 2, io.BytesIO(), io.BytesIO(), Style())
    assert isinstance(sink, GroupedSink) and sink.limit == 1 << 19
    assert OutputMode.from_args(parser.parse_args(["--gather-limit", "0"])).gather_limit == 0
    for bad in ("-1", "abc", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--gather-limit", bad])
    assert "is not a size in MiB" in capsys.readouterr().err


def test_ctrl_c_while_what_was_gathered_is_shown_stops_it_and_interrupts_like_the_key() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), limit=1 << 16)
    sink.stop = lambda: True  # the console's key: Ctrl-C was typed
    sink.output(1, p.STDOUT, b"y\n" * (1 << 15))  # 64 KiB: at the limit, still gathered
    with pytest.raises(KeyboardInterrupt):  # 128 KiB: two pieces of the display
        sink.output(1, p.STDOUT, b"y\n" * (1 << 15))
    assert out.getvalue().count(b"@1: y\n") == 1 << 15  # one piece shown, then it stopped
    assert b"stopped (Ctrl-C)" in err.getvalue()
    sink.output(2, p.STDOUT, b"later\n")  # what comes next is shown as it comes
    sink.finish()
    assert out.getvalue().endswith(b"@2: later\n")


def test_a_command_that_handled_the_interrupt_gets_a_status_line_even_when_quiet() -> None:
    from mpish.shell.names import HostNames
    from mpish.shell.outcome import HANDLED, status_lines

    handled = Result(1, "h", 0, interrupted=True)
    assert status_lines([handled], Style()) == [f"mpish: @1: {HANDLED}"]
    assert status_lines([handled], Style(), quiet=True) == [f"mpish: @1: {HANDLED}"]
    assert status_lines([Result(1, "h", 0)], Style()) == []  # not interrupted: nothing to say
    assert status_lines([Result(1, "h", 130, interrupted=True)], Style()) == ["mpish: @1: exit code 130"]
    assert status_lines([Result(1, "host1", 0, interrupted=True)], Style(), HostNames({1: "host1"}, {})) == [
        f"mpish: host1: {HANDLED}"]


def test_after_a_ctrl_c_at_a_terminal_only_the_tail_of_each_gathered_output_is_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """New user: Ctrl-C during a flood stopped the commands, then 37-49 s of what they had
    printed scrolled by. After an interrupt, at a terminal: the last 40 lines (at most 64 KiB)
    of each output, from a line's start, and one line saying how much was left out (a later new
    user: the last 64 KiB of `yes` were still 32,768 lines of y)."""
    from mpish.shell import grouping

    monkeypatch.setattr(grouping, "_at_terminal", lambda: True)
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style())
    lines = b"".join(b"line %07d\n" % k for k in range(200_000))  # 2.6 MB per rank
    for rank in (1, 2):
        sink.output(rank, p.STDOUT, lines)
        sink.done(Result(rank, "h", 130, interrupted=True))
    sink.finish()
    shown = out.getvalue()
    assert b"line 0199999\n" in shown and b"line 0199960\n" in shown and b"line 0199959" not in shown
    assert shown.split(b"\n")[3] == b"line 0199960"  # after the header: a whole line
    assert b"MiB of the gathered output left out; the last 40 lines (at most 64 KiB) of each output" in (
        err.getvalue())


def test_the_tail_after_a_ctrl_c_keeps_the_last_lines_of_a_short_output_of_many_lines() -> None:
    from mpish.shell.gathered import Gathered

    for data, lines, shown in ((b"y\n" * 1000, 3, b"y\ny\ny\n"), (b"a\nb\nc", 2, b"b\nc"),
                               (b"a\nb\n", 5, b"a\nb\n"), (b"no newline", 1, b"no newline")):
        spool = Gathered()
        spool.write(data)
        assert spool.keep_tail(1 << 16, lines) == len(data) - len(shown), data
        assert b"".join(spool.chunks()) == shown
        spool.close()


def test_without_an_interrupt_all_gathered_output_is_shown_at_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mpish.shell import grouping

    monkeypatch.setattr(grouping, "_at_terminal", lambda: True)
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style())
    lines = b"".join(b"line %07d\n" % k for k in range(200_000))
    sink.output(1, p.STDOUT, lines)
    sink.done(Result(1, "h", 0))
    sink.finish()
    assert lines in out.getvalue() and b"left out" not in err.getvalue()


def test_the_tail_shown_after_a_ctrl_c_starts_at_a_line_even_one_that_starts_on_the_boundary() -> None:
    from mpish.shell.gathered import Gathered

    cases = [
        (b"a" * 9 + b"\n" + b"0123456789", 10),  # size 20; a line starts exactly 10 from the end
        (b"abc\ndefghijklmnop", 7),  # no line start in the last 10: the last 10 bytes
        (b"xxxxxxxxxx\nyy\nzzzzz", 11),  # the first line start inside the tail
    ]
    for data, start in cases:
        spool = Gathered()
        spool.write(data)
        assert spool.keep_tail(10) == start == spool.start, data
        spool.close()


@pytest.mark.parametrize(("labels", "lines", "said"), [
    (True, False, b"each line labelled with its server, as -L;"),
    (False, False, b"unlabelled (-N);"),
    (True, True, b"no longer in server order, each line labelled with its server;"),
])
def test_the_notice_says_how_the_rest_is_shown_in_the_mode_asked(
    labels: bool, lines: bool, said: bytes
) -> None:
    """Under -N it promised labels (as -L) and showed none; under -L it said "as -L"."""
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), limit=4, labels=labels, lines=lines)
    sink.output(1, p.STDOUT, b"12345\n")
    assert said in err.getvalue(), err.getvalue()
    assert out.getvalue() == (b"@1: 12345\n" if labels else b"12345\n")


def test_the_limit_counts_distinct_output_so_identical_floods_stay_gathered() -> None:
    """40 hosts printing the same 20 MB (`cat` of one file everywhere) were 800 MB against the
    64 MiB limit: labelled lines where clush gathered one block (a clush user). Identical output
    is stored once (gathered.py) and the limit counts distinct bytes."""
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), limit=4 << 20)
    block = b"".join(b"the same line %06d\n" % k for k in range(50_000))  # 1 MiB
    for piece in range(0, len(block), 65_536):  # as it comes, interleaved between servers
        for rank in range(1, 41):
            sink.output(rank, p.STDOUT, block[piece : piece + 65_536])
    assert sink.live is None and b"more than" not in err.getvalue()
    assert sink.gathered == len(block)  # 40 MiB written, 1 MiB stored
    for rank in range(1, 41):
        sink.done(Result(rank, "h", 0))
    sink.finish()
    assert out.getvalue() == b"---------------\n@1-40 (40)\n---------------\n" + block
    distinct = GroupedSink(io.BytesIO(), err, Style(), limit=4 << 20)
    for rank in range(1, 6):  # five different megabytes: past 4 MiB of distinct output
        distinct.output(rank, p.STDOUT, block.replace(b"line", b"L%03d" % rank))
    assert distinct.live is not None
