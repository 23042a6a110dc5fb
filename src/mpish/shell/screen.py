"""Remote output shown on the console's terminal cannot take over its screen.

A command's output is the remote program's, written for a terminal it does not have. On
the console's terminal its control sequences would act on the console itself: ``vim``'s
scroll region (``ESC[1;24r``), clearing the screen, moving the cursor, switching to the
alternate screen, setting the window title (OSC), turning off echo-relevant modes. So
when output goes to a terminal, :class:`ScreenFilter` keeps only what prints text:

* kept: printable bytes (UTF-8 included), ``\\t``, ``\\n``, ``\\r``, and SGR sequences
  (``ESC[...m``: colours and bold, as ``ls --color`` or ``grep --color`` print them);
* dropped: every other escape sequence (CSI, OSC, DCS/SOS/PM/APC strings, two-byte
  ``ESC x``), the C1 controls encoded in UTF-8 (U+0080..U+009F), and the other C0
  controls (BEL, backspace, form feed, ...); a 0xC2 byte is kept only with the byte of
  U+00A0..U+00BF after it, so that dropping what followed it cannot join it to a later
  0x80..0x9F into a C1 control (nor can the next chunk or the next command's output);
  a byte 0x80..0x9F that is not part of a UTF-8 character (an 8-bit C1 control: 0x9B is
  CSI on a terminal that takes 8-bit controls) is dropped too, and a character cut at a
  chunk's end is held until the next chunk completes it.

A sequence split across chunks is completed by the next one (at most :data:`HOLD`
bytes are held). Unlike a terminal, a string sequence (OSC, DCS) that has not ended by
the next newline is taken for garbage: its ESC and first byte are dropped and the rest
shown, so that random bytes cannot hide the text that follows them. Output that goes
to a pipe or a file is never filtered (byte-exact, as ssh), nor with ``:raw on`` /
``--raw``; ``:attach`` gives a program the real terminal.
"""

from __future__ import annotations

import re
from typing import IO

from .grouping import OutputSink
from .names import Result

HOLD = 4096  # an unfinished escape sequence held for the next chunk, at most
RESET = b"\x1b[0m"

_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")  # one class: fast on clean text
# 0xC2 is kept only as the first byte of U+00A0..U+00BF: with anything else after it (a C1
# control, a control dropped from between, or the chunk's end) it could join what follows
_C1 = re.compile(rb"\xc2(?![\xa0-\xbf])")  # only where 0xC2 is (memchr first): UTF-8 text
_SGR_AHEAD = rb"(?!\[[0-9;:]*m)"  # after an ESC: not an SGR sequence (those are kept)
_SEQUENCE = re.compile(  # what is dropped: one pattern, replaced by b"" without a Python call
    rb"\x1b" + _SGR_AHEAD + rb"\[[0-?]*[ -/]*[@-~]"  # CSI but SGR
    rb"|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)"  # OSC, ended by BEL or ST (not after a newline)
    rb"|\x1b[PX^_][^\x1b\n]*\x1b\\"  # DCS, SOS, PM, APC strings, ended by ST (same)
    rb"|\x1b[ -/]*[0-Z\\-~]"  # ESC x (charset, save cursor, reset, keypad mode, ...), not ESC [
    rb"|\xc2(?:[\x80-\x9f]|(?![\xa0-\xbf]))"  # C1 controls in UTF-8 (and a lead byte they could be joined to)
    rb"|\x1b" + _SGR_AHEAD +  # an ESC that starts nothing known
    rb"|[\x00-\x08\x0b-\x0c\x0e-\x1a\x1c-\x1f\x7f]",  # C0 but \t \n \r
)
# a byte 0x80..0x9F outside a UTF-8 character: C1 control on a terminal that takes 8-bit controls
# (0x9B is CSI there); dropped by one substitution that keeps every valid multi-byte character
_HIGH = re.compile(rb"[\x80-\x9f]")
# well-formed UTF-8 only (RFC 3629): an overlong form or a surrogate (E0 80 9B, an overlong
# CSI; ED A0 9B) is no character, so its 0x80..0x9F bytes are dropped (helper-143)
_UTF8_CHARACTER = (rb"[\xc2-\xdf][\x80-\xbf]"
                   rb"|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
                   rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}")
