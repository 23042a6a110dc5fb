"""A server's side of ``put`` and ``get``, of files and of trees (``-r``).

:class:`ServerTransfers` holds the server's actions for puts and gets (the ``_<action>`` names of
:data:`mpish.shell.conversation.SERVER`), mixed into :class:`~.loop.ShellServer`, whose
loop calls :meth:`ServerTransfers._pump_get` to send the next chunk within its credit.
What is being written or read (:class:`.transfer_files.Put`, ``Get``, ``PutTree``,
``GetTree``) is imported at the first transfer, not when a server starts. Part files and
cp naming: :mod:`mpish.shell.transfer`; trees: :mod:`mpish.shell.tree`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpish.transport.link import Channel
from mpish.transport.memory import tune_malloc

from .. import protocol as p
from ..conversation import Event, Local, Refused

if TYPE_CHECKING:
    from .transfer_files import Get, GetTree, Put, PutTree

TREE_CREDIT_BATCH = p.WINDOW // 4  # a tree's credit is returned in batches (small files)


class ServerTransfers:
    """The transfer actions of the server's table (mixed into ShellServer)."""

    credit: int
    channel: Channel  # over ssh files are not hashed (transfer.digests_needed)
    put: Put | PutTree | None
    get: Get | GetTree | None

    @property
    def cwd(self) -> str:
        raise NotImplementedError

    def _send(self, message: object) -> None:
        raise NotImplementedError

    def _fire(self, event: Event, payload: object = None) -> None:
        raise NotImplementedError

    def _pump_get(self) -> bool:
        """Send the get's next message, within credit; True if anything was done."""
        get = self.get
        if get is None:
            return False
        from ..transfer import extra_window
        from ..tree import cost

        credit = self.credit + extra_window(self.channel)  # the console credits it all back
        if credit <= 0 and not get.finished:
            return False
        message = get.next_message(credit)
        if message is not None:
            self.credit -= cost(message)
            self._send(message)
        else:
            self._fire(Local.GET_ENDED)
        return True

    def _start_put(self, start: p.PutStart) -> None:
        tune_malloc()  # 1 MiB chunks from now on (a no-op once done)
        from ..transfer import digests_needed
        from .transfer_files import Put

        self.put = Put(start, self.cwd, digests_needed(self.channel))

    def _write_chunk(self, chunk: p.Chunk) -> None:
        from .transfer_files import Put

        put = self.put  # a chunk belongs to the put going on (the table: RECEIVING_PUT)
        if not isinstance(put, Put):
            raise Refused("Chunk refused: no file is being received")
        put.write(chunk.data)
        self._send(p.Credit(len(chunk.data)))

    def _end_put(self, end: p.PutEnd) -> None:
        from .transfer_files import Put

        put = self.put
        if not isinstance(put, Put) or end.xfer_id != put.xfer_id:
            raise Refused(f"PutEnd of {end.xfer_id} refused: another file is being received")
        self.put = None
        self._send(put.finish(end))

    def _start_tree_put(self, start: p.TreePut) -> None:
        tune_malloc()
        from .transfer_files import PutTree

        self.put = PutTree(start, self.cwd)
        # its destination is decided (cp -r's rule, read now): the console writes nothing of the
        # tree to any target before every target has decided, so that ranks sharing a file
        # system all read it before any of them made the directory (console_transfer.put_tree)
        self._send(p.Credit(0))

    def _tree(self, message: p.Entry | p.Chunk | p.FileEnd | p.TreeEnd) -> PutTree:
        from .transfer_files import PutTree

        put = self.put
        if not isinstance(put, PutTree):
            raise Refused(f"{type(message).__name__} refused: no tree is being received")
        if not isinstance(message, p.Chunk) and message.xfer_id != put.xfer_id:  # a chunk has no id
            raise Refused(f"{type(message).__name__} of {message.xfer_id} refused: another tree is received")
        return put

    def _tree_credit(self, put: PutTree, nbytes: int) -> None:
        put.owed += nbytes
        if put.owed >= TREE_CREDIT_BATCH:
            self._send(p.Credit(put.owed))
            put.owed = 0

    def _tree_entry(self, entry: p.Entry) -> None:
        put = self._tree(entry)
        put.writer.entry(entry)
        self._tree_credit(put, p.ENTRY_COST)

    def _tree_chunk(self, chunk: p.Chunk) -> None:
        put = self._tree(chunk)
        put.writer.write(chunk.data)
        self._tree_credit(put, len(chunk.data))

    def _tree_file_end(self, end: p.FileEnd) -> None:
        self._tree(end).writer.end_file(end)

    def _end_tree_put(self, end: p.TreeEnd) -> None:
        put = self._tree(end)
        self.put = None
        self._send(put.finish(end))

    def _start_get(self, start: p.GetStart) -> None:
        tune_malloc()
        from ..transfer import digests_needed
        from .transfer_files import Get

        self.get = Get(start, self.cwd, digests_needed(self.channel))

    def _start_tree_get(self, start: p.TreeGet) -> None:
        tune_malloc()
        from .transfer_files import GetTree

        self.get = GetTree(start, self.cwd)

    def _interrupt_get(self, message: p.Interrupt) -> None:
        if self.get is None or message.cmd_id != self.get.xfer_id:
            raise Refused(f"Interrupt of {message.cmd_id} refused: another file is being sent")
        self.get.interrupted = True

    def _end_get(self, payload: None) -> None:
        get, self.get = self.get, None
        if get is not None:
            self._send(get.end())

    def _discard_transfers(self) -> None:
        """The session ends: a file or tree half received is discarded, one being sent closed."""
        if self.put is not None:
            self.put.discard()
            self.put = None
        if self.get is not None:
            self.get.close()
            self.get = None
