"""Pure parts of the shell: rank sets, targets, grouping, status lines, protocol codec."""

from __future__ import annotations

import io
import json
import re

import pytest

from mpish.shell import protocol as p
from mpish.shell.grouping import GroupedSink, LiveSink, Style, status_lines
from mpish.shell.jsonsink import JsonSink
from mpish.shell.names import Result
from mpish.shell.ranks import TargetError, describe, format_ranks, parse_ranks, resolve_targets
from mpish.shell.server.bash import initial_state
from mpish.wire.errors import RemoteProtocolError


@pytest.mark.parametrize(
    ("text", "ranks"),
    [("1", {1}), ("1-3,7", {1, 2, 3, 7}), ("7,1-3", {1, 2, 3, 7}), ("2-2", {2}), ("1,1", {1}),
     ("1-9/2", {1, 3, 5, 7, 9})],  # ClusterShell's range sets: steps too
)
def test_parse_ranks(text: str, ranks: set[int]) -> None:
    assert parse_ranks(text) == ranks


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "empty item"), ("a", "bad rank range 'a'"), ("1-", "bad rank range"), ("-1", "bad rank range"),
     ("3-1", "1 < 3"), ("1,,2", "empty item"), ("1-2-3", "bad rank range"), ("1_2", "bad rank range"),
     ("\u0661", "bad rank range"), ("1-5/0", "bad rank set"), ("0-99999999", "more than 100000 ranks")],
)
def test_parse_ranks_rejects_and_says_why(text: str, why: str) -> None:
    with pytest.raises(TargetError, match=why):
        parse_ranks(text)


@pytest.mark.parametrize("ranks", [set(), {1}, {1, 2, 3, 7}, {1, 3, 5}, {4, 5, 6, 10, 11}])
def test_format_round_trips(ranks: set[int]) -> None:
    text = format_ranks(ranks)
    assert (parse_ranks(text) if text else set()) == ranks


def test_resolve_targets_reads_ranks_and_hosts_and_an_unknown_one_names_the_servers() -> None:
    hosts = {1: "n1", 2: "n1", 3: "n2.cluster"}
    assert resolve_targets("@all", hosts) == {1, 2, 3}
    assert resolve_targets("@1,3", hosts) == {1, 3}
    assert resolve_targets("n1", hosts) == {1, 2}
    assert resolve_targets("@n2", hosts) == {3}  # short host name
    assert resolve_targets("@1+n2", hosts) == {1, 3}
    with pytest.raises(TargetError, match=re.escape("no shell server on rank(s) 4 (the servers are @1-3; "
                                                     ":targets lists them)")):
        resolve_targets("@4", hosts)
    with pytest.raises(TargetError, match=re.escape("no shell server on host 'n9' (the servers' hosts: "
                                                     "n1,n2.cluster)")):
        resolve_targets("n9", hosts)
    assert describe({1, 2, 3}, hosts) == "@all" and describe({1, 2}, hosts) == "@1-2"


def test_a_target_naming_a_lost_server_says_it_was_lost_by_rank_or_host() -> None:
    """`:attach @2` and `@host2 cmd` on a lost server said "no shell server" or "no group"."""
    hosts, lost = {1: "n1", 3: "n3"}, {2: "n2.cluster"}
    for spec, said in (("@2", "rank 2 was lost"), ("n2", "n2 was lost"), ("@n2", "n2 was lost"),
                       ("@n2.cluster", "n2.cluster was lost"), ("@9", "no shell server on rank(s) 9"),
                       ("@n9", "@n9 is no group")):
        with pytest.raises(TargetError, match=re.escape(said)):
            resolve_targets(spec, hosts, lost)
    assert resolve_targets("@1+n3", hosts, lost) == {1, 3}
    with pytest.raises(TargetError, match=re.escape("-x n2: no shell server on host 'n2'")):
        resolve_targets("n2", hosts, lost, excluding=True)  # -x of no server: refused, not ignored


