"""Whether a command typed at the console is whole, or bash would read another line (PS2).

An interactive bash reads on after ``if x; then``, ``for f in *; do``, ``f() {``, an open
quote, a line ending in ``\\``, ``&&`` or ``|``, and a here-document until its delimiter.
The console used to send every line as a command of its own: a pasted

    if [ -e /nonexistent ]; then
      rmdir important
    fi

ran ``rmdir important`` unguarded between two syntax errors (and a here-document's body
ran line by line as commands). So the console collects lines as bash would before sending
anything (:class:`Block`), and the server runs the whole block as one command.

The question is answered by the console host's own bash (``bash -n``, nothing runs; about
2 ms), in the C locale so its messages can be read: "unexpected end of file", "unexpected
EOF while looking for matching ..." and a here-document "delimited by end-of-file (wanted
`X')" mean bash wants more. A line of plain words is whole without asking; inside an open
block, a line that cannot close it (plain words in an ``if`` or a quote; anything but the
delimiter in a here-document) is not asked about either, so a long paste costs a check per
closing line, not one per line over a growing text. On a first line, anything else (a
real syntax error, no bash here, a check that fails or is slow) sends the text as it is:
the server's own check then says what is wrong, with the session's aliases and options.
Inside a block, a check that fails or is slow reads on: sending half a block is what this
module is here to prevent (Ctrl-C drops the block, the end of input sends it).
"""

from __future__ import annotations

import re
import shutil
import subprocess

TIMEOUT = 2.0  # seconds: a first line this slow to parse is sent as it is
# no quote, bracket, operator, expansion, escape or comment, and no reserved word
_PLAIN = re.compile(r"(?:[A-Za-z0-9_./:,+@%=~ \t-]|\$[A-Za-z0-9_])*")  # $NAME: an expansion, whole
_RESERVED = frozenset(("if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while",
                       "until", "do", "done", "in", "function", "coproc", "time", "!"))
_HEREDOC = re.compile(rb"delimited by end-of-file \(wanted `(.*)'\)")
_OPERATOR_END = ("&&", "||", "|", "|&")


def plain(line: str) -> bool:
    """Plain words: nothing in the line can open or close anything for bash."""
    return bool(_PLAIN.fullmatch(line)) and not _RESERVED.intersection(line.split())


def continued(line: str) -> bool:
    """The line ends in an escaping backslash (an odd number of them), outside a comment."""
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1 and "#" not in line


class Block:
    """The lines of one command so far; :meth:`add` says whether bash would read on."""

    def __init__(self, bash: str | None = None) -> None:
        self.lines: list[str] = []
        self.bash = bash
        self.delimiter: str | None = None  # an open here-document's
        self.closable_only_by_syntax = False  # open if/for/{/quote: a plain line keeps it open

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def add(self, line: str) -> bool:
        """Take the next line; True if bash would read another before running the text."""
        first = not self.lines
        self.lines.append(line)
        if self.delimiter is not None and line.lstrip("\t") != self.delimiter:
            return True
        if self.closable_only_by_syntax and plain(line) and not continued(line):
            return True
        if first and plain(line):
            return False
        if continued(line):
            return True
        return self._ask_bash(first)

    def _ask_bash(self, first: bool) -> bool:
        self.delimiter, self.closable_only_by_syntax = None, False
        bash = self.bash or shutil.which("bash")
        if bash is None:
            return False
        try:
            child = subprocess.run([bash, "--norc", "--noprofile", "-O", "extglob", "-n"],
                                   input=self.text.encode(errors="surrogateescape") + b"\n",
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT,
                                   env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, check=False)
        except (OSError, subprocess.SubprocessError):
            return not first
        said = child.stderr
        heredoc = _HEREDOC.search(said)
        if heredoc:
            self.delimiter = heredoc.group(1).decode(errors="surrogateescape")
            return True
        if b"unexpected EOF while looking for matching" in said:
            self.closable_only_by_syntax = True  # a quote: only a quote character closes it
            return True
        if b"unexpected end of file" in said:
            # an open if/for/{/(: only a reserved word or a bracket closes it; an operator at
            # the end (&&, |) is completed by any command
            self.closable_only_by_syntax = not self.text.rstrip().endswith(_OPERATOR_END)
            return True
        return False


def needs_more(text: str, bash: str | None = None) -> bool:
    """True if bash, reading ``text`` at its prompt, would ask for another line."""
    block = Block(bash)
    wants = False
    for line in text.split("\n"):
        wants = block.add(line)
    return wants
