"""One rank's long-lived bash: how it is started, how a command is framed, its pipes.

Theory of operation
-------------------
``bash --noprofile --norc --noediting -i`` is started once per server (in its own
session), named ``bash`` ($0). It is an interactive bash on purpose: its messages then
read as a person sees them (``bash: nosuchcmd: command not found``, with no ``line N``
that would differ between ranks and split identical errors into groups), ``$?`` and
job state live as at a terminal, and a SIGINT aborts the running command list and
returns to reading commands with everything that ran before it kept (see the server's
Interrupts). Its own stdout and stderr are /dev/null (its start-up notes and prompts go
nowhere); the command's output goes to two pipes held at fds 201 and 202, and fd 200
is a status pipe. The bootstrap (the first input) turns off history and prompts,
defines the helper functions and sources the rank's state file. Every command is then
two input lines, the command's text being in a file of the server's private state
directory::

    \\builtin export __MPISH_JOB=<marker>; __mpish_status <last> && :; \\builtin . <command file> \\
        </dev/null >&201 2>&202 200>&- 201>&- 202>&-
    __mpish_end <marker>

Before any of this, a child bash checks that the text parses (:class:`SyntaxCheck`,
with the session's aliases and parse options); if it does not, bash is not written to
at all: the child's message (``bash: line 1: syntax error near unexpected token `)'``,
with no file of ours in it, the same on every rank) is the command's stderr and 2 its
status, and nothing of the text runs. The text is never parsed inside the session
before it runs (wrapping it in a function, as once tried, let ``true; }; CMD; { true``
run CMD there). Sourcing the command (rather than ``eval``) runs it as lines typed at
the prompt: a syntax error that the check let through (text that changes its own
parsing) ends that command, not the shell; inside ``.`` bash prints no job notices
(``[1] 4711`` would differ per rank and split groups) while its messages stay those of
an interactive bash. The command's stdin is /dev/null (bash's stdin is the command
pipe), or a FIFO fed with the console's stdin (:mod:`mpish.shell.server.stdin`); the command's
processes inherit no status fd.
``__MPISH_JOB=<marker>`` is exported just before the ``eval`` and unset first thing in
``__mpish_end``, so every process the command starts carries it in its environment,
which is how the server finds them. ``__mpish_status`` sets ``$?`` to the previous
command's status. The command's text never passes through bash's input, so nothing in
it can change how the line is framed. ``__mpish_end`` is on its own line so that it runs even when a
SIGINT aborted the command's line: it writes what the next check needs (``parse``:
``alias -p`` and the parse options), then the per-command random marker
(``\\x1f<32 hex>\\x1e``) to both output pipes, then ``<marker> <status> <cwd>\\0`` to the
status fd, then dumps the shell state (``cd``, ``declare -p``, ``declare -f``, ``alias
-p``, ``shopt -p``, ``set +o``) to ``state.<marker>`` and reports ``saved <marker>\\0``.
The dump is only for recovery when bash has to be replaced. A command is done when its
status has arrived and both output streams have reached the marker; a suffix of a read
that could be the start of the marker is held back until the next read.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess

from mpish.report import Diagnostics
from mpish.transport.frames import grow_pipe
from mpish.transport.memory import tune_malloc

from .. import protocol as p

log = Diagnostics(__name__)

STRIP_ENV_PREFIXES = ("PMI_", "PMIX_", "HYDI_", "HYDRA_", "MPIR_", "MPICH_INTERFACE", "MPISH_LAUNCHER_DIR")
STATUS_FD, OUT_FD, ERR_FD = 200, 201, 202
JOB_VARIABLE = "__MPISH_JOB"
STATE_COMPLETE = b"# mpish: state complete\n"
FIRST_BUFFER = 64 << 10  # an output pipe's first buffer; CHUNK once a read fills it
PARSE_FILE = "parse"  # in the state directory: what the syntax check needs of the session

_BOOTSTRAP = r"""
PS1= PS2= PS0= PS4='+ '; builtin unset PROMPT_COMMAND HISTFILE MAILPATH MAILCHECK
builtin set +o history +H
__mpish_status() { builtin return "$1"; }
exit() {
  builtin local __mpish_x=$?
  [[ ${1-} == -- ]] && builtin shift
  if (( $# )) && [[ $1 != *([[:space:]])?([-+])+([0-9])*([[:space:]]) ]]; then
    builtin printf 'bash: exit: %s: numeric argument required\n' "$1" >&2
  elif (( $# > 1 )); then
    builtin printf 'bash: exit: too many arguments\n' >&2
  fi
  (( $# )) || builtin set -- "$__mpish_x"
  builtin exit "$@" 2>/dev/null
}
ulimit() {
  if (( BASH_SUBSHELL == 0 )); then
    builtin local __mpish_n
    __mpish_n=$(builtin ulimit "$@" >/dev/null 2>&1; builtin ulimit -Sn) || :
    if [[ $__mpish_n =~ ^[0-9]+$ ]] && (( __mpish_n < FDLIMIT )); then
      builtin printf '%s%s\n' "bash: ulimit: an open-files limit below FDLIMIT would cut this shell off " \
        "from mpish (descriptors 200-202): not set; in a subshell it works, e.g. (ulimit $* && COMMAND)" >&2
      builtin return 1
    fi
  fi
  builtin ulimit "$@"
}
__mpish_end() {
  __mpish_s=$?
  builtin unset __MPISH_JOB
  { builtin alias -p; builtin shopt -p extglob expand_aliases; builtin shopt -po posix; } \
    > PARSEFILE 2>/dev/null || :
  builtin printf '\037%s\036' "$1" >&201
  builtin printf '\037%s\036' "$1" >&202
  builtin printf '%s %s %s\0' "$1" "$__mpish_s" "$PWD" >&200
  builtin unset __mpish_s
  __mpish_save "$1"
}
__mpish_save() {
  { builtin printf 'builtin cd -- %q\nbuiltin unset OLDPWD\n' "$PWD"; builtin declare -p; builtin declare -f;
    builtin alias -p; builtin shopt -p; builtin set +o;
    builtin printf '# mpish: state complete\n'; } > STATEDIR/state."$1" 2>/dev/null
  builtin printf 'saved %s\0' "$1" >&200
}
builtin shopt -s expand_aliases
builtin . STATEFILE 2>/dev/null
builtin set +o history +H
builtin history -c
"""
# ``exit`` is wrapped to silence the "exit" an interactive bash prints on stderr; its errors
# are then said by the wrapper, in bash's words (``exit 3 4``: too many arguments, status 1,
# the shell goes on; ``exit abc``: numeric argument required, the shell exits with 2); a bare
# ``exit`` leaves with the status of the command before it, kept before the wrapper's tests.
# ``ulimit`` is wrapped so that the session's own bash cannot lower its open-files limit
# below the descriptors it reports on: bash then fails to write its status (``200: Bad file
# descriptor``) and the command never ended (a subshell's limit is its own: allowed).
# Under the user's ``set -e`` (errexit) nothing of ours may fail as a simple command, or
# bash exits: ``shopt -p`` fails when an option it prints is off (``|| :``), and
# ``__mpish_status N`` sets a non-zero ``$?`` as the first part of an ``&&`` list, where
# errexit does not apply.


def initial_state(environ: dict[str, str], cwd: str) -> str:
    """The first state file: the server's environment (minus the MPI launcher's) and cwd.

    An inherited ``PWD`` that names ``cwd`` (a path through a symbolic link: /home -> /gpfs/home)
    is where the shell goes, as ``bash -c`` keeps it; a stale one is not exported."""
    pwd = environ.get("PWD", "")
    if pwd.startswith("/") and _same_directory(pwd, cwd):
        cwd = pwd
    # bash starts in the state directory: the cd would leave it in OLDPWD (`cd -` went there)
    lines = [f"builtin cd -- {shlex.quote(cwd)}", "builtin unset OLDPWD"]
    for name, value in sorted(environ.items()):
        if not name.isidentifier() or name.startswith(STRIP_ENV_PREFIXES) or name.startswith("BASH_FUNC"):
            continue
        if name == "PWD":  # the cd sets it; a stale one (a parent that changed directory) made
            continue  # $PWD, and then `cd`'s OLDPWD, name a directory the shell was never in
        lines.append(f"builtin export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _same_directory(one: str, other: str) -> bool:
    try:
        first, second = os.stat(one), os.stat(other)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def command_line(command_file: str, marker: str, last_status: int = 0, stdin: str | None = None) -> bytes:
    """The two lines bash reads for one command (see the module doc); ``$?`` is ``last_status``.

    ``stdin``: a FIFO the command reads instead of /dev/null; once bash has opened it,
    ``stdin <marker>`` is written to the status fd (:mod:`mpish.shell.server.stdin`)."""
    source = (
        f"__mpish_status {last_status & 0xFF} && :; \\builtin . {shlex.quote(str(command_file))} "
        f">&{OUT_FD} 2>&{ERR_FD} {STATUS_FD}>&- {OUT_FD}>&- {ERR_FD}>&-"
    )
    if stdin is None:
        run = f"{source} </dev/null"
    else:
        run = (f"{{ \\builtin printf 'stdin %s\\0' {marker} >&{STATUS_FD}; {source}; }} "
               f"<{shlex.quote(str(stdin))}")
    return f"\\builtin export {JOB_VARIABLE}={marker}; {run}\n__mpish_end {marker}\n".encode()


def write_command(command_file: str, command: str) -> None:
    """The command's text, for bash to source (the state directory is the server's, 0700)."""
    fd = os.open(command_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(command + "\n")


def state_is_complete(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - len(STATE_COMPLETE)))
            return handle.read() == STATE_COMPLETE
    except OSError:
        return False


def write_text(path: str, text: str) -> None:
    """``text`` as the whole of file ``path`` (Path.write_text's, without importing pathlib)."""
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:  # (a cwd's byte 0xFF)
        handle.write(text)


class SyntaxCheck:
    """Is a command's text valid bash? Asked of a child bash, never of the session's.

    The child (``bash -s`` on the command file, an environment of the locale variables
    and ``BASH_ENV`` only) first sources the session's parse-relevant state, which the
    session writes in ``__mpish_end`` before it reports a status (so it is never a
    command behind): its aliases, ``extglob``, ``expand_aliases`` and ``posix``; then
    ``set -n``: every line after it is read and parsed, none is run. The text cannot end
    that mode (``set +n`` is not run either), and the child has neither the command pipe
    nor the status fd, so nothing in the text can reach the session. On a syntax error
    it prints what bash prints for commands read from stdin (5.2: ``bash: syntax error
    near unexpected token `)'`` then the offending line; no file, no rank-dependent line)
    and exits 2: that text is the command's stderr and 2 its status, the same on every
    rank; nothing of the command runs, as at a prompt.

    A child costs about 1.1 ms of CPU (bash's start), so plain words (``hostname``, ``ls -l
    /tmp``, ``echo $X``: no quotes, operators or brackets, the first word neither reserved
    nor an alias) are known to parse and skip it. Any other outcome (exit 0, the child
    cannot start, is slow, or names a file of ours)
    lets the session source the text as before. So does a failure when the text itself
    may change how later lines parse (``shopt``, ``alias``, ``posix``: bash would apply
    them line by line, the check cannot), so that a valid command is never refused."""

    LIMIT = 64 << 10  # bytes of the message kept (the offending line is quoted in it)
    TIMEOUT = 10.0  # seconds: a text this slow to parse is left to the session
    _CHANGES_PARSING = re.compile(r"\b(shopt|alias|posix)\b")
    _SAFE_PATH = re.compile(r"[A-Za-z0-9/._+-]+")  # BASH_ENV is expanded: no $, `, quotes
    # words of these characters, $NAME expansions: nothing in them can be a syntax error
    _WORD = r"(?:[A-Za-z0-9_./:,+@%=~-]|\$[A-Za-z0-9_])+"
    _PLAIN = re.compile(rf"[ \t]*(?:{_WORD}(?:[ \t]+{_WORD})*)?[ \t]*")
    _RESERVED = frozenset(("if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while",
                           "until", "do", "done", "in", "function", "time", "coproc", "{", "}", "!",
                           "[[", "]]"))
    _ALIAS_NAME = re.compile(rb"^alias (?:-- )?([^=\s]+)=", re.M)

    def __init__(self, executable: str, state_dir: str) -> None:
        self.executable = executable
        self.state_dir = state_dir
        self.parse = os.path.join(state_dir, PARSE_FILE)  # written by __mpish_end (and here, at the start)
        rc = os.path.join(state_dir, "check")
        self.env = {name: value for name, value in os.environ.items()
                    if name in ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_MESSAGES")}
        write_text(self.parse, "builtin shopt -s expand_aliases\n")
        write_text(rc, f"builtin . {shlex.quote(self.parse)} >/dev/null 2>&1\nbuiltin set -n\n")
        if self._SAFE_PATH.fullmatch(rc):
            self.env["BASH_ENV"] = rc
            self.argv = ["bash", "-s"]
        else:  # cannot name the file safely: parse without the session's aliases and options
            self.argv = ["bash", "-O", "extglob", "-n", "-s"]

    def _plain(self, text: str) -> bool:
        """One simple command of plain words (``hostname``, ``ls -l /tmp``, ``echo $X``),
        whose first word is neither a reserved word nor an alias: it parses, no child needed."""
        if not self._PLAIN.fullmatch(text):
            return False
        first = text.split(None, 1)[0] if text.strip() else ""
        if first in self._RESERVED:
            return False
        try:
            with open(self.parse, "rb") as handle:
                names = self._ALIAS_NAME.findall(handle.read())
        except OSError:
            return False
        return first.encode() not in names

    def error(self, command_file: str, text: str) -> bytes | None:
        """bash's message if the text does not parse, else None (then it runs)."""
        if self._plain(text):
            return None
        try:
            with open(command_file, "rb") as stdin:
                child = subprocess.run(self.argv, executable=self.executable, stdin=stdin,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env,
                                       cwd=self.state_dir, close_fds=True, timeout=self.TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        message = child.stderr
        if (child.returncode != 2 or not message or str(self.state_dir).encode() in message
                or self._CHANGES_PARSING.search(text)):
            return None
        if len(message) > self.LIMIT:
            message = message[: self.LIMIT - 4] + b"...\n"
        return message


class OutputStream:
    """One output pipe of bash: a reused buffer, and the end-marker search.

    The buffer starts small (:data:`FIRST_BUFFER`: a ``true`` writes only its end marker)
    and becomes the full record size (``CHUNK``) once a read fills it: bulk output then
    goes in large reads, and a session that never has any allocates (and zero-fills)
    no 2 MiB for it."""

    def __init__(self, stream: int, fd: int) -> None:
        self.stream = stream
        self.fd = fd
        self.buffer = bytearray(FIRST_BUFFER)
        self.view = memoryview(self.buffer)
        self.held = 0  # bytes at the start of the buffer that may begin a marker
        self.ended = False  # the current command's marker was seen
        self.eof = False
        self.filled = False  # the last read filled all the space it had: grow before the next

    def read(self, limit: int) -> int:
        """Read at most ``limit`` bytes after the held ones; bytes now in the buffer."""
        if self.filled and len(self.buffer) < p.CHUNK:
            self._grow()
        space = min(limit, len(self.buffer) - self.held)
        try:
            count = os.readv(self.fd, [self.view[self.held : self.held + space]])
        except BlockingIOError:
            return -1
        except OSError:
            count = 0
        if count == 0:
            self.eof = True
        self.filled = count == len(self.buffer) - self.held
        return self.held + count

    def _grow(self) -> None:
        """The full-size buffer, holding the held bytes; malloc tuned for bulk from now on."""
        tune_malloc()
        bigger = bytearray(p.CHUNK)
        bigger[: self.held] = self.buffer[: self.held]
        self.buffer = bigger
        self.view = memoryview(bigger)

    def split(self, total: int, marker: bytes) -> int:
        """Bytes of the buffer (of ``total``) that are output; sets ``ended`` at the marker."""
        buffer = self.buffer
        first = buffer.find(marker[:1], 0, total)  # memchr: text and zeros hold no \x1f
        if first < 0:
            self.held = 0
            return total
        at = buffer.find(marker, first, total)
        if at >= 0:  # what follows the marker is a background job's: kept for the next command
            self.ended = True
            self.held = total - at - len(marker)
            return at
        keep = 0
        if not self.eof:
            start = max(first, total - len(marker) + 1)
            first = buffer.find(marker[:1], start, total)
            while first >= 0:
                if buffer.endswith(marker[: total - first], first, total):
                    keep = total - first
                    break
                first = buffer.find(marker[:1], first + 1, total)
        self.held = keep
        return total - keep

    def keep_tail(self, total: int) -> None:
        if self.held:
            self.buffer[: self.held] = self.buffer[total - self.held : total]


class Bash:
    """The rank's long-lived bash and its pipes."""

    def __init__(self, executable: str, state_dir: str, state: str) -> None:
        status_r, status_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "--noediting", "-i"],  # $0 is "bash" in its messages
                executable=executable,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={},
                cwd=state_dir,
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_w, out_w, err_w),
                bufsize=0,
            )
        except OSError:
            for fd in (status_r, status_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        for fd in (status_w, out_w, err_w):
            os.close(fd)
        assert self.proc.stdin is not None
        self.stdin = self.proc.stdin
        self.status_fd = status_r
        self.program = self._program()  # bash's executable, as the kernel has it (execed)
        self.status = bytearray()
        self.status_eof = False
        self.out = OutputStream(p.STDOUT, out_r)
        self.err = OutputStream(p.STDERR, err_r)
        for fd in (self.out.fd, self.err.fd, self.status_fd, self.stdin.fileno()):
            if fd != self.stdin.fileno():
                os.set_blocking(fd, False)
            grow_pipe(fd)  # larger pipes: fewer, larger reads
        quoted_dir, quoted_state = shlex.quote(str(state_dir)), shlex.quote(str(state))
        quoted_parse = shlex.quote(os.path.join(state_dir, PARSE_FILE))  # read by SyntaxCheck
        bootstrap = (_BOOTSTRAP.replace("STATEDIR", quoted_dir).replace("STATEFILE", quoted_state)
                     .replace("PARSEFILE", quoted_parse).replace("FDLIMIT", str(ERR_FD + 1)))
        moves = ((STATUS_FD, status_w), (OUT_FD, out_w), (ERR_FD, err_w))
        fds = "exec " + " ".join(f"{to}>&{fd} {fd}>&-" for to, fd in moves) + "\n"
        self.write((fds + bootstrap).encode())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write(self, data: bytes) -> bool:
        """Write to bash's stdin (bash reads it as fast as it parses: no deadlock)."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.stdin.fileno(), view) :]
            return True
        except OSError:
            return False

    def _program(self) -> str:
        try:
            return os.readlink(f"/proc/{self.proc.pid}/exe")
        except OSError:
            return ""

    def execed(self) -> bool:
        """Whether bash has become another program (``exec PROGRAM``: its status descriptor
        closed with the exec), rather than lost that descriptor while still bash (a Ctrl-C
        at the wrong moment of its redirections: then it is replaced, as a bash that exited)."""
        now = self._program()
        return bool(now and self.program and now != self.program)

    def read_status(self) -> list[bytes]:
        """Whole status records (NUL-terminated) that have arrived."""
        while True:
            try:
                data = os.read(self.status_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.status_eof = True
                break
            self.status += data
        *records, rest = bytes(self.status).split(b"\0")
        self.status = bytearray(rest)
        return records

    def close(self, sig: int = signal.SIGKILL, grace: float = 0.0) -> int:
        """Kill bash (only bash: jobs of earlier commands live on); its wait status.

        With a ``grace`` (the end of a session, bash idle at its prompt): first its input is
        closed, so that it ends as a shell does at the end of its input, running the user's
        ``trap ... EXIT`` (cleanup of temporary files, say); it is killed only if it has not
        ended within ``grace`` seconds. What the trap prints is not shown (no command runs)."""
        if grace > 0:
            with contextlib.suppress(OSError):
                self.stdin.close()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.debug("bash %d did not end within %g s of its input's end (its EXIT trap?): killed",
                          self.proc.pid, grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.proc.pid, sig)
            os.kill(self.proc.pid, signal.SIGCONT)
        with contextlib.suppress(OSError):
            self.stdin.close()
        for fd in (self.out.fd, self.err.fd, self.status_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return -signal.SIGKILL