def test_an_exclusion_that_names_no_server_runs_nothing_and_one_that_names_some_leaves_them_out() -> None:
    """A new user: ``mpish -n 2 -x vn`` (the host is vm), ``-x @9`` and ``-x 9`` ran on every rank,
    as clush ignores them; a misspelt exclusion must not run where it was meant not to."""
    hosts = {1: "vm", 2: "vm", 3: "vm"}
    for spec, said in (("vn", "-x vn: no shell server on host 'vn' (the servers' hosts: vm)"),
                       ("@9", "-x @9: no shell server on rank(s) 9 (the servers are @1-3)"),
                       ("9", "-x @9: no shell server on rank(s) 9"), ("@typo", "@typo is no group")):
        with pytest.raises(TargetError, match=re.escape(said)):
            resolve_targets(spec, hosts, excluding=True)
    assert resolve_targets("@2-9", hosts, excluding=True) == {2, 3}  # some of them are servers
    assert resolve_targets("vm", hosts, excluding=True) == {1, 2, 3}


def test_a_target_naming_a_host_never_reached_says_so_not_that_its_server_is_gone() -> None:
    """mpish ssh keeps hosts down at the start as lost placeholders; `@host3 ls` on one said
    "host3 was lost (its server is gone)", as if a server had run there."""
    hosts, lost = {1: "n1"}, {2: "n2", 3: "n3"}
    for spec, said in (("@3", "rank 3 was not reached at the start (:reconnect tries again)"),
                       ("n3", "n3 was not reached at the start"), ("n2", "n2 was lost (its server is gone)"),
                       ("@2-3", "rank 2-3 was lost")):
        with pytest.raises(TargetError, match=re.escape(said)):
            resolve_targets(spec, hosts, lost, unreached={3})


def test_grouped_sink_shows_identical_outputs_once() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style())
    for rank in (1, 2, 4):
        sink.output(rank, p.STDOUT, b"same\n")
    sink.output(3, p.STDOUT, b"diff")
    sink.output(3, p.STDOUT, b"erent\n")
    sink.output(4, p.STDERR, b"warn\n")
    for rank in (1, 2, 3, 4):
        sink.done(Result(rank, "h", 0))
    sink.finish()
    text = out.getvalue().decode()
    assert text.count("same") == 1  # stdout is gathered apart from stderr, as clush -b does
    assert "@1-2,4 (3)" in text and "@3 (1)" in text
    assert "different\n" in text
    assert err.getvalue() == b"@4: warn\n"  # stderr labelled with its ranks


def test_bL_gathers_line_by_line_as_clush_bL_largest_group_first() -> None:
    """clush -bL (its LiveGatherOutputHandler): the Nth lines of all servers gathered, alike
    ones under one prefix, the largest group first; grouping whole outputs printed every line
    of outputs that differ anywhere per server (a clush user's review)."""
    out, err = io.BytesIO(), io.BytesIO()
    sink = GroupedSink(out, err, Style(), prefixed=True)
    for rank in (1, 2, 3):
        sink.output(rank, p.STDOUT, b"a\n%d\nz" % rank + (b"\nextra\n" if rank == 2 else b"\n"))
    sink.output(4, p.STDOUT, b"b\n")
    for rank in (1, 2, 3, 4):
        sink.done(Result(rank, "h", 0))
    sink.finish()
    assert out.getvalue().decode() == "@1-3: a\n@4: b\n@1: 1\n@2: 2\n@3: 3\n@1-3: z\n@2: extra\n"


def test_grouped_sink_spools_large_output_to_disk() -> None:
    out = io.BytesIO()
    sink = GroupedSink(out, io.BytesIO(), Style())
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB per rank: beyond the in-memory spool
        sink.output(1, p.STDOUT, chunk)
        sink.output(2, p.STDOUT, chunk)
    sink.finish()
    assert out.getvalue().count(b"x") == 4 << 20
    assert b"@1-2 (2)" in out.getvalue()


