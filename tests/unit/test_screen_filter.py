"""The console's screen filter (shell/screen.py) and the pty escapes (shell/attach.py)."""

from __future__ import annotations

import io

from mpish.shell.attach import Escapes
from mpish.shell.completion import complete_path, split_line
from mpish.shell.grouping import RawSink
from mpish.shell.names import Result
from mpish.shell.protocol import STDOUT
from mpish.shell.screen import ScreenFilter, ScreenSink, for_terminal

VIM = b"\x1b[?1049h\x1b[22;0;0t\x1b[1;24r\x1b[?12h\x1b[?12l\x1b[27m\x1b[23m\x1b[29m\x1b[m\x1b[H\x1b[2J"


def filtered(*chunks: bytes) -> bytes:
    screen = ScreenFilter()
    return b"".join(screen.feed(chunk) for chunk in chunks) + screen.end()


def test_text_tabs_newlines_and_colours_pass_unchanged() -> None:
    text = "tab\there\r\nünïcødé ¢ 日本\n\x1b[1;31mred\x1b[0m \x1b[38;5;208mo\x1b[m\n".encode()
    assert filtered(text) == text


def test_cursor_moves_clears_scroll_regions_modes_and_titles_are_dropped() -> None:
    assert filtered(VIM + b"text\n") == b"\x1b[27m\x1b[23m\x1b[29m\x1b[mtext\n"
    assert filtered(b"a\x1b]0;title\x07b\x1b]2;t2\x1b\\c\x1bPq#0;2\x1b\\d") == b"abcd"
    assert filtered(b"\x1b7\x1b8\x1bc\x1b(B\x1b=x\x07\x08\x0c\x7fy") == b"xy"
    assert filtered("C1: \u009b2J\u009d0;t".encode()) == b"C1: 2J0;t"


def test_a_sequence_split_across_chunks_is_still_recognised() -> None:
    data = b"one \x1b[1;24r two \x1b]0;title\x07 three \x1b[31mred\x1b[0m\n"
    for cut in range(1, len(data)):
        assert filtered(data[:cut], data[cut:]) == b"one  two  three \x1b[31mred\x1b[0m\n", cut


def test_a_split_character_is_joined_a_lone_last_lead_byte_and_an_unfinished_sequence_dropped() -> None:
    assert filtered(b"cent \xc2", b"\xa2") == "cent ¢".encode()
    assert filtered(b"end\xc2") == b"end"  # kept, it would join the next output's \x9b into a C1 CSI
    assert filtered(b"end\x1b[1;2") == b"end"


def test_the_sink_filters_only_a_terminal_and_resets_colours_at_the_end() -> None:
    class Tty(io.BytesIO):
        def isatty(self) -> bool:
            return True

    pipe = io.BytesIO()
    assert for_terminal(RawSink(pipe, pipe), pipe, raw=False).__class__ is RawSink
    out = Tty()
    assert isinstance(for_terminal(RawSink(out, out), out, raw=True), RawSink)
    sink = for_terminal(RawSink(out, out), out, raw=False)
    assert isinstance(sink, ScreenSink)
    sink.output(1, STDOUT, b"\x1b[2J\x1b[31mred")
    sink.done(Result(1, "h", 0))
    sink.finish()
    assert out.getvalue() == b"\x1b[31mred\x1b[0m"


def test_escapes_after_enter_as_ssh() -> None:
    keys = Escapes()
    assert keys.feed(b"~.") == (b"", "hangup")  # at the start
    keys = Escapes()
    assert keys.feed(b"a~.b") == (b"a~.b", "")  # not after Enter: plain keys
    assert keys.feed(b"\r~~x") == (b"\r~x", "")
    assert keys.feed(b"\r~?") == (b"\r", "help")
    assert keys.feed(b"~.") == (b"", "hangup")
    keys = Escapes()
    assert keys.feed(b"\r~") == (b"\r", "")  # the next key decides
    assert keys.feed(b"q") == (b"~q", "")


