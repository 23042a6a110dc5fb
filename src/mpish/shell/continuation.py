"""Whether a command typed at the console is whole, or bash would read another line (PS2).

An interactive bash reads on after ``if x; then``, ``for f in *; do``, ``f() {``, an open
quote, a line ending in ``\\``, ``&&`` or ``|``, and a here-document until its delimiter.
The console used to send every line as a command of its own: a pasted

    if [ -e /nonexistent ]; then
      rmdir important
    fi

ran ``rmdir important`` unguarded between two syntax errors (and a here-document's body
ran line by line as commands). So the console collects lines as bash would before sending
anything (:func:`needs_more`), and the server runs the whole block as one command.

The question is answered by the console host's own bash (``bash -n``, nothing runs; about
1 ms, skipped for lines of plain words), in the C locale so its messages can be read:
"unexpected end of file", "unexpected EOF while looking for matching ..." and a
here-document "delimited by end-of-file" mean bash wants more. Anything else (a real
syntax error, no bash here, a check that fails or is slow) sends the text as it is: the
server's own check then says what is wrong, with the session's aliases and options.
"""

from __future__ import annotations

import re
import shutil
import subprocess

TIMEOUT = 2.0  # seconds: a text this slow to parse is sent as it is
WANTS_MORE = (b"unexpected end of file", b"unexpected EOF while looking for matching",
              b"delimited by end-of-file")
# no quote, bracket, operator, expansion or escape, and no reserved word: nothing left open
_PLAIN = re.compile(r"[A-Za-z0-9_./:,+@%=~ \t-]*")
_OPENS = frozenset(("if", "then", "else", "elif", "case", "for", "select", "while", "until", "do",
                    "function", "coproc", "time", "!"))


def needs_more(text: str, bash: str | None = None) -> bool:
    """True if bash, reading ``text`` at its prompt, would ask for another line."""
    if _PLAIN.fullmatch(text) and not _OPENS.intersection(text.split()):
        return False
    trailing = len(text) - len(text.rstrip("\\"))
    if trailing % 2:  # a line continued with a backslash (inside quotes too: bash reads on)
        return True
    bash = bash or shutil.which("bash")
    if bash is None:
        return False
    try:
        child = subprocess.run([bash, "--norc", "--noprofile", "-O", "extglob", "-n"],
                               input=text.encode(errors="surrogateescape") + b"\n",
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT,
                               env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return any(sign in child.stderr for sign in WANTS_MORE)
