"""Tab completion in the console: built-in names, local paths, and the targets' paths.

A remote path is completed by one target (the first of the line's targets): the console
sends :class:`~mpish.shell.protocol.Complete` with the word under the cursor and waits
for :class:`~mpish.shell.protocol.Completions` at most :data:`REMOTE_TIMEOUT` (a slow or
busy target then completes nothing; its late answer is dropped). The server lists the
directory itself (:func:`complete_path`, relative to its shell's cwd, ``~`` expanded),
without going through the rank's shell, so ``$?`` and the shell's state stay as they
were. Words are split as bash splits them (:func:`shell_words`: quotes and backslashes read,
and a path after ``=``); the word is replaced by the name completed, quoted as it was begun
(inside ``"`` or ``'``), else with the shell's special characters escaped (``a\\ file.txt``), as
bash completes it, so that the line runs on the file completed and not on its pieces.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from mpish.wire.errors import MpishError
from mpish.wire.text import escape

from . import protocol as p

if TYPE_CHECKING:
    from .console import Console
    from .interactive import Repl

REMOTE_TIMEOUT = 1.0  # seconds a completion waits for its target
LIMIT = 1000  # names returned by a target at most
LOCAL_ARGUMENT = {":put": 0, ":get": 1, ":lcd": 0}  # the argument that is a path of the console's machine
NO_PATHS = (":targets", ":timeout", ":mode", ":raw", ":help", ":quit", ":q")
_SPECIAL = re.compile(r"([^\w@%+=:,./-])")  # what bash's completion escapes with a backslash


def shell_escaped(name: str, bash: bool = True) -> str:
    """``name`` as bash's completion inserts it: blanks, quotes, ``$``, ``*``... escaped; a name
    with bytes that are not UTF-8 or control characters (a file named by the byte 0xFF, which
    a target sends as "\\udcff": wire/codec.py) as bash's ``$'\\xff'``, printable as typed.
    Not ``bash``: a built-in's argument (read by shlex, which has no ``$'...'``): escaped only."""
    if name.isprintable() or not bash:
        return _SPECIAL.sub(r"\\\1", name)
    return "$'" + "".join(_ansi_c(ch) for ch in name) + "'"


def _ansi_c(ch: str) -> str:
    if ch in "\\'":
        return "\\" + ch
    if ch.isprintable():
        return ch
    raw = ch.encode("utf-8", "surrogateescape")  # a byte that is not UTF-8 is that byte again
    return "".join(f"\\x{byte:02x}" for byte in raw)


def complete_path(prefix: str, cwd: str) -> list[str]:
    """Names in ``prefix``'s directory that start with its last part (directories end in
    ``/``; hidden ones only for a part starting with a dot); at most :data:`LIMIT`."""
    head, tail = os.path.split(prefix)
    if prefix.startswith("~") and "/" not in prefix:
        return []
    directory = os.path.expanduser(head) if head else "."
    if not os.path.isabs(directory):
        directory = os.path.join(cwd or os.getcwd(), directory)
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(tail) or (name.startswith(".") and not tail.startswith(".")):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                names.append(name + "/" if is_dir else name)
                if len(names) >= LIMIT:
                    break
    except (OSError, ValueError):  # (ValueError: a NUL in the prefix)
        return []
    return sorted(names)


def remote_completions(
    console: Console, rank: int, prefix: str, timeout: float = REMOTE_TIMEOUT
) -> list[str]:
    """Ask ``rank`` to complete ``prefix``; [] if it does not answer within ``timeout``."""
    peer = console.peers.get(rank)
    if peer is None or not peer.alive:
        return []
    req_id = console.new_id()
    answer: list[str] = []
    answered = False

    def handle(source: int, message: object) -> None:
        nonlocal answered
        if source == rank and isinstance(message, p.Completions) and message.req_id == req_id:
            answered = True
            answer.extend(name for name in message.names.split("\0") if name)

    deadline = time.monotonic() + timeout
    with console.routed(handle):
        console.send(rank, p.Complete(req_id, prefix))
        while not answered and peer.alive and time.monotonic() < deadline:
            if not console.pump():
                console.link.wait(max(0.0, min(0.01, deadline - time.monotonic())))
    return answer