_STRAY = re.compile(rb"(" + _UTF8_CHARACTER + rb")|[\x80-\x9f]")
_CUT_CHARACTER = re.compile(  # the start of a well-formed character at a chunk's end
    rb"(?:[\xc2-\xdf]|\xe0[\xa0-\xbf]?|[\xe1-\xec\xee\xef][\x80-\xbf]?|\xed[\x80-\x9f]?"
    rb"|\xf0(?:[\x90-\xbf][\x80-\xbf]?)?|[\xf1-\xf3][\x80-\xbf]{0,2}|\xf4(?:[\x80-\x8f][\x80-\xbf]?)?)$")
_UNFINISHED = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b\n]*|[PX^_][^\x1b\n]*|[ -/]*)?(?:\x1b)?$|\xc2$"
)


class ScreenFilter:
    """One output stream's filter (keeps the unfinished sequence at a chunk's end)."""

    def __init__(self, eight_bit: bool = False) -> None:
        self.held = b""
        self.eight_bit = eight_bit  # the terminal is not UTF-8: every byte 0x80..0x9F is a C1 control
        self.coloured = False  # an SGR sequence went through: reset the attributes at the end

    def feed(self, data: bytes) -> bytes:
        if self.held:
            data, self.held = self.held + data, b""
        if data[-1:] >= b"\x80":  # a character cut at the chunk's end: joined to the next chunk
            cut = _CUT_CHARACTER.search(data, max(0, len(data) - 3))
            if cut is not None:
                self.held, data = data[cut.start() :], data[: cut.start()]
        if (_CONTROL.search(data) is None and (b"\xc2" not in data or _C1.search(data) is None)
                and _HIGH.search(data) is None):
            return data
        unfinished = _UNFINISHED.search(data, max(0, len(data) - HOLD))
        if unfinished is not None and unfinished.start() < len(data):
            self.held = data[unfinished.start() :] + self.held
            data = data[: unfinished.start()]
        cleaned = _SEQUENCE.sub(b"", data)
        if _HIGH.search(cleaned) is not None:
            cleaned = _HIGH.sub(b"", cleaned) if self.eight_bit else _STRAY.sub(rb"\1", cleaned)
        self.coloured = self.coloured or b"\x1b[" in cleaned
        return cleaned

    def end(self) -> bytes:
        """The stream ended: an unfinished escape sequence is dropped, and so is a lone 0xC2
        (it would join a C1 control out of the next output); the last byte of text in another
        encoding (``caf\xe9``) is kept."""
        held, self.held = self.held, b""
        if held[:1] == b"\x1b" or held[:1] == b"\xc2" or (self.eight_bit and _HIGH.search(held)):
            return b""
        return _STRAY.sub(rb"\1", held)


class ScreenSink:
    """Wraps a sink: each server's stdout and stderr through its own :class:`ScreenFilter`;
    at the end, the terminal's attributes are reset if some output set colours."""

    def __init__(self, inner: OutputSink, out: IO[bytes]) -> None:
        self.inner, self.out = inner, out
        self.filters: dict[tuple[int, int], ScreenFilter] = {}
        self.eight_bit = not _utf8_terminal()  # once, not per server and stream

    @property
    def streams(self) -> bool:  # console.py: a streaming sink drops what was in flight at a Ctrl-C
        return bool(getattr(self.inner, "streams", False))

    def output(self, rank: int, stream: int, data: bytes) -> None:
        screen = self.filters.get((rank, stream))
        if screen is None:
            screen = self.filters[(rank, stream)] = ScreenFilter(eight_bit=self.eight_bit)
        cleaned = screen.feed(data)
        if cleaned:
            self.inner.output(rank, stream, cleaned)

    def done(self, result: Result) -> None:
        for (rank, stream), screen in self.filters.items():
            rest = screen.end() if rank == result.rank else b""
            if rest:
                self.inner.output(rank, stream, rest)
        self.inner.done(result)

    def finish(self) -> None:
        self.inner.finish()
        if any(screen.coloured for screen in self.filters.values()):
            self.out.write(RESET)
            self.out.flush()
        self.filters.clear()


def _utf8_terminal() -> bool:
    """The console's locale says its terminal speaks UTF-8 (where a byte 0x80..0x9F inside a
    character is text; elsewhere, on an 8-bit terminal, each is a C1 control: 0x9B is CSI)."""
    import locale

    encoding = locale.getlocale(locale.LC_CTYPE)[1] or locale.getpreferredencoding(False)
    return encoding.replace("-", "").lower() == "utf8"


def for_terminal(sink: OutputSink, out: IO[bytes], raw: bool) -> OutputSink:
    """``sink`` filtered when ``out`` is a terminal (and not ``raw``)."""
    try:
        terminal = out.isatty()
    except (ValueError, OSError):
        terminal = False
    return ScreenSink(sink, out) if terminal and not raw else sink
