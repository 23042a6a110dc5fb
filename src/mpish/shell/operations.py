"""What a command gathers while its servers answer (shell/console.py's actions fill it)."""

from __future__ import annotations

from mpish.wire.message import Fields

from .grouping import OutputSink
from .names import Result


class Running(Fields):
    """A command: its sink, each rank's stdin credit, the results so far."""

    __match_args__ = ("cmd_id", "sink", "credit", "results", "interrupted", "unsignalled", "discarded")

    def __init__(self, cmd_id: int, sink: OutputSink, credit: dict[int, int],
                 results: dict[int, Result] | None = None, interrupted: set[int] | None = None,
                 unsignalled: dict[int, int] | None = None, discarded: dict[int, int] | None = None) -> None:
        self.cmd_id = cmd_id
        self.sink = sink
        self.credit = credit  # stdin bytes each rank may still be sent
        self.results: dict[int, Result] = {} if results is None else results
        self.interrupted: set[int] = set() if interrupted is None else interrupted  # sent the user's Ctrl-C
        # Interrupts sent, no Signalled back yet; output bytes in flight at a Ctrl-C, not shown
        self.unsignalled: dict[int, int] = {} if unsignalled is None else unsignalled
        self.discarded: dict[int, int] = {} if discarded is None else discarded

    def in_flight_at_interrupt(self, rank: int, nbytes: int) -> bool:
        """Output of ``rank`` sent before its server signalled the command: counted, not shown
        (as a terminal discards its output queue at Ctrl-C). True if discarded."""
        if not self.unsignalled.get(rank):
            return False
        self.discarded[rank] = self.discarded.get(rank, 0) + nbytes
        return True

    def discarded_amount(self) -> str:
        total = sum(self.discarded.values())
        amount = f"{total / 2**20:.1f} MiB" if total >= 2**20 else f"{total} bytes"
        return f"{amount} of output in flight at the Ctrl-C not shown"

    def signalled(self, rank: int) -> None:
        """The server answered one Interrupt: output from here on was read after the signal."""
        self.unsignalled[rank] = max(0, self.unsignalled.get(rank, 0) - 1)
