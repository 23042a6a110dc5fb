"""Where posted receives land their first record: buffers of ``FIRST_MAX`` bytes carved from
anonymous mappings, each followed by a guard page (:class:`Landings`)."""

from __future__ import annotations

import ctypes
import functools
import mmap

from .limits import FIRST_MAX

SLOT = -(-FIRST_MAX // mmap.PAGESIZE) * mmap.PAGESIZE  # a landing's place in its mapping
STRIDE = SLOT + mmap.PAGESIZE  # and the guard page after it (Landings)
SLAB_SLOTS = 64  # landings per anonymous mapping
KEEP_WARM = 64  # free landings whose pages stay resident (the rest are given back to the kernel)


class Landings:
    """Buffers of FIRST_MAX bytes where posted receives land their first record, carved from
    anonymous mappings: a page becomes resident only once a record is written into it (a
    record of 8 bytes of data touches one page of the 17), where a ``bytearray`` zero-filled
    all 64 KiB: a porter's 8,000 posted Irecvs of 8 bytes took 616 MiB (raw MPI: 55 MiB).
    A landing given back past :data:`KEEP_WARM` free ones has its pages dropped (MADV_DONTNEED).

    Each landing is followed by a guard page no process may touch (PROT_NONE): Open MPI 5,
    truncating a forged oversized message into a posted receive, wrote up to ~210 KB past the
    receive's buffer (a reviewer's overflow3.py), into the next landings (the genuine records
    there were then rejected and their receives hung) or, past a mapping's end, into whatever
    memory followed. Such a write now stops at the guard: a SIGSEGV of that process (the job
    ends loudly) instead of memory written by another rank's choice."""

    def __init__(self) -> None:
        self._free: list[tuple[mmap.mmap, int, memoryview]] = []
        self._by_view: dict[int, tuple[mmap.mmap, int, memoryview]] = {}

    def take(self) -> memoryview:
        if not self._free:
            slab = mmap.mmap(-1, STRIDE * SLAB_SLOTS, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            _guard(slab)
            whole = memoryview(slab)
            self._free += [(slab, at, whole[at : at + FIRST_MAX]) for at in range(0, len(slab), STRIDE)][::-1]
        landing = self._free.pop()
        self._by_view[id(landing[2])] = landing
        return landing[2]

    def give(self, view: memoryview) -> None:
        landing = self._by_view.pop(id(view), None)
        if landing is None:
            return
        if len(self._free) >= KEEP_WARM:
            landing[0].madvise(mmap.MADV_DONTNEED, landing[1], SLOT)
        self._free.append(landing)


def _guard(slab: mmap.mmap) -> None:
    """The last page of every STRIDE of ``slab`` made inaccessible (Landings' doc); where
    mprotect is unavailable the landings work without guards."""
    try:
        libc = _libc()
        base = ctypes.addressof(ctypes.c_char.from_buffer(slab))  # the export ends with the statement
        for at in range(SLOT, len(slab), STRIDE):
            if libc.mprotect(ctypes.c_void_p(base + at), ctypes.c_size_t(mmap.PAGESIZE), 0) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
    except (OSError, AttributeError) as exc:
        _GUARDLESS.append(exc)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


_GUARDLESS: list[BaseException] = []  # why guard pages could not be set (none on Linux)
LANDINGS = Landings()
