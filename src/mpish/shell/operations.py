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