def test_live_sink_prefixes_whole_lines() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    sink = LiveSink(out, err, Style())
    sink.output(1, p.STDOUT, b"a\nb")
    sink.output(2, p.STDOUT, b"c\n")
    sink.output(1, p.STDOUT, b"c\n")
    sink.output(1, p.STDERR, b"tail")
    sink.done(Result(1, "h", 0))
    assert out.getvalue() == b"@1: a\n@2: c\n@1: bc\n"  # labelled as -L labels lines
    assert err.getvalue() == b"@1: tail\n"


def test_a_carriage_return_in_a_labelled_line_cannot_overwrite_its_label() -> None:
    """Security review (LOW): rank 1's `printf '\r@2: I am rank 2'` under -L overwrote its own
    label with another's on the terminal; after a \r the label is written again."""
    out, err = io.BytesIO(), io.BytesIO()
    sink = LiveSink(out, err, Style())
    sink.output(1, p.STDOUT, b"10%\r20%\r@2: I am rank 2\nwindows\r\n")
    assert out.getvalue() == b"@1: 10%\r@1: 20%\r@1: @2: I am rank 2\n@1: windows\r\n"


def test_a_carriage_return_in_a_groups_labelled_lines_cannot_overwrite_the_host_name(
    capfdbinary: pytest.CaptureFixture[bytes],
) -> None:
    from mpish.calls.group import LabelledLines

    lines = LabelledLines("host1")
    lines("stdout", b"\rhost2: all good\n")
    assert capfdbinary.readouterr().out == b"host1: \rhost1: host2: all good\n"


class _CountingWriter(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: object) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)  # type: ignore[arg-type]


def test_line_mode_writes_a_chunk_of_lines_at_once_not_a_line_at_a_time() -> None:
    """-L and the output past --gather-limit: a system call per line ran short lines at
    0.4 MB/s (new user, 115 MB of seq); the chunk's lines now go out in one write."""
    out, err = _CountingWriter(), io.BytesIO()
    sink = LiveSink(out, err, Style())
    sink.output(1, p.STDOUT, b"".join(b"%d\n" % k for k in range(1000)) + b"tail")
    assert out.writes == 1
    assert out.getvalue().splitlines()[:2] == [b"@1: 0", b"@1: 1"] and out.getvalue().count(b"@1: ") == 1000
    sink.output(1, p.STDOUT, b"\x1b[8mhidden\nshown\n")  # the reset after an escape still applies
    assert out.getvalue().endswith(b"@1: tail\x1b[8mhidden\n@1: shown\n")


def test_status_lines_come_in_rank_order_whatever_order_the_servers_ended_in() -> None:
    """Over MPI the results come as the servers end (@3, @2, @1); over ssh in host order."""
    ended = [Result(3, "h", 3), Result(2, "h", 2), Result(1, "h", 1), Result(4, "h", 2)]
    assert status_lines(ended, Style()) == [
        "mpish: @1: exit code 1", "mpish: @2,4: exit code 2", "mpish: @3: exit code 3"]


def test_json_sink_fields() -> None:
    out = io.BytesIO()
    sink = JsonSink(out)
    sink.output(2, p.STDOUT, b"\xffok")
    sink.done(Result(2, "node", 130, 2, 1.5))
    sink.finish()
    record = json.loads(out.getvalue())
    assert record == {"rank": 2, "host": "node", "exit": 130, "signal": 2, "stdout": "\ufffdok",
                      "stderr": "", "seconds": 1.5, "timed_out": False}


def test_status_lines_group_by_outcome_and_colour_only_when_asked() -> None:
    results = [Result(1, "h", 0), Result(2, "h", 1), Result(3, "h", 1), Result(4, "h", 130, 2)]
    lines = status_lines(results, Style())
    assert lines == ["mpish: @2-3: exit code 1", "mpish: @4: killed by SIGINT"]
    assert "\x1b[" in status_lines(results, Style(color=True))[0]


