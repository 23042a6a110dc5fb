"""Tests that look at the network: captures with tcpdump, two hosts in network namespaces."""

from __future__ import annotations

import sys
from pathlib import Path

from marks import mark_directory

sys.path.insert(0, str(Path(__file__).parent))  # this directory's helpers (twohosts, wirecapture, jobs)

pytest_collection_modifyitems = mark_directory(__file__, "mpi", "net")
