"""The shell server: one per rank, runs the console's commands in ONE long-lived bash.

Modules: :mod:`.loop` (:class:`ShellServer`: the loop and the conversation's actions),
:mod:`.jobs` (bash and the command: end, interrupts, kills via /proc, restarts, hangup),
:mod:`.sigint` (how the first Ctrl-C reaches the line),
:mod:`.bash` (how bash is started and a command framed), :mod:`.stdin` (a command's
stdin), :mod:`.transfers` (put and get). Which message is allowed when:
:data:`mpish.shell.conversation.SERVER`.

Theory of operation
-------------------
One bash per rank (:mod:`.bash`: how it is started, how each command is
framed with a random end marker, how its pipes are read). ``cd``, ``export``,
variables, functions, aliases and options persist simply because the shell does; the
state dump written after each command is only for recovery, and runs while the console
already has the result, so it costs no latency.

Interrupts (Ctrl-C, timeout) behave as at a terminal. The first Ctrl-C (and a timeout)
sends SIGINT to bash and to every process whose environment carries the command's
``__MPISH_JOB`` marker (the whole tree, background jobs and double-forked daemons
included; jobs of earlier commands are left alone), and chases the processes bash was
forking at that instant (:mod:`.sigint`). The interactive bash aborts the
rest of the command's line, as it would at a terminal, and runs ``__mpish_end``: what
ran before the interrupted command (``export``, ``cd``) is kept, ``$?`` is 130. A
builtin loop (``while :; do :; done``) stops the same way. Only when that is not
enough (the command ignores SIGINT: a second Ctrl-C, or ``KILL_GRACE`` after a
timeout) does the server stop bash (SIGSTOP, so that it cannot go on with the rest of
the line), send SIGTERM, then SIGKILL on the next Ctrl-C or after another
``KILL_GRACE``, and once none of the command's processes is left, replace bash with a
new one started from the last state dump; the result then says so (:data:`.jobs.RESTARTED`),
over MPI and ssh alike. A command that ends the shell itself (``exit``,
``exec``, ``set -e`` and a failure, ``kill $$``, a crash) is reported with bash's exit
status and the session continues the same way. Output still in the pipes is
forwarded; background jobs that still hold an old pipe lose their later output. When
the session ends, every process left in the sessions of the server's shells gets
SIGHUP, as ssh's hangup does (:func:`.jobs.hang_up`).

Waiting on MPI and on pipes at once, in one thread: the main loop polls MPI
(``Improbe``, never a blocking MPI call, which would busy-wait in MPICH), then waits in
``select`` on the status pipe and the output pipes with the
:class:`~mpish.shell.receive.Waiter`'s timeout: process output wakes it at once, MPI
arrivals are seen within the backoff (20 us when hot, at most 10 ms, 50 ms after 10 s
without a message: an idle server uses ~0.3% of a core). There are no threads and no queues.

Output path (the bulk of the bytes): each stream is read with ``os.readv`` into a
reused 1 MiB buffer (64 KiB until a read fills that: :class:`.bash.OutputStream`), at
most 512 KiB a read (:data:`.loop.READ_SIZE`: buffer and record stay in a core's L2
cache), and sealed straight from that buffer as raw bytes on
its own SecureChannel channel (1 = stdout, 2 = stderr; control messages are msgpack on
channel 0), so a chunk is copied once by the kernel and once by the cipher; the end
marker is looked for with ``memchr`` first (text and zeros hold no ``\x1f``). MPI keeps message
order between two ranks, so the console sees every output chunk before the command's
``Done``. A stream is read only while the server has credit: at most ``WINDOW`` = 4 MiB
read and not yet acknowledged by the console; without credit the pipe is not read and
the command blocks on a full pipe, so 10 GiB of output keep memory bounded on both
sides and lose no byte. ``get`` is read from the file in the same loop, same credit.
"""

from __future__ import annotations

from .jobs import hang_up
from .loop import ShellServer

__all__ = ["ShellServer", "hang_up"]