def test_style_honours_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert Style.for_stream(Tty()).color
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Style.for_stream(Tty()).color
    assert not Style.for_stream(io.StringIO()).color


def test_protocol_round_trip_and_validation() -> None:
    message = p.Run(7, "echo hi", 1.5, False)
    assert p.CODEC.decode(p.CODEC.encode(message)) == message
    done = p.Done(1, 0, 0, 0.1, "/tmp", False, 100, "", "")
    assert p.CODEC.decode(p.CODEC.encode(done)) == done
    import msgpack

    with pytest.raises(RemoteProtocolError, match=r"Run\.cmd_id: expected an int, got str"):
        p.CODEC.decode(msgpack.packb([2, "not an int", "cmd", 0.0, False]))
    with pytest.raises(RemoteProtocolError, match=r"Input\.data: expected bytes, got str"):
        p.CODEC.decode(msgpack.packb([15, 1, "text, not bytes", False]))
    packed = msgpack.packb([15, 1, b"bytes", False], use_bin_type=True)
    assert p.CODEC.decode(packed) == p.Input(1, b"bytes", False)
    with pytest.raises(RemoteProtocolError):  # PutChunk (8) and GetChunk (12) were retired: raw Chunks
        p.CODEC.decode(msgpack.packb([8, 1, b"bytes"], use_bin_type=True))


def test_initial_state_quotes_and_strips_launcher_variables() -> None:
    text = initial_state({"A": "x'; rm -rf /", "PMI_RANK": "3", "BAD-NAME": "1", "HOME": "/h"}, "/tmp/a b")
    assert "PMI_RANK" not in text and "BAD-NAME" not in text
    assert "builtin export A='x'\"'\"'; rm -rf /'" in text
    assert text.startswith("builtin cd -- '/tmp/a b'")


def test_typed_ahead_keys_become_whole_lines_and_a_partial_one() -> None:
    from mpish.shell.keyboard import TypedAhead

    typed = TypedAhead()
    typed.feed(b"echo A1\recho B\x7f2\r\x1b[Acd /t")
    typed.feed(b"mp\rls")
    assert [typed.next_line(), typed.next_line(), typed.next_line(), typed.next_line()] == [
        "echo A1", "echo 2", "cd /tmp", None]
    assert typed.take_partial() == "ls" and typed.take_partial() == ""


class _Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


def test_color_follows_the_choice_then_the_terminal_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from mpish.shell.grouping import set_color

    monkeypatch.delenv("NO_COLOR", raising=False)
    try:
        set_color("always")
        assert Style.for_stream(io.BytesIO()).color  # a pipe, but asked for
        monkeypatch.setenv("NO_COLOR", "1")
        assert Style.for_stream(io.BytesIO()).color  # an explicit choice wins over NO_COLOR
        set_color("never")
        assert not Style.for_stream(_Terminal()).color
        set_color("auto")
        assert not Style.for_stream(_Terminal()).color  # NO_COLOR
        monkeypatch.delenv("NO_COLOR")
        assert Style.for_stream(_Terminal()).color and not Style.for_stream(io.BytesIO()).color
        with pytest.raises(ValueError, match="--color is one of"):
            set_color("sometimes")
    finally:
        set_color("auto")


class _Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


def _two_ranks_at_a_terminal(color: str, first: bytes, second: bytes) -> bytes:
    """What a grouped sink writes to a terminal for ranks 1 and 2's outputs (``--color color``)."""
    from mpish.shell.grouping import set_color

    set_color(color)
    try:
        out, err = _Terminal(), _Terminal()
        sink = GroupedSink(out, err, Style.for_stream(out))
        sink.output(1, p.STDOUT, first)
        sink.output(2, p.STDOUT, second)
        sink.done(Result(1, "h", 3))
        sink.done(Result(2, "h", 4))
        sink.finish()
    finally:
        set_color("auto")
    return out.getvalue()


