"""Peer text made safe for mpish's own messages: control characters shown, never obeyed.

A host name from the unauthenticated key exchange, ssh's stderr or an error text a
server sends must not move the cursor, erase lines or print a forged line on the
user's terminal (THREAT-MODEL, "Terminals"). :func:`escape` keeps printable text
(UTF-8 included) and spells everything else out, as ``ls -b`` and OpenSSH do: an
ASCII control character or DEL as ``\\x1b``, a byte that is not part of valid UTF-8
as ``\\xff``, any other non-printable character (C1 controls such as ``\\u009b``,
bidi overrides, zero-width and line separators) as ``\\u202e``, and a backslash as
``\\\\``, so that the escaped text reads back to exactly one original.

Only mpish's own messages go through it; the output of a user's command is shown as
the command wrote it.
"""

from __future__ import annotations

__all__ = ["escape"]


_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # how "surrogateescape" spells bytes 0x80-0xff


def _escape_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():  # letters, digits, punctuation, space, printable non-ASCII
        return ch
    code = ord(ch)
    if code in _SURROGATE_ESCAPES:  # a byte that is not part of valid UTF-8 (a str of os's, or a
        return f"\\x{code - 0xDC00:02x}"  # peer's message: wire/codec.py), never a character
    if code < 0x80:  # C0 controls and DEL
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str | bytes | bytearray, *, keep_newlines: bool = False) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``, ``\\\\``).

    Bytes are read as UTF-8; a byte that is not part of valid UTF-8 is shown as
    ``\\xNN``. ``keep_newlines`` keeps ``\\n`` as a line break (for multi-line text such
    as ssh's stderr); every other control character, ``\\r`` included, is escaped.
    """
    decoded = text if isinstance(text, str) else bytes(text).decode("utf-8", "surrogateescape")
    lines = decoded.split("\n") if keep_newlines else [decoded]
    return "\n".join(_escape_line(line) for line in lines)


def _escape_line(line: str) -> str:
    if line.isprintable() and "\\" not in line:  # the common case: nothing to do
        return line
    return "".join(_escape_char(ch) for ch in line)


def relabel_returns(line: bytes, label: bytes) -> bytes:
    r"""``line`` with ``label`` written again after each carriage return within it (one that ends
    it, ``\r\n``, stays as it is): what follows a ``\r`` overwrites the line from its start, so
    without it one server's output could overwrite its own label with another's (a security
    review: ``printf '\r@2: all good'`` on rank 1), and a progress bar's updates lost theirs."""
    body, end = (line[:-2], line[-2:]) if line.endswith(b"\r\n") else (line, b"")
    return body.replace(b"\r", b"\r" + label) + end
