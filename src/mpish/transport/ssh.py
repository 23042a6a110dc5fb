"""The system ``ssh`` binary as a transport: its command line, its process, its errors.

Theory of operation
-------------------
:class:`SshProcess` runs ``ssh [user options] -T -o BatchMode=yes -- HOST COMMAND`` as a
subprocess with three pipes. Going through the user's own ``ssh`` keeps everything the
user set up (``~/.ssh/config``, agents, ``ProxyJump``, ``ControlMaster``, certificates);
``BatchMode=yes`` makes it fail instead of prompting, so nothing can hang on a password
or host-key question. ``stdin``/``stdout`` (:attr:`SshProcess.write_fd`,
:attr:`SshProcess.read_fd`) are left to the caller's framing: the shell's pipe links
(:mod:`mpish.transport.pipe`) or the calls agent's frame stream
(:mod:`mpish.transport.frames`); ``stderr`` is collected by a thread (the last 64 KiB)
for error messages. The shell also shows it (``show_stderr``), as clush and ``ssh host cmd``
do, each line ``host: line``, escaped: ssh's warnings, ``-v``'s debug lines, a login's errors.
What comes before the remote side's hello is held until it greets: a host that never greets
has those lines in its error, not twice.

ssh runs in a session of its own (``start_new_session``): the terminal's Ctrl-C never
reaches it (the console reads the key and forwards it as a message), and its process group
is ssh and what it started, a ``ProxyCommand`` or ProxyJump's ``ssh -W``. So ssh is ended
through its group (:meth:`SshProcess.signal_group`): ssh ends its ProxyCommand only on its own way
out, and killed while it connects it left one running for ever, reparented to init (a clush
user's finding: ``ProxyCommand sleep 1000`` outlived a Ctrl-C). A ControlMaster that ssh sent
to the background (``ControlPersist``) is in a session of its own (daemon(3)) and stays.

When the pipes end, :meth:`SshProcess.failure` reads ssh's exit status and stderr and
:func:`classify` turns them into one of the error classes below, each saying what
happened and what to do. The remote side's own kinds of failure (it could not start,
it ended unexpectedly) are subclassed by each service with its own words
(:mod:`mpish.calls.errors`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence

from mpish.wire.errors import AuthenticationError, TransportBroken
from mpish.wire.text import escape

from .frames import grow_pipe
from .ssh_ciphers import cipher_options

__all__ = [
    "AuthenticationRefused",
    "HostUnreachable",
    "RemoteEnded",
    "RemotePythonMissing",
    "RemoteStartFailed",
    "SshError",
    "SshFailed",
    "SshProcess",
    "classify",
    "ssh_argv",
]

STDERR_KEEP = 64 * 1024
# s: once ssh has exited, its stderr is read until it has been quiet this long, not until its
# end: a ProxyCommand's child can hold the pipe open long after ssh (a Ctrl-C waited 2 s for it)
STDERR_LINGER = 0.25
LINE_LIMIT = 4096  # bytes of ssh's stderr shown as one line at most (the rest follows in pieces)
BOOTSTRAP_MARK = "mpish-bootstrap:"  # starts the shipped code's own error lines on stderr
ENDED_MARK = "mpish: the remote process ended: "  # a remote side's last word on how its worker ended


# --- errors a user meets --------------------------------------------------------------


class SshError(TransportBroken):
    """ssh or the remote side failed; ``host``, ``exit_status`` and ``stderr`` say how."""

    def __init__(
        self, message: str, *, host: str = "", exit_status: int | None = None, stderr: str = ""
    ) -> None:
        super().__init__(message)
        self.host = host
        self.exit_status = exit_status
        self.stderr = stderr


class HostUnreachable(SshError):
    """ssh could not reach the host (refused, no route, unknown name, timed out)."""


class AuthenticationRefused(SshError, AuthenticationError):
    """The host refused every key ssh offered (``Permission denied``): an authentication
    failure (``except AuthenticationError`` sees it) met by the transport."""


class RemotePythonMissing(SshError):
    """The Python interpreter named by ``python=`` does not exist on the host (exit 127)."""


class RemoteStartFailed(SshError):
    """The remote side could not start (Python too old, or its code could not load)."""


class RemoteEnded(SshError):
    """The remote side, or the ssh connection, ended while it was in use."""


class SshFailed(SshError):
    """ssh or the remote side failed before it started, in a way not classified above."""


# --- the ssh process --------------------------------------------------------------------


def ssh_argv(
    host: str,
    command: Sequence[str],
    *,
    ssh: str = "ssh",
    options: Sequence[str] = (),
    batch_mode: bool = True,
    connect_timeout: float | None = None,
) -> list[str]:
    """The ssh command line: user options first (ssh keeps the first value it sees), then
    ours: after ``-T`` (:meth:`SshProcess.probe` suggests the user's only), AES-GCM preferred
    where it is faster and nobody chose a cipher (ssh_ciphers.py)."""
    argv = [ssh, *options, "-T", *cipher_options(ssh, options)]
    if batch_mode:
        argv += ["-o", "BatchMode=yes"]
    if connect_timeout is not None:
        argv += ["-o", f"ConnectTimeout={max(1, round(connect_timeout))}"]
    # "--" ends the options: a host name can never be read as an option.
    return [*argv, "--", host, shlex.join(command)]


class SshProcess:
    """A running ``ssh HOST COMMAND``: its stdin and stdout for the caller, stderr captured."""

    def __init__(self, host: str, argv: Sequence[str], *, what: str = "the remote side",
                 ended: type[RemoteEnded] = RemoteEnded,
                 start_failed: type[RemoteStartFailed] = RemoteStartFailed,
                 echo_stderr: bool = False, show_stderr: bool = False, again: str = "Connect again.") -> None:
        self.host = host
        self.again = again  # the advice after a loss in use (the shell's console has :reconnect)
        self.echo_stderr = echo_stderr  # copy ssh's stderr to ours as it comes, each line "host: ..."
        # the same once the remote side has greeted: what came before is shown then (ssh's warnings,
        # a .bashrc's errors, as clush and ssh show them), or only in the error if it never greets
        self.show_stderr = show_stderr
        self._held: list[bytes] = []  # complete lines before the greeting (show_stderr)
        self._held_size = 0
        self._greeted = False
        self._echo_lock = threading.Lock()
        self.argv = list(argv)
        raise_descriptor_limit()  # once per process
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise SshFailed(
                f"cannot run {self.argv[0]!r}: {exc.strerror}; install the OpenSSH client (its ssh on PATH)"
                + ("" if self.argv[0] == "ssh" else ", or give the path of an ssh that exists"),
                host=host,
            ) from exc
        except OSError as exc:  # out of descriptors or processes: this many hosts at once
            raise SshFailed(f"{host}: cannot start ssh: {exc.strerror} (too many connections at once "
                            "for this process's limits: lower the fan-out, -f, or raise `ulimit -n`/"
                            "`ulimit -u`)", host=host) from exc
        assert self.process.stdin and self.process.stdout and self.process.stderr
        self._stdin = self.process.stdin
        self._stdout = self.process.stdout
        self._stderr = self.process.stderr
        for pipe in (self._stdin, self._stdout):
            grow_pipe(pipe.fileno())
            os.set_blocking(pipe.fileno(), False)
        self._stderr_tail: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._stderr_thread = threading.Thread(
            target=self._collect_stderr, name=f"mpish-ssh-stderr-{host}", daemon=True
        )
        try:
            self._stderr_thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            self.signal_group(signal.SIGKILL)
            self.process.wait()
            for pipe in (self._stdin, self._stdout, self._stderr):
                with contextlib.suppress(OSError):
                    pipe.close()
            raise SshFailed(f"{host}: cannot start ssh: {exc} (too many connections at once: lower "
                            "the fan-out, -f)", host=host) from exc
        self.read_fd = self._stdout.fileno()  # ssh's stdout: what the remote side writes
        self.write_fd = self._stdin.fileno()
        self.what = what  # how messages name the remote side
        self._kinds = (ended, start_failed)
        self.closed = False

    @property
    def greeted(self) -> bool:
        """Set by the caller once the remote side's hello arrived: its losses are then told
        as a joined host's, and with ``show_stderr`` the lines held so far are shown."""
        return self._greeted

    @greeted.setter
    def greeted(self, value: bool) -> None:
        with self._echo_lock:
            held, self._held = (self._held, []) if value and not self._greeted else ([], self._held)
            self._greeted = value
            self._echo(held)

    def _echo(self, lines: list[bytes]) -> None:
        """``lines`` of ssh's stderr on ours, each ``host: line``, escaped, as everything of the
        peer's inside mpish's own lines (a host's escape sequences must not pose as mpish's
        words: security review)."""
        if lines:
            label = f"{self.host}: ".encode(errors="replace")
            with contextlib.suppress(OSError):
                os.write(2, b"".join(label + escape(line).encode() + b"\n" for line in lines))

    def _shown(self, lines: list[bytes]) -> None:
        """Complete lines of ssh's stderr, shown now or held until the greeting (see __init__)."""
        if self.echo_stderr:
            self._echo(lines)
            return
        with self._echo_lock:
            if self._greeted:
                self._echo(lines)
                return
            for line in lines:
                if self._held_size < STDERR_KEEP:
                    self._held.append(line)
                    self._held_size += len(line)

    def _collect_stderr(self) -> None:
        """Keep the end of ssh's stderr, until its end or :data:`STDERR_LINGER` of quiet after
        ssh's exit; this thread closes the pipe (nobody else closes an fd it may be reading)."""
        try:
            self._read_stderr(self._stderr.fileno())
        finally:
            with contextlib.suppress(OSError):
                self._stderr.close()

    def _read_stderr(self, fd: int) -> None:
        partial = b""
        poller = select.poll()  # not select(): descriptors past 1,024 with thousands of hosts
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll(STDERR_LINGER * 1000):
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
            elif self.process.poll() is None:
                continue  # quiet while ssh runs
            else:
                data = b""  # ssh has ended and its pipe is quiet: what may come is a child's
            if (self.echo_stderr or self.show_stderr) and (data or partial):
                lines = (partial + data).split(b"\n")
                partial = lines.pop() if data else b""
                if len(partial) > LINE_LIMIT:  # no newline for long (a \r spinner): shown in pieces
                    lines += [partial[at : at + LINE_LIMIT] for at in range(0, len(partial), LINE_LIMIT)]
                    partial = b""
                self._shown([line.rstrip(b"\r") for line in lines if line or data])
            if not data:
                return
            self._stderr_tail.append(data)
            self._stderr_size += len(data)
            while self._stderr_size > STDERR_KEEP and len(self._stderr_tail) > 1:
                self._stderr_size -= len(self._stderr_tail.popleft())

    def stderr_text(self) -> str:
        """The end of ssh's stderr (the remote's too), escaped: it goes into our messages."""
        text = b"".join(self._stderr_tail).replace(b"\r\n", b"\n")
        return escape(text.lstrip(b"\n").rstrip(), keep_newlines=True)  # the first line's indent kept

    def failure(self, wait: float = 5.0) -> SshError:
        """The error that explains why the pipes ended (waits a bounded time for ssh)."""
        try:
            status: int | None = self.process.wait(wait)
        except subprocess.TimeoutExpired:
            status = None
        self._stderr_thread.join(1.0)
        ended, start_failed = self._kinds
        return classify(self.host, status, self.stderr_text(), greeted=self.greeted, what=self.what,
                        ended=ended, start_failed=start_failed, probe=self.probe(), again=self.again)

    def probe(self) -> str:
        """``ssh [the user's options] HOST``, as a failure's advice suggests trying it: the options
        of an :func:`ssh_argv` command line (before its ``-T``), so that it reaches the same host."""
        argv = self.argv
        options = argv[1:argv.index("-T")] if "-T" in argv and "--" in argv else []
        return shlex.join([argv[0], *options, self.host])

    def ended(self) -> bool:
        """ssh has exited and its stderr is read to the end (close() will not wait)."""
        return self.process.poll() is not None and not self._stderr_thread.is_alive()

    def hang_up(self) -> None:
        """Close ssh's stdin: the remote side sees the end and exits (close() waits for it)."""
        with contextlib.suppress(OSError):
            self._stdin.close()

    def signal_group(self, signum: int) -> None:
        """``signum`` to ssh's process group: ssh and what it started (module doc). Not once
        ssh is reaped: its pid, and so the group's id, may then be another process's."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except OSError:  # not its group's leader after all: ssh alone, as before
            with contextlib.suppress(OSError):
                self.process.send_signal(signum)

    def close(self, wait: float = 5.0) -> None:
        """End ssh: close its stdin (the remote side exits on EOF), then terminate, then kill
        (ssh's process group: its ProxyCommand too)."""
        if self.closed:
            return
        self.closed = True
        self.hang_up()
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(2.0)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait()
        self._stderr_thread.join(2.0)  # it ends within STDERR_LINGER of ssh's exit, and closes stderr
        with contextlib.suppress(OSError):
            self._stdout.close()


@functools.cache
def raise_descriptor_limit() -> None:
    """Let this process open as many files as it is allowed to (the soft limit up to the hard
    one): each host's ssh takes three pipes, and a soft limit of 1,024 (a common default)
    ran out near 330 hosts, with a Python traceback."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard  # Linux's own ceiling (nr_open)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, OSError, ValueError):
        pass


def wait_for_exits(processes: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """Sleep until every process has exited, or ``timeout``: in one ``poll`` on their pidfds
    (Linux 5.3+), woken by each exit. ``Popen.wait(timeout)`` instead sleeps in steps of up
    to 50 ms, which cost ``mpish ssh -c`` ~20-70 ms at its end; where pidfds are missing this
    returns at once and the caller's ``wait`` does it that way."""
    waiting: dict[int, subprocess.Popen[bytes]] = {}
    poller = select.poll()
    try:
        for process in processes:
            if process.returncode is None:
                fd = os.pidfd_open(process.pid)
                waiting[fd] = process
                poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while waiting and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(InterruptedError):
                for fd, _ in poller.poll(max(1, int(left * 1000))):
                    poller.unregister(fd)
                    os.close(fd)
                    waiting.pop(fd).poll()  # reaps it
    except (AttributeError, OSError):  # no os.pidfd_open, or a kernel without pidfds
        pass
    finally:
        for fd in waiting:
            os.close(fd)


def classify(
    host: str,
    status: int | None,
    stderr: str,
    *,
    greeted: bool,
    what: str = "the remote side",
    ended: type[RemoteEnded] = RemoteEnded,
    start_failed: type[RemoteStartFailed] = RemoteStartFailed,
    probe: str = "",
    again: str = "Connect again.",
) -> SshError:
    """Turn ssh's exit status and stderr into the error a user can act on; ``what`` names
    the remote side, ``ended``/``start_failed`` are the service's own error classes, ``probe``
    the ssh command the advice suggests (``ssh HOST`` with the user's options)."""
    detail = f"\n--- ssh stderr ---\n{stderr}" if stderr else ""

    def make(kind: type[SshError], text: str) -> SshError:
        if probe:
            text = text.replace(f"`ssh {host} ", f"`{probe} ")
        return kind(text + detail, host=host, exit_status=status, stderr=stderr)

    lowered = stderr.lower()
    if greeted:
        said = [line.split(ENDED_MARK, 1)[1].strip() for line in stderr.splitlines() if ENDED_MARK in line]
        if said:  # the remote side saw its worker end (calls/front.py)
            return make(ended, f"{host}: {what} ended: {said[-1]}. {again}")
        how = "still running" if status is None else _status_words(status)
        return make(
            ended,
            f"{host}: {what} ended unexpectedly ({how}); it was killed, "
            f"crashed, or the connection dropped. {again}",
        )
    if status == 255 and "permission denied" in lowered:
        return make(
            AuthenticationRefused,
            f"{host}: authentication refused: the host accepted none of the keys ssh offered. "
            f"Check `ssh {host} true` works without a prompt (ssh-copy-id, ssh-add, "
            f"IdentityFile in ~/.ssh/config).",
        )
    if status == 255 and "host key verification failed" in lowered:  # unknown, or changed
        return make(
            AuthenticationRefused,
            f"{host}: host key not verified: ssh does not trust the key {host} presented (not in "
            f"known_hosts, or different from the one there). Run `ssh {host} true` to see "
            f"which; accept a new key only after checking its fingerprint.",
        )
    if status == 255 and any(
        s in lowered
        for s in (
            "connection refused",
            "could not resolve",
            "no route to host",
            "timed out",
            "network is unreachable",
            "name or service not known",
            "connection closed",
            "host is down",
            "connect to host",
        )
    ):
        return make(
            HostUnreachable,
            f"{host}: host unreachable: ssh could not connect. Check the name, that sshd runs "
            f"there and the network/ProxyJump path (`ssh {host} true`).",
        )
    if status == 127:
        return make(
            RemotePythonMissing,
            f"{host}: the remote Python was not found (exit 127). Pass python= with a "
            f"path that exists on {host} (e.g. python='/usr/bin/python3').",
        )
    if BOOTSTRAP_MARK in stderr:
        reason = next(line for line in stderr.splitlines() if BOOTSTRAP_MARK in line)
        return make(
            start_failed,
            f"{host}: {what} could not start there ({reason.split(BOOTSTRAP_MARK, 1)[1].strip()}). "
            f"Point python= (mpish ssh --python) at a Python 3.10 or later.",
        )
    if "no module named" in lowered:
        return make(
            start_failed,
            f"{host}: mpish is not installed for the remote Python. Install it there: "
            f"`ssh {host} python3 -m pip install --user mpish` (or point python= at a "
            f"virtualenv that has it).",
        )
    if status == 255:
        return make(SshFailed, f"{host}: ssh failed (exit status 255).")
    if status is None:  # the pipe ended, ssh still runs
        return make(SshFailed, f"{host}: {what} stopped answering before it started (ssh still running).")
    return make(SshFailed, f"{host}: {what} ended before it started ({_status_words(status)}).")


def _status_words(status: int) -> str:
    """ssh's end as Popen's returncode gives it: ``exit status N``, or the signal that killed
    it (``-9`` read "exit status -9": helper-144)."""
    if status >= 0:
        return f"exit status {status}"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    return f"ssh was killed by {name}"
