"""Memory tuning shared by both transports (the shell server runs on either)."""

from __future__ import annotations

import contextlib

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_tuned: list[bool] = []  # one True once done: tune_malloc runs once per process


def tune_malloc() -> None:
    """Serve 1 MiB record buffers from the heap, reused, instead of fresh mmaps.

    glibc maps every allocation above its mmap threshold afresh, so each 1 MiB record
    (sealed, received, decrypted) would cost ~256 page faults and a zero-fill by the
    kernel. A 4 MiB threshold and a 64 MiB trim threshold keep such buffers in the heap;
    freed ones are reused. Only glibc has mallopt: elsewhere this does nothing.

    ``mallopt`` is looked up in the process's own symbols (``dlopen(NULL)``: libc is
    loaded already), not through ``ctypes.util.find_library``, which runs ``ldconfig -p``
    (a fork and exec, ~13 ms of CPU on every start of every shell server and console).
    Only the first call does anything; ctypes (~1.5 ms to import, more to dlopen) is
    imported then, so a process may call this where bulk data first flows.
    """
    if _tuned:
        return
    _tuned.append(True)
    import ctypes

    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
        libc.mallopt(M_MMAP_THRESHOLD, 4 << 20)
