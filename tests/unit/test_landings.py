"""Where posted receives land their first record (comm/landings.py): a landing holds
any first record, and only the pages a record was written to are resident, so thousands of
posted receives of small messages do not cost 64 KiB each (a porter: 8,000 Irecvs, 616 MiB)."""

from __future__ import annotations

import ctypes
import faulthandler
import mmap
import os
import signal

import pytest

pytest.importorskip("mpi4py")

from mpish.comm.landings import _GUARDLESS, SLAB_SLOTS, SLOT, STRIDE, Landings
from mpish.comm.limits import FIRST_MAX


def resident_kib(view: memoryview, length: int) -> int:
    """KiB of the ``length`` bytes from ``view``'s start (page aligned) that are resident, by
    mincore(2): the kernel may merge neighbouring anonymous mappings into one, so smaps' Rss of
    "the" mapping can count other memory too."""
    address = ctypes.addressof(ctypes.c_char.from_buffer(view))
    assert address % mmap.PAGESIZE == 0
    pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vector = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(length), vector) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(byte & 1 for byte in vector) * mmap.PAGESIZE // 1024


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
    per_landing = resident_kib(views[0], STRIDE * SLAB_SLOTS) / SLAB_SLOTS
    assert per_landing <= 2 * mmap.PAGESIZE / 1024, per_landing  # a page each, not 64 KiB


def test_a_write_past_a_landing_stops_at_its_guard_page_not_in_the_next_landing() -> None:
    """Open MPI 5 wrote a forged oversized message up to ~210 KB past a posted receive's buffer,
    into the next landings (genuine records there rejected, their receives hung) or past the
    mapping. A write past a landing's slot now faults at once (in a child: the fault kills it)."""
    landings = Landings()
    first = landings.take()
    assert not _GUARDLESS
    address = ctypes.addressof(ctypes.c_char.from_buffer(first))
    ctypes.memset(address + len(first), 0x41, SLOT - len(first))  # the slot's own slack: fine
    child = os.fork()
    if child == 0:  # the overflow, as Open MPI's copy makes it: on through the slot's end
        faulthandler.disable()  # the fault is the expected end: no traceback dump
        ctypes.memset(address, 0x41, STRIDE + 16)  # into the next landing, were there no guard
        os._exit(0)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV, status