Remote = Callable[[str, str], Iterable[str]]  # (the line's target word or "", prefix) -> names


class Word(NamedTuple):
    """A word of a line as bash reads it: where it starts, its text with the quoting and
    backslashes taken away, and the quote still open at the line's end ("" if none)."""

    start: int
    text: str
    quote: str


def shell_words(text: str) -> list[Word]:
    """The words of ``text`` split as bash splits them (blanks outside quotes; ``\\``, ``'...'``
    and ``"..."`` read); the last one is the cursor's ("" starting at the end after a blank)."""
    words: list[Word] = []
    start, chars, quote, escaped, in_word = len(text), [], "", False, False
    for at, ch in enumerate(text):
        if escaped:  # inside "...", a backslash escapes only $ ` " \ (else it stays)
            chars.append(ch if quote != '"' or ch in '$`"\\' else "\\" + ch)
            escaped = False
        elif quote == "'":
            quote = "" if ch == "'" else quote
            chars += [] if ch == "'" else [ch]
        elif quote == '"':
            quote, escaped = ("" if ch == '"' else quote), ch == "\\"
            chars += [] if ch in '"\\' else [ch]
        elif ch.isspace():
            if in_word:
                words.append(Word(start, "".join(chars), ""))
            start, chars, in_word = at + 1, [], False
        else:
            if not in_word:
                start, chars, in_word = at, [], True
            if ch == "\\":
                escaped = True
            elif ch in "'\"":
                quote = ch
            else:
                chars.append(ch)
    words.append(Word(start if in_word else len(text), "".join(chars) if in_word else "", quote))
    return words


def split_line(text: str) -> tuple[str, list[str], str]:
    """(target word or "", the words before the cursor's word, the cursor's word), unquoted."""
    words = shell_words(text)
    before = [word.text for word in words[:-1]]
    target = before.pop(0) if before and before[0].startswith("@") else ""
    return target, before, words[-1].text


def ended(text: str) -> str:
    """A completed word as bash inserts it: a file's name followed by a space (the next word
    may be typed at once), a directory's by its ``/`` only (Tab may go on into it)."""
    return text if text.endswith("/") else text + " "


def quoted(path: str, quote: str, bash: bool) -> str:
    """``path`` (a completed name after its directory) for the line, in the quoting the word
    was begun with: inside an open ``"`` or ``'`` (closed after a file, as bash does, left
    open after a directory), else escaped (:func:`shell_escaped`); a leading ``~`` or
    ``~user`` is left bare, so that bash still expands it."""
    home, rest = "", path
    if path.startswith("~") and not quote:
        home, slash, rest = path.partition("/")
        home, rest = (home + slash, rest) if slash else ("", path)
    closing = "" if path.endswith("/") else quote
    if quote == '"' and path.isprintable() and (bash or not {"$", "`"} & set(path)):  # (shlex keeps \$)
        return '"' + re.sub(r'([$`"\\])', r"\\\1", path) + closing
    if quote == "'" and path.isprintable() and "'" not in path:
        return "'" + path + closing
    return home + shell_escaped(rest, bash)


