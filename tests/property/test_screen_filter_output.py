"""What the screen filter (shell/screen.py) promises, for any bytes cut in any chunks: its
output holds only printable bytes (UTF-8 included), \\t \\n \\r and whole SGR sequences; no
other C0 control, no ESC but an SGR's, no C1 control in UTF-8 (0xC2 0x80..0x9F), not even
one made by joining a piece of output to the next (a lone 0xC2 is never output), and no byte
0x80..0x9F outside a UTF-8 character (an 8-bit C1 control)."""

from __future__ import annotations

import re

from fuzz_settings import SETTINGS
from hypothesis import given
from hypothesis import strategies as st

from mpish.shell.screen import ScreenFilter

# one output piece: tokens, each either an SGR sequence, a byte that is not a control (and not
# 0xC2), or 0xC2 as the first byte of U+00A0..U+00BF
ALLOWED = re.compile(rb"(?:\x1b\[[0-9;:]*m|[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f\xc2]|\xc2[\xa0-\xbf])*")
C1 = re.compile(rb"\xc2[\x80-\x9f]")
# a byte 0x80..0x9F outside a UTF-8 character (group 1): an 8-bit C1 control
STRAY = re.compile(rb"(?:[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3})"
                   rb"|([\x80-\x9f])")
TOKENS = [
    b"\x1b", b"[", b"]", b"P", b"\\", b"\x07", b"\n", b"\r", b"m", b"2", b";", b"J", b"?", b"(",
    b"\xc2", b"\x9b", b"\x9d", b"\x9c", b"\x90", b"\xa2", b"\x7f", b"\x08", b"a", b"0",
    b"\xe2\x82\xac", b"\xe2", b"\x82", b"\xf0\x9f", b"\x98\x80", b"\xd9\x9b",
    b"\x1b[1;31m", b"\x1b[2J", b"\x1b]0;t", b"\xc2\x9b", b"\xc2\xc2",
]
CHUNK = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=8)), max_size=16).map(b"".join)


@SETTINGS
@given(st.lists(CHUNK, max_size=6), st.lists(CHUNK, max_size=3))
def test_filtered_output_holds_no_control_no_escape_but_sgr_and_no_c1_even_across_pieces(
    chunks: list[bytes], later: list[bytes]
) -> None:
    screen = ScreenFilter()
    pieces = [screen.feed(chunk) for chunk in chunks] + [screen.end()]
    following = ScreenFilter()  # the next command's output, on the same terminal
    pieces += [following.feed(chunk) for chunk in later] + [following.end()]
    for piece in pieces:
        assert ALLOWED.fullmatch(piece), piece
    shown = b"".join(pieces)
    assert ALLOWED.fullmatch(shown) and C1.search(shown) is None, shown
    assert not any(m.group(1) for m in STRAY.finditer(shown)), shown
