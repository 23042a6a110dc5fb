"""The shell protocol: msgpack messages on the :class:`~mpish.wire.codec.Codec`.

Every message travels inside a :class:`~mpish.wire.channel.SecureChannel` between the
console (rank 0) and one shell server. Conversation::

    server  -> console  Hello                               once, after the handshake
    console -> server   Environ* (the last with ``last``)   once, after the Hello (embedded MPI only)
    console -> server   Run Input* | Interrupt | Credit | PutStart Chunk* PutEnd | GetStart
    server  -> console  (raw output chunks)*  Done          for each Run
                        Signalled                           for each Interrupt of the running command
                        Credit                              for Chunk and Input bytes written
                        Chunk* GetEnd                       for each GetStart
                        PutDone                             for each PutEnd
    console -> server   PtyOpen (PtyInput | PtyResize)* [PtyClose]   one program in a pty
    server  -> console  (raw output chunks)* PtyExit        for each PtyOpen
                        Credit                              for PtyInput bytes written
    console -> server   Complete
    server  -> console  Completions                         for each Complete
    console -> server   TreePut (Entry [Chunk* FileEnd])* TreeEnd      :put -r
    server  -> console  Credit                              for Chunk bytes and each Entry
                        PutDone                             for each TreeEnd
    console -> server   TreeGet [Interrupt]                 :get -r
    server  -> console  (Entry [Chunk* FileEnd])* GetEnd  for each TreeGet

These messages travel on channel 0 of the secure channel. A command's output is not
wrapped: its stdout and stderr bytes are sent raw, as they were read from the pipe, on
channels :data:`STDOUT` and :data:`STDERR` (no msgpack copy on the bulk path). A file's
bytes (:class:`Chunk`) travel the same way on channel :data:`FILE`: the record's data is the
chunk, nothing else (no msgpack, no copy behind a header over ssh). A chunk carries no
transfer id: a conversation has one transfer at a time, and its chunks come between its
start and its end; each side takes a chunk only in a state that receives one
(:mod:`mpish.shell.conversation`), and the size (and over MPI the SHA-256) in the end
message is checked against what was written. MPI keeps the order of one sender's
messages, as the pipes of ssh do, so every chunk arrives before the command's Done or the
transfer's end.
The session ends with the secure channel's close record. Which message each side may
receive in which state: :mod:`mpish.shell.conversation`.

Flow control: a sender of bulk bytes (output, Chunk, Input) never has more than
``WINDOW`` bytes that the other side has not returned with a :class:`Credit`; a tree's
:class:`Entry` counts as :data:`ENTRY_COST` bytes, so a tree of empty directories is
flow-controlled too.
"""

# No "from __future__ import annotations": the codec reads these annotations (get_type_hints),
# and as objects they need no compile of their text on every start of a shell server.

from typing import Annotated, NamedTuple

from mpish.wire.codec import Codec, MaxLen
from mpish.wire.message import Frozen, frozen

PROTOCOL_VERSION = 9  # 2: output as raw bytes on channels 1 and 2; 3: Done.note; 4: stdin;
# 5: pty mode (PtyOpen ... PtyExit), path completion (Complete, Completions); 6: trees (:put -r, :get -r);
# 7: a file's bytes raw on channel 3 (Chunk), no longer the msgpack messages PutChunk and GetChunk;
# Signalled (output sent before it was in flight at the Ctrl-C: the console discards it);
# 8: GetEnd.mode (a file got with :get keeps its permission bits, as cp and scp); Environ, the
#    embedded console's environment for its spawned servers (never through the launcher);
# 9: PutEnd.size (a put's file may hold more than its stat size said: /proc, /sys); times and
#    ``preserve`` (-p, as scp -p and clush -p: times and exact modes) in PutStart, GetEnd, Entry, TreePut
CHUNK = (1 << 20) - 256  # bulk bytes per message: one message is one record (record.py)
WINDOW = 4 * 1024 * 1024  # unacknowledged bulk bytes per server and direction
CONTROL = 0  # secure-channel channel of the msgpack messages below
STDOUT = 1  # secure-channel channel of raw stdout bytes (also the stream id of a sink)
STDERR = 2  # secure-channel channel of raw stderr bytes
FILE = 3  # secure-channel channel of a file's raw bytes (Chunk), either way
ENTRY_COST = 512  # bulk bytes an Entry counts for in the window
ENVIRON_PIECE = 512 << 10  # bytes of the console's environment per Environ message
ENVIRON_MAX = 16 << 20  # bytes of environment a server takes in all

