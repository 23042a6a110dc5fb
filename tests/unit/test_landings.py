"""Where posted receives land their first record (comm/posted.py's Landings): a landing holds
any first record, and only the pages a record was written to are resident, so thousands of
posted receives of small messages do not cost 64 KiB each (a porter: 8,000 Irecvs, 616 MiB)."""

from __future__ import annotations

import ctypes
import mmap

import pytest

pytest.importorskip("mpi4py")

from mpish.comm.limits import FIRST_MAX
from mpish.comm.posted import SLAB_SLOTS, Landings


def resident_kib(view: memoryview) -> int:
    """Rss of the mapping that holds ``view`` (/proc/self/smaps)."""
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                low, high = (int(part, 16) for part in head.split("-"))
                inside = low <= address < high
            elif inside and line.startswith("Rss:"):
                return int(line.split()[1])
    raise AssertionError("no mapping holds the landing")


def test_landings_hold_any_first_record_and_are_reused_once_given_back() -> None:
    landings = Landings()
    first, second = landings.take(), landings.take()
    assert len(first) == len(second) == FIRST_MAX and not first.readonly
    first[:5] = b"hello"
    assert bytes(second[:5]) != b"hello"  # distinct places
    landings.give(first)
    assert landings.take() is first


def test_only_the_pages_records_were_written_to_are_resident() -> None:
    landings = Landings()
    views = [landings.take() for _ in range(SLAB_SLOTS)]  # one mapping's worth
    for view in views:
        view[:68] = b"r" * 68  # a first record of 8 bytes of data
    per_landing = resident_kib(views[0]) / SLAB_SLOTS
    assert per_landing <= 2 * mmap.PAGESIZE / 1024, per_landing  # a page each, not 64 KiB