@pytest.mark.parametrize("color", ["never", "always"])
def test_a_ranks_unreset_conceal_code_cannot_hide_the_next_header_on_a_terminal(color: str) -> None:
    """Remote output keeps its colour codes on a terminal: rank 1's trailing ESC[8m (conceal)
    hid the @2 header that followed, so rank 2's output read as rank 1's (security review)."""
    shown = _two_ranks_at_a_terminal(color, b"rank1 output\x1b[8m\n", b"rank2 output\n")
    second = shown.index(b"@2 (1)")
    header_start = shown.rindex(b"\n", 0, shown.rindex(b"-" * 15, 0, second)) + 1
    assert shown[header_start:].startswith(b"\x1b[0m"), shown
    assert Style.for_stream(io.BytesIO()).paint("x", "1") == "x"  # a pipe or a file: unchanged


def test_headers_after_plain_output_carry_no_reset_even_on_a_terminal() -> None:
    """Open MPI's mpirun gives rank 0's stdout a pseudo-terminal of its own whatever mpirun
    writes to: `mpirun -n 3 mpish -c 'echo hi' | cat` held `ESC[0m` before each header (a new
    user's review). The reset is written only after output that held an escape sequence."""
    shown = _two_ranks_at_a_terminal("never", b"hi 1\n", b"hi 2\n")  # as there: the terminal's reset alone
    assert b"\x1b" not in shown, shown
    assert shown.count(b"-" * 15) == 4


def test_an_unclosed_quote_in_put_or_get_says_where_and_how_names_are_read() -> None:
    """``:put '/tmp/new`` said only shlex's "No closing quotation"."""
    from mpish.shell.console_put_get import GET_USAGE, PUT_USAGE, parse

    with pytest.raises(ValueError) as raised:
        parse("'/tmp/new line.txt nl.txt", PUT_USAGE)
    assert str(raised.value) == ("No closing quotation in \"'/tmp/new line.txt nl.txt\" (quotes are read as "
                                 "a shell reads them, on one line: usage: :put [-r] [-p] LOCAL [REMOTE], "
                                 "or LOCAL... DIRECTORY)")
    assert parse("-r 'a b' \"c d\"", GET_USAGE) == (True, False, ["a b", "c d"])
    assert parse("-rp a", GET_USAGE) == parse("-p -R a", GET_USAGE) == (True, True, ["a"])  # as scp -rp
    with pytest.raises(ValueError, match=r"unknown option -rx: usage: :get \[-r\] \[-p\]"):
        parse("-rx a", GET_USAGE)


def test_a_label_resets_attributes_only_after_a_line_that_held_an_escape_sequence() -> None:
    """-L at a terminal: rank 1's concealed line must not hide rank 2's label; plain lines keep
    their labels as they were (4 more bytes a line pushed a flood past what Ctrl-C may show)."""
    from mpish.shell.grouping import set_color

    set_color("never")
    try:
        out, err = _Terminal(), _Terminal()
        sink = LiveSink(out, err, Style.for_stream(out))
        sink.output(1, p.STDOUT, b"plain\n")
        sink.output(1, p.STDOUT, b"hidden\x1b[8m\n")
        sink.output(2, p.STDOUT, b"seen\n")
        sink.output(2, p.STDOUT, b"again\n")
    finally:
        set_color("auto")
    assert out.getvalue() == b"@1: plain\n@1: hidden\x1b[8m\n\x1b[0m@2: seen\n@2: again\n"


def test_a_full_screen_program_that_failed_or_was_interrupted_gets_a_hint_to_attach() -> None:
    """A new user ran vi (it hung until Ctrl-C) and top ("failed tty get"), with no hint."""
    from mpish.shell.attach import terminal_hint

    assert terminal_hint("top", {2, 1}, True) == ("mpish: top needs a terminal, which commands here do not "
                                                  "get: run it on one target with :attach @1 top")
    assert terminal_hint("TERM=xterm /usr/bin/vim notes.txt", {3}, True).endswith(
        ":attach @3 TERM=xterm /usr/bin/vim notes.txt")
    assert terminal_hint("top -b -n 1", {1}, False) == ""  # it worked: nothing to say
    assert terminal_hint("make", {1}, True) == "" and terminal_hint("", {1}, True) == ""