CODEC = Codec("mpish.shell", max_bytes=1 << 20, max_items=64)

Text = Annotated[str, MaxLen(1 << 16)]
Command = Annotated[str, MaxLen(1 << 20)]
Path = Annotated[str, MaxLen(4096)]


@CODEC.message(1)
@frozen
class Hello(Frozen):
    """The server's first message: who it is and where its shell starts."""

    protocol: int
    host: Text
    pid: int
    cwd: Path


@CODEC.message(2)
@frozen
class Run(Frozen):
    """Run ``command`` through the rank's persistent shell; ``timeout`` <= 0 means none.

    ``stdin``: the command reads the :class:`Input` chunks that follow (else /dev/null)."""

    cmd_id: int
    command: Command
    timeout: float
    stdin: bool


@CODEC.message(3)
@frozen
class Interrupt(Frozen):
    """Ctrl-C: SIGINT to the command's process group (SIGKILL from the second on)."""

    cmd_id: int


@CODEC.message(4)
@frozen
class Credit(Frozen):
    """``nbytes`` more bulk bytes may be sent (they were consumed)."""

    nbytes: int


# message 5 (Output) was retired in protocol 2: output is raw on channels 1 and 2


@CODEC.message(6)
@frozen
class Done(Frozen):
    """The command ended. ``signal`` is 0 unless a signal killed it (exit is then 128+sig).

    ``error``: the command could not run; ``note``: it ran, and the shell had to be
    replaced (it exited, or ignored SIGINT), its state restored from before the command.
    """

    cmd_id: int
    exit: int
    signal: int
    seconds: float
    cwd: Path
    timed_out: bool
    peak_rss_kib: int
    error: Text
    note: Text


@CODEC.message(7)
@frozen
class PutStart(Frozen):
    """Start writing ``path`` (relative paths are relative to the shell's cwd); a directory
    (or a path ending in ``/``) receives the file under ``name``, as with cp."""

    xfer_id: int
    path: Path
    size: int
    mode: int
    name: Path
    preserve: bool = False  # -p: the copy gets these times and exactly this mode (no umask)
    atime_ns: int = 0
    mtime_ns: int = 0


class Chunk(NamedTuple):
    """Bytes of the file being sent (put: to the server; get: to the console), raw on
    channel :data:`FILE`: not a msgpack message (the module doc). ``data`` may be a view
    of the record it arrived in."""

    data: bytes | memoryview


# message 8 (PutChunk) was retired in protocol 7: a file's bytes are a raw Chunk on channel FILE


@CODEC.message(9)
@frozen
class PutEnd(Frozen):
    """The last chunk was sent: ``size`` bytes in all (PutStart.size is the file's size when
    it was opened, a promise only a regular file keeps: /proc's and /sys's say 0),
    ``sha256`` is the digest of the whole file."""

    xfer_id: int
    size: int
    sha256: bytes
    aborted: bool


@CODEC.message(10)
@frozen
class PutDone(Frozen):
    """The server's verdict: ``error`` is empty when the file is complete and verified."""

    xfer_id: int
    size: int
    sha256: bytes
    error: Text


@CODEC.message(11)
@frozen
class GetStart(Frozen):
    xfer_id: int
    path: Path


# message 12 (GetChunk) was retired in protocol 7, as PutChunk (8)


@CODEC.message(13)
@frozen
class GetEnd(Frozen):
    """End of a get: ``error`` is empty on success; ``sha256`` covers every chunk sent;
    ``mode``: a file's permission bits (the copy gets them less the umask, as cp and scp)."""

    xfer_id: int
    size: int
    sha256: bytes
    error: Text
    mode: int
    atime_ns: int = 0  # the file's times, for :get -p
    mtime_ns: int = 0


# message 14 (Quit) was never sent: the session ends with the secure channel's close record


@CODEC.message(15)
@frozen
class Input(Frozen):
    """Bytes for the running command's stdin; ``eof``: there are no more (data is empty)."""

    cmd_id: int
    data: bytes
    eof: bool


@CODEC.message(16)
@frozen
class PtyOpen(Frozen):
    """Run ``command`` (empty: the user's shell) in a pseudo-terminal of ``rows`` x ``cols``,
    in the shell's cwd and exported environment, ``TERM`` set to ``term``. Its output comes
    raw on channel STDOUT, then :class:`PtyExit`."""

    pty_id: int
    command: Command
    rows: int
    cols: int
    term: Text


