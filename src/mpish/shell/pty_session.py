"""The server's side of the pty mode (``:attach``): one program in a pseudo-terminal.

Theory of operation
-------------------
The console's :class:`~mpish.shell.protocol.PtyOpen` starts a program whose stdin, stdout
and stderr are the slave side of a new pty, in a new session with that pty as its
controlling terminal (``vim``, ``top``, ``less``, an interactive shell all work). It is
started by a ``bash -c`` that first sources the rank's state file (what the rank's long-
lived shell had exported, its functions and aliases; :mod:`mpish.shell.bash`), changes to
the shell's cwd and sets ``TERM`` to the console's, then runs the command line (``eval``)
or, with no command, ``exec``s the user's ``$SHELL -i``. The server's bash is not used
and not disturbed: a pty session is not a command of the rank's shell, and what it
changes (``cd``, ``export``) stays in it.

The server reads the master side in its main loop, within the same credit as a
command's output, and sends the bytes raw on channel STDOUT (the pty merges stdout and
stderr, as a terminal does). Keys (:class:`PtyInput`) are written to the master without
blocking and credited back once written; :class:`PtyResize` is ``TIOCSWINSZ`` (the kernel
sends SIGWINCH to the program). Signals are keys: Ctrl-C, Ctrl-Z, Ctrl-\\ reach the
pty's line discipline, which signals the foreground process group as at a terminal.
:class:`PtyClose` hangs up: SIGHUP (and SIGCONT) to the program's process group, SIGKILL
after :data:`HANGUP_GRACE` to what of the group is left. The program runs under the launching
bash, which SIGHUP kills: its end is not the program's (one that ignores SIGHUP ran on, and
the console said "killed by SIGHUP"), so after a hang-up the end waits for the whole group,
and a program that had to be killed is reported as killed by SIGKILL (a user trial).
The program's end is reported once its output is drained
(EIO on the master: no process holds the slave any more) or, when a background process
keeps the slave open, :data:`DRAIN_GRACE` after its exit; the session is then hung up.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable

from . import protocol as p

HANGUP_GRACE = 1.0  # seconds between PtyClose's SIGHUP and SIGKILL
DRAIN_GRACE = 0.2  # after the program's exit: output still coming through the pty
GROUP_LOOK = 0.05  # after a hang-up: seconds between looks for what is left of the program's group
INPUT_LIMIT = p.WINDOW  # keys held for a program that does not read them (the console's window)

# $1 state file, $2 cwd, $3 TERM, $4 command line ("" = the user's shell). One line, so that
# bash's messages about the command read as under `ssh -t host CMD` (`bash: line 1: nosuchprog:
# command not found`), not with a line number of this script (line 6 when it had six).
_LAUNCH = (r'builtin . "$1" >/dev/null 2>&1; builtin cd -- "$2" 2>/dev/null; builtin export TERM="$3"; '
           r'builtin unset __MPISH_JOB; builtin set +o history; '
           r'if [[ -n $4 ]]; then builtin eval "$4"; else builtin exec "${SHELL:-bash}" -i; fi')


def set_window(fd: int, rows: int, cols: int) -> None:
    """TIOCSWINSZ on a pty (sizes are clamped to what the ioctl can carry)."""
    rows, cols = max(1, min(rows, 0xFFFF)), max(1, min(cols, 0xFFFF))
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_terminal() -> None:  # pragma: no cover - runs in the child before exec
    """The child is a new session's leader (start_new_session): make fd 0 its terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtySession:
    """One program on a pty."""

    def __init__(self, start: p.PtyOpen, executable: str, state: str, cwd: str) -> None:
        self.pty_id = start.pty_id
        master, slave = os.openpty()
        try:
            set_window(slave, start.rows, start.cols)
            self.proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc", "-c", _LAUNCH, "bash",
                 str(state), cwd, start.term or "dumb", start.command],
                executable=executable,
                stdin=slave, stdout=slave, stderr=slave,
                env={},
                cwd=cwd if os.path.isdir(cwd) else "/",
                start_new_session=True,
                preexec_fn=_controlling_terminal,  # a server has no threads: safe
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.pending = bytearray()  # keys not yet written
        self.eof = False
        self.exited_at = 0.0
        self.last_output = 0.0
        self.hangup_at = 0.0
        self.killed_at = 0.0  # when the group got SIGKILL after a hang-up
        self.looked_at, self.left = 0.0, True  # when _group_left looked, and what it saw

    def write_keys(self) -> int:
        """Write what the master takes now; bytes written."""
        if not self.pending or self.eof:
            return 0
        try:
            count = os.write(self.master, self.pending)
        except BlockingIOError:
            return 0
        except OSError:
            count = len(self.pending)  # nobody reads them any more
        del self.pending[:count]
        return count

    def read(self, limit: int) -> bytes:
        if self.eof or limit <= 0:
            return b""
        try:
            data = os.read(self.master, min(limit, p.CHUNK))
        except BlockingIOError:
            return b""
        except OSError:  # EIO: every slave descriptor is closed
            data = b""
        if not data:
            self.eof = True
        else:
            self.last_output = time.monotonic()
        return data

    def ended(self) -> bool:
        """The program exited and its output is drained (or nothing more came for a moment);
        after a hang-up, its whole process group is gone (or was given SIGKILL a while ago)."""
        now = time.monotonic()
        running = self.proc.poll() is None
        if self.hangup_at:
            left = running or self._group_left()
            if left and now - max(self.hangup_at, self.killed_at) > HANGUP_GRACE:
                if self.killed_at:  # a zombie no one reaps holds the group: end all the same
                    left = running
                else:
                    self._signal(signal.SIGKILL)
                    self.killed_at = now
            if left:
                return False
        if running:
            return False
        if not self.exited_at:
            self.exited_at = now
        return self.eof or now - max(self.exited_at, self.last_output) > DRAIN_GRACE

    def hang_up(self) -> None:
        self._signal(signal.SIGHUP)
        self._signal(signal.SIGCONT)
        self.hangup_at = time.monotonic()

    def _group_left(self) -> bool:
        """A process of the program's group is still there (one that ignored SIGHUP); looked at
        every :data:`GROUP_LOOK` seconds at most (it reads /proc)."""
        from mpish.transport.procfs import group_alive

        now = time.monotonic()
        if now - self.looked_at >= GROUP_LOOK:
            self.looked_at, self.left = now, group_alive(self.proc.pid)
        return self.left

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def close(self) -> None:
        """Hang up what is left in the program's process group and release the pty."""
        self._signal(signal.SIGHUP)
        self._signal(signal.SIGCONT)
        with contextlib.suppress(OSError):
            os.close(self.master)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=HANGUP_GRACE)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=HANGUP_GRACE)