def test_live_lines_are_labelled_whole_across_chunks_as_one_at_a_time_would() -> None:
    """-L and output past the gather limit: plain lines are labelled by one replace per chunk
    (a new user's `yes | head -c 200M` past the limit took 3 min: 2 MB/s, a line at a time)."""
    import random

    rng = random.Random(7)
    text = b"".join(b"line %d of rank %d\n" % (k, r) for k in range(300) for r in (1, 2))
    out = io.BytesIO()
    sink = LiveSink(out, io.BytesIO(), Style())
    sent: dict[int, bytes] = {1: b"", 2: b""}
    at = 0
    while at < len(text):
        size = rng.randint(0, 40)
        for rank in (1, 2):
            sink.output(rank, p.STDOUT, text[at:at + size])
            sent[rank] += text[at:at + size]
        at += size
    sink.end_lines(1)
    sink.end_lines(2)
    lines = out.getvalue().splitlines(keepends=True)
    for rank in (1, 2):
        mine = b"".join(line[len(b"@%d: " % rank):] for line in lines if line.startswith(b"@%d: " % rank))
        assert mine == sent[rank]
    assert all(line.startswith((b"@1: ", b"@2: ")) for line in lines)


def test_rank_0_as_a_target_is_said_to_be_the_console() -> None:
    said = "rank(s) 0 (rank 0 is the console; the servers are 1 and up)"
    with pytest.raises(TargetError, match=re.escape(said)):
        resolve_targets("@0", {1: "h", 2: "h"})


def test_json_output_is_kept_on_disk_and_written_a_piece_at_a_time_as_the_same_text(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--json held each server's output in memory, then copied, decoded and encoded it whole
    (441 MB of RSS for 200 MB of output). Now it is spooled and written in pieces: a character
    cut between two pieces, or between two outputs, is still one character."""
    import mpish.shell.jsonsink as jsonsink

    monkeypatch.setattr(jsonsink, "IN_MEMORY", 64)
    monkeypatch.setattr(jsonsink, "PIECE", 7)
    out = io.BytesIO()
    sink = JsonSink(out)
    text = ("é€😀 \"quoted\" \\ tab\t\n" * 40).encode()
    for at in range(0, len(text), 5):  # outputs cut inside characters
        sink.output(1, p.STDOUT, text[at : at + 5])
    sink.output(1, p.STDERR, b"bad \xff byte")
    sink.done(Result(1, "node", 0, 0, 0.25))
    sink.finish()
    assert json.loads(out.getvalue()) == {"rank": 1, "host": "node", "exit": 0, "signal": None,
                                          "stdout": text.decode(), "stderr": "bad \ufffd byte",
                                          "seconds": 0.25, "timed_out": False}


def test_json_of_a_server_whose_output_could_not_be_kept_is_still_one_whole_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """helper-136: with TMPDIR full, the spool's buffered bytes failed again at the read back:
    a record cut after `"stdout": "`, the next servers' records never written."""
    import tempfile

    import mpish.shell.jsonsink as jsonsink

    full = open("/dev/full", "w+b")  # noqa: SIM115 (every write: ENOSPC)
    monkeypatch.setattr(jsonsink, "IN_MEMORY", 4)
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *args, **kwargs: full)
    out = io.BytesIO()
    sink = JsonSink(out)
    sink.output(1, p.STDOUT, b"more than four bytes")
    sink.output(2, p.STDERR, b"ok")
    for rank in (1, 2):
        sink.done(Result(rank, "node", 0, 0, 0.5))
    sink.finish()
    first, second = map(json.loads, out.getvalue().splitlines())
    assert first["error"].startswith("its output was cut here: cannot keep it (No space left on device")
    assert second["stderr"] == "ok" and "error" not in second