@CODEC.message(17)
@frozen
class PtyInput(Frozen):
    """Keys for the pty (within the bulk window: the server returns a Credit once written)."""

    pty_id: int
    data: bytes


@CODEC.message(18)
@frozen
class PtyResize(Frozen):
    """The console's window changed (SIGWINCH): TIOCSWINSZ on the pty."""

    pty_id: int
    rows: int
    cols: int


@CODEC.message(19)
@frozen
class PtyClose(Frozen):
    """Hang up (the console's escape ``~.``, or its end): SIGHUP to the pty's session,
    SIGKILL if it is still there a moment later."""

    pty_id: int


@CODEC.message(20)
@frozen
class PtyExit(Frozen):
    """The pty's program ended: exit status (128+signal when killed); ``error``: it could
    not start."""

    pty_id: int
    exit: int
    signal: int
    error: Text


@CODEC.message(21)
@frozen
class Complete(Frozen):
    """Names that complete ``prefix`` as a path (relative to the shell's cwd, ``~`` expanded)."""

    req_id: int
    prefix: Path


@CODEC.message(22)
@frozen
class Completions(Frozen):
    """The completions, NUL-separated (a name cannot hold a NUL); directories end in ``/``."""

    req_id: int
    names: Command


@CODEC.message(23)
@frozen
class TreePut(Frozen):
    """Receive a tree (:put -r) at ``path``: an existing directory receives it as
    ``path/name``, else ``path`` becomes the copy (as cp -r); ``name`` empty: always ``path``.
    ``into``: always ``path/name``, ``path`` being an existing directory (--copy's --dest)."""

    xfer_id: int
    path: Path
    name: Path
    into: bool = False
    preserve: bool = False  # -p: the entries' times and exact modes (no umask)


@CODEC.message(24)
@frozen
class Entry(Frozen):
    """One entry of a tree, parents first: ``path`` relative to the tree's root ("" is the
    root), ``kind`` dir, file (its bytes follow as chunks, then :class:`FileEnd`), link
    (``target`` is the link's text) or skip (not sent: ``target`` says why)."""

    xfer_id: int
    path: Path
    kind: Annotated[str, MaxLen(8)]
    mode: int
    size: int
    target: Text
    atime_ns: int = 0  # a file's or directory's times (for -p)
    mtime_ns: int = 0


@CODEC.message(25)
@frozen
class FileEnd(Frozen):
    """The end of a tree's file: the digest of its bytes, or why the sender stopped."""

    xfer_id: int
    size: int
    sha256: bytes
    error: Text


@CODEC.message(26)
@frozen
class TreeEnd(Frozen):
    """The last entry of a :put -r was sent (or it was aborted); the server answers PutDone."""

    xfer_id: int
    aborted: bool


@CODEC.message(27)
@frozen
class TreeGet(Frozen):
    """Send the tree at ``path`` (:get -r; a file is sent as a one-entry tree)."""

    xfer_id: int
    path: Path


@CODEC.message(28)
@frozen
class Signalled(Frozen):
    """The server has signalled the command (an :class:`Interrupt` of ``cmd_id``): the output
    sent before this was in flight when the user typed Ctrl-C (including what the command's
    pipes held at the signal: it is sent once that was read), what follows was written after."""

    cmd_id: int


@CODEC.message(29)
@frozen
class Environ(Frozen):
    """Part of the embedded console's environment, for the servers it spawned: ``data`` is a
    piece of its ``NAME=VALUE`` entries, each ended by a NUL (as in /proc/PID/environ, bytes
    as they are); ``last``: the final piece. Only over the secure channel, never through
    MPI's launcher, which gives its environment to whoever reaches its control port first
    (``shell/launch_env.py``). A server reads it after its Hello, before it starts its shell
    (``shell/mpi_server.py``): the table of :mod:`mpish.shell.conversation` never sees it."""

    data: Annotated[bytes, MaxLen(ENVIRON_PIECE)]
    last: bool


ShellMessage = (
    Hello | Run | Interrupt | Credit | Done | PutStart | PutEnd | PutDone
    | GetStart | GetEnd | Input | PtyOpen | PtyInput | PtyResize | PtyClose
    | PtyExit | Complete | Completions | TreePut | Entry | FileEnd | TreeEnd | TreeGet | Signalled
    | Environ
)