def test_paths_complete_in_a_directory_hidden_names_only_for_a_dot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "alpha").mkdir()
    (tmp_path / "alpine.txt").write_text("")
    (tmp_path / ".hidden").write_text("")
    assert complete_path("al", str(tmp_path)) == ["alpha/", "alpine.txt"]
    assert complete_path("", str(tmp_path)) == ["alpha/", "alpine.txt"]
    assert complete_path(".h", str(tmp_path)) == [".hidden"]
    assert complete_path(f"{tmp_path}/alp", "/") == ["alpha/", "alpine.txt"]
    assert complete_path("nosuchdir/x", str(tmp_path)) == []
    assert split_line("@2 ls -l sr") == ("@2", ["ls", "-l"], "sr")
    assert split_line(":put ") == ("", [":put"], "")


def test_an_unended_string_sequence_does_not_hide_the_lines_after_it() -> None:
    assert filtered(b"junk\x1b]0;no end\nsurvived\n") == b"junk0;no end\nsurvived\n"
    assert filtered(b"junk\x1bPno end", b"\nsurvived\n") == b"junkno end\nsurvived\n"


def test_a_control_dropped_between_0xc2_and_0x9b_does_not_join_them_into_a_c1_control() -> None:
    for payload in (b"\xc2\x07\x9b2J", b"\xc2\x1b\x9d0;title\xc2\x07\x9c", b"\xc2\x7f\x9b?1049h"):
        out = filtered(payload)
        assert b"\xc2" not in out, payload
    screen = ScreenFilter()  # across chunks: 0xC2 at one chunk's end, a dropped control next
    assert b"\xc2" not in screen.feed(b"a\xc2") + screen.feed(b"\x07\x9b2J") + screen.end()


def test_an_8_bit_c1_control_outside_a_character_is_dropped_and_cut_characters_survive() -> None:
    """Security review (LOW): raw 0x9B (CSI) and 0x9D (OSC) went through: a terminal that takes
    8-bit controls cleared the screen and moved the cursor for a remote `printf '\\x9b2J'`."""
    assert filtered(b"a\x9b2J\x9b1;1Hb\x9d0;t\x9c") == b"a2J1;1Hb0;t"
    text = "€ 😀 ۛ ü".encode()  # continuation bytes 0x80..0x9F inside characters: kept
    assert filtered(text) == text
    for cut in range(1, len(text)):
        assert filtered(text[:cut], text[cut:]) == text, cut
    assert filtered(b"x\xe2\x82") == b"x\xe2"  # never completed: its 0x82 dropped at the end
    assert filtered(b"caf\xe9") == b"caf\xe9"  # Latin-1 text keeps its last byte
    assert filtered(b"\xdf\x07\x9b2J") == b"\xdf\x9b2J"  # U+07DB once the BEL is gone: a character


def test_a_c1_byte_inside_a_sequence_that_is_not_utf8_is_dropped_and_every_character_kept() -> None:
    """helper-143: overlong forms and surrogates counted as characters, so their 0x9B reached
    the terminal (an overlong CSI, E0 80 9B, on a terminal that decodes it)."""
    for data in (b"A\xe0\x80\x9b[2J", b"B\xe0\x82\x9b2J", b"C\xf0\x80\x80\x9b[2J", b"D\xed\xa0\x9b2J",
                 b"E\xc0\x9b[2J", b"F\xf4\x90\x80\x9b", b"G\xf5\x80\x80\x9b"):
        for cut in range(1, len(data)):  # whole, and split between two chunks at every byte
            for out in (filtered(data), filtered(data[:cut], data[cut:])):
                stray = [ch for ch in out.decode("utf-8", "surrogateescape") if "\udc80" <= ch <= "\udc9f"]
                assert not stray and b"\x9b" not in out, (data, cut, out)  # (Python's decoder is strict)
    text = "".join(chr(c) for c in (0xA0, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0x10000, 0x10FFFF)).encode()
    for cut in range(len(text) + 1):  # the boundaries of each length: kept whole, however split
        assert filtered(text[:cut], text[cut:]) == text, cut


def test_on_an_8_bit_terminal_every_byte_0x80_to_0x9f_is_dropped_even_inside_a_character() -> None:
    """Where the console's locale is not UTF-8 the terminal may take 8-bit controls: there
    U+201B's last byte, 0x9B, is a CSI (review of the filter, helper-115)."""
    screen = ScreenFilter(eight_bit=True)
    out = screen.feed(b"a\xe2\x80\x9b2J \xdf\x07\x9b1;1H caf\xe9 ")
    out += screen.feed(b"end\xe2\x80") + screen.end()
    assert out == b"a\xe22J \xdf1;1H caf\xe9 end"
