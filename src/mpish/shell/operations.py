"""What one console operation gathers while its servers answer (shell/console.py's actions fill it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .grouping import OutputSink
from .names import Result
from .transfer import PartFile

Progress = Callable[[int, int], None]  # (bytes done, total)


@dataclass
class Running:
    """A command: its sink, each rank's stdin credit, the results so far."""

    cmd_id: int
    sink: OutputSink
    credit: dict[int, int]  # stdin bytes each rank may still be sent
    results: dict[int, Result] = field(default_factory=dict)


@dataclass
class Putting:
    """A put: each rank's credit, the file's digest, the verdicts so far."""

    xfer_id: int
    credit: dict[int, int]
    digest: Any = field(default_factory=hashlib.sha256)
    verdicts: dict[int, str] = field(default_factory=dict)


@dataclass
class Getting:
    """A get: each rank's part file, digest and size, the verdicts so far."""

    xfer_id: int
    finals: dict[int, Path]
    progress: Progress | None
    digests: dict[int, Any]
    sizes: dict[int, int]
    handles: dict[int, PartFile] = field(default_factory=dict)
    verdicts: dict[int, str] = field(default_factory=dict)
    received: int = 0
