"""mpish: a secure remote shell and remote-execution tool for clusters.

``import mpish`` imports neither mpi4py nor ssh machinery; ``mpish.secure`` loads the
secure communicator on first use.
"""

from __future__ import annotations

from typing import Any

# Diagnostics (report.Diagnostics, silent unless report.setup_logging) load logging when needed.

__version__ = "0.1.0"

__all__ = ["__version__", "secure"]


def secure(comm: Any, **options: Any) -> Any:
    """Wrap an mpi4py intracommunicator in an authenticated, encrypted one (collective)."""
    from .comm import secure as _secure  # mpi4py is imported only here

    return _secure(comm, **options)