def make_completer(builtins: Iterable[str], remote: Remote,
                   targets: Callable[[], Iterable[str]] = tuple) -> Any:
    """A prompt_toolkit completer for the console's lines; ``targets``: the target words
    (``@all``, ``@host``) that a word beginning with ``@`` completes to."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    names = sorted(builtins)
    local = PathCompleter(expanduser=True)

    class ShellCompleter(Completer):
        def get_completions(self, document: Document, complete_event: Any) -> Iterator[Completion]:
            target, before, word = split_line(document.text_before_cursor)
            if not before and word.startswith(":"):
                for name in names:
                    if name.startswith(word):
                        yield Completion(name, -len(word))
                return
            command = before[0] if before else ""
            if word.startswith("@") and ((not before and not target) or command in (":targets", ":attach")):
                for name in targets():  # a target set, :targets' and :attach's words
                    if name.startswith(word):
                        yield Completion(name, -len(word))
                return
            if command in NO_PATHS:
                return
            cursor = shell_words(document.text_before_cursor)[-1]
            raw = document.text_before_cursor[cursor.start:]  # as typed: replaced by the completion
            path, quote = word, cursor.quote
            if not command.startswith(":") and not quote and "=" in raw and "=" in word:  # VAR=PATH
                path = word.rpartition("=")[2]
                raw = raw.rpartition("=")[2]
            directory = path[: len(path) - len(path.rpartition("/")[2])]
            arguments = [w for w in before[1:] if not w.startswith("-")]  # :put -r LOCAL
            if LOCAL_ARGUMENT.get(command) == len(arguments):
                for found in local.get_completions(Document(path), complete_event):  # :put reads it
                    whole = path[: len(path) + found.start_position] + found.text  # shlex: no $'...'
                    if os.path.isdir(os.path.expanduser(whole)):  # (PathCompleter shows its / only)
                        whole += "/"
                    yield Completion(ended(quoted(whole, quote, bash=False)), -len(raw),
                                     display=found.display)
                return
            for name in remote(target, path):
                yield Completion(ended(quoted(directory + name, quote, bash=not command.startswith(":"))),
                                 -len(raw), display=escape(name))

    return ShellCompleter()


def for_repl(repl: Repl) -> Any:
    """The console's completer: its built-ins, and remote paths from the line's first target."""
    from .ranks import TargetError, resolve_targets

    console = repl.console

    def remote(target: str, prefix: str) -> list[str]:
        try:
            ranks = resolve_targets(target, console.hosts) if target else repl.targets
        except TargetError:
            return []
        alive = sorted(rank for rank in ranks if rank in console.hosts)
        try:
            return remote_completions(console, alive[0], prefix) if alive else []
        except MpishError:  # the transport broke: the next command says so, not the line editor
            return []

    def targets() -> list[str]:  # (a host name that is not a plain word is not offered)
        hosts = {host for host in console.hosts.values() if re.fullmatch(r"[\w.-]+", host)}
        return ["@all", *(f"@{host}" for host in sorted(hosts))]

    builtins = [":" + name[4:] for name in dir(repl) if name.startswith("cmd_")]
    return make_completer(builtins, remote, targets)


def complete_at_once() -> Any:
    """Tab's key binding: complete inside the key's own handler, before the next key is read.

    prompt_toolkit's Tab starts the completion as a task of its event loop, and a key typed
    right behind it was handled first: ``ls -d /tmp/sr`` Tab Enter in one burst (a paste, a
    slow link to the login node) showed ``ls -d /tmp/src/`` and ran ``ls -d /tmp/sr``
    (helper-130). As bash's readline, Tab now inserts what it completes (the one completion,
    or the part common to all) before Enter is read, waiting for a remote answer
    (:func:`remote_completions`, bounded); when nothing is common the menu opens, and a line
    accepted meanwhile runs as shown. A Tab while the menu is open selects the next entry.
    """
    from prompt_toolkit.completion import CompleteEvent, get_common_complete_suffix
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("tab")
    def _(event: Any) -> None:
        buffer = event.current_buffer
        if buffer.complete_state is not None:
            buffer.complete_next()
            return
        if buffer.completer is None:
            return
        document = buffer.document
        found = list(buffer.completer.get_completions(document, CompleteEvent(completion_requested=True)))
        if len(found) == 1:
            buffer.apply_completion(found[0])
        elif found:
            common = get_common_complete_suffix(document, found)
            if common:
                buffer.insert_text(common)
            else:
                buffer.start_completion(select_first=False)

    return bindings


def install(session: Any, repl: Repl) -> None:
    """Tab completion in a PromptSession, on Tab only (a remote path costs a round trip)."""
    from prompt_toolkit.key_binding import merge_key_bindings

    session.completer = for_repl(repl)
    session.complete_while_typing = False
    session.key_bindings = merge_key_bindings([session.key_bindings, complete_at_once()])
