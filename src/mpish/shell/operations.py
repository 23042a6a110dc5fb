"""What a command gathers while its servers answer (shell/console.py's actions fill it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .grouping import OutputSink
from .names import Result


@dataclass
class Running:
    """A command: its sink, each rank's stdin credit, the results so far."""

    cmd_id: int
    sink: OutputSink
    credit: dict[int, int]  # stdin bytes each rank may still be sent
    results: dict[int, Result] = field(default_factory=dict)
    interrupted: set[int] = field(default_factory=set)  # ranks sent the user's Ctrl-C
    unsignalled: dict[int, int] = field(default_factory=dict)  # Interrupts sent, no Signalled back yet
    discarded: dict[int, int] = field(default_factory=dict)  # output bytes in flight at a Ctrl-C, not shown

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
