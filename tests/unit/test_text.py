"""mpish.wire.text.escape: peer text in mpish's own messages shows control characters, never obeys them."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpish.wire.text import escape

FORGED = b"\r\x1b[2K\x1b[1A\x1b[2Kok\nmpish: all ranks verified\n"


def test_forged_status_line_is_shown_not_obeyed() -> None:
    assert escape(FORGED) == r"\x0d\x1b[2K\x1b[1A\x1b[2Kok\x0ampish: all ranks verified\x0a"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("node1.example.org", "node1.example.org"),  # the common case is unchanged
        ("nœud-é", "nœud-é"),  # printable UTF-8 is kept
        (b"n\xc5\x93ud", "nœud"),
        (b"\x00\x07\x08\x09\x7f", r"\x00\x07\x08\x09\x7f"),  # C0 controls and DEL
        ("\x85\x9b31m", r"\u0085\u009b31m"),  # C1 controls (NEL, CSI) as characters
        (b"\xc2\x9b31m", r"\u009b31m"),  # ... and as their UTF-8 bytes
        (b"bad\xff\xfe\x80", r"bad\xff\xfe\x80"),  # bytes that are not UTF-8
        (b"\xed\xa0\x80", r"\xed\xa0\x80"),  # an encoded surrogate is not UTF-8 either
        ("evil\u202egnp.exe", r"evil\u202egnp.exe"),  # bidi override
        ("a\u200bb\u2028c", r"a\u200bb\u2028c"),  # zero-width space, line separator
        ("C:\\x1b", r"C:\\x1b"),  # a backslash is doubled: the escapes cannot be faked
        ("name\udcff", r"name\xff"),  # a file name's byte 0xFF as Python's OS interface spells it
    ],
)
def test_escapes(raw: str | bytes, shown: str) -> None:
    assert escape(raw) == shown


def test_keep_newlines_keeps_line_breaks_only() -> None:
    assert escape(b"Permission denied\r\n\x1b[31mbye\n", keep_newlines=True) == (
        "Permission denied\\x0d\n\\x1b[31mbye\n"
    )


@given(st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_output_never_holds_a_control_character(raw: str | bytes) -> None:
    shown = escape(raw)
    assert shown.isprintable(), shown


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})")


def _read_back(shown: str) -> bytes:
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(shown):
        out += shown[pos : match.start()].encode("utf-8")
        token = match.group(1)
        if token == "\\":
            out += b"\\"
        elif token[0] == "x":
            out.append(int(token[1:], 16))
        else:
            out += chr(int(token[1:], 16)).encode("utf-8")
        pos = match.end()
    return bytes(out + shown[pos:].encode("utf-8"))


@given(st.binary(max_size=64))
def test_escaped_bytes_read_back_to_the_original(raw: bytes) -> None:
    """No two byte strings look the same once escaped (nothing can pose as something else)."""
    assert _read_back(escape(raw)) == raw


def test_remote_error_text_and_traceback_are_shown_escaped() -> None:
    """A remote exception's message and traceback (the remote's words) cannot drive the terminal."""
    from mpish.wire.errors import RemoteError

    error = RemoteError("ValueError: bad\x1b[2K", remote_type="ValueError",
                        remote_traceback="Traceback:\n  line\r\x1b]0;owned\x07\n")
    shown = str(error)
    assert shown == (
        "ValueError: bad\\x1b[2K\n--- remote traceback ---\nTraceback:\n  line\\x0d\\x1b]0;owned\\x07"
    )
    assert error.args == ("ValueError: bad\x1b[2K",)  # the value itself is kept as sent