class PtyHost:
    """What a shell server does for the pty messages (at most one pty at a time).

    ``send`` sends a control message to the console, ``send_output`` raw bytes on STDOUT.
    """

    def __init__(self, send: Callable[[object], None], send_output: Callable[[bytes], None],
                 executable: str, state: str) -> None:
        self.send, self.send_output = send, send_output
        self.executable, self.state = executable, state
        self.session: PtySession | None = None

    def open(self, start: p.PtyOpen, cwd: str, busy: bool) -> None:
        if self.session is not None or busy:
            self.send(p.PtyExit(start.pty_id, 125, 0, "a command or a pty session is running"))
            return
        try:
            self.session = PtySession(start, self.executable, self.state, cwd)
        except OSError as exc:
            self.send(p.PtyExit(start.pty_id, 127, 0, f"cannot start a pty: {exc.strerror or exc}"))

    def _current(self, pty_id: int) -> PtySession | None:
        session = self.session
        return session if session is not None and session.pty_id == pty_id else None

    def input(self, message: p.PtyInput) -> None:
        session = self._current(message.pty_id)
        if session is None or len(session.pending) + len(message.data) > INPUT_LIMIT:
            self.send(p.Credit(len(message.data)))  # not for us (or beyond the window): dropped
            return
        session.pending += message.data
        written = session.write_keys()
        if written:
            self.send(p.Credit(written))

    def resize(self, message: p.PtyResize) -> None:
        session = self._current(message.pty_id)
        if session is not None:
            set_window(session.master, message.rows, message.cols)

    def close(self, message: p.PtyClose) -> None:
        session = self._current(message.pty_id)
        if session is not None:
            session.hang_up()

    def read_fds(self) -> list[int]:
        session = self.session
        return [session.master] if session is not None and not session.eof else []

    def write_fds(self) -> list[int]:
        session = self.session
        return [session.master] if session is not None and session.pending and not session.eof else []

    def pump(self, credit: int) -> tuple[int, bool]:
        """Move keys and output; (bytes of credit used, whether anything happened)."""
        session = self.session
        if session is None:
            return 0, False
        written = session.write_keys()
        if written:
            self.send(p.Credit(written))
        used = 0
        while used < credit:
            data = session.read(credit - used)
            if not data:
                break
            used += len(data)
            self.send_output(data)
        if session.ended():
            status = session.proc.returncode
            sig = signal.SIGKILL if session.killed_at else -status if status < 0 else 0  # module doc
            self.send(p.PtyExit(session.pty_id, 128 + sig if sig else status, sig, ""))
            session.close()
            self.session = None
            return used, True
        return used, bool(used or written)

    def shutdown(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
