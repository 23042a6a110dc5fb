"""comm/limits.py's Stats: one forged record is one rejection, whichever frames it passes."""

from __future__ import annotations

import pytest

pytest.importorskip("mpi4py")

from mpish.comm.limits import Stats
from mpish.wire.errors import AuthenticationError


def test_a_record_rejected_where_found_and_again_by_its_caller_in_strict_mode_counts_once() -> None:
    # A forged continuation record in strict mode: bulk.py's drain rejects it and raises,
    # the receive that called the drain caught the same error and rejected it again: it
    # was counted, logged and passed to on_reject twice (a security review's count).
    seen: list[BaseException] = []
    stats = Stats(strict=True, on_reject=seen.append)
    error = AuthenticationError("record failed authentication")
    with pytest.raises(AuthenticationError):
        stats.reject(error)
    with pytest.raises(AuthenticationError):
        stats.reject(error)  # the caller's frame, the same error
    assert stats.rejected == 1 and seen == [error]
    other = AuthenticationError("record failed authentication")
    with pytest.raises(AuthenticationError):
        stats.reject(other)
    assert stats.rejected == 2 and seen == [error, other]


def test_without_strict_mode_each_forged_record_is_counted_and_dropped() -> None:
    stats = Stats()
    for _ in range(3):
        stats.reject(AuthenticationError("record failed authentication"))
    assert stats.rejected == 3
