"""The MPI pollers' sleeps: short while active, 10 ms when quiet, 50 ms after a quiet spell
(10 ms sleeps kept an idle shell server at 1.6% of a core: 64 ranks on a node burned one)."""

from __future__ import annotations

import pytest

from mpish.transport import mpi
from mpish.transport.mpi import Backoff


def test_sleeps_grow_to_10_ms_then_to_50_ms_after_a_quiet_spell_and_activity_resets_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(mpi.time, "monotonic", lambda: now[0])
    backoff = Backoff()
    backoff.activity()  # at the patched clock's now
    assert backoff.next_sleep() == mpi.HOT_SLEEP  # just active
    now[0] += 1.0
    quiet = [backoff.next_sleep() for _ in range(20)]
    assert quiet[0] == mpi.FIRST_SLEEP and max(quiet) == mpi.MAX_SLEEP == 0.010
    now[0] += mpi.IDLE_SECONDS
    idle = [backoff.next_sleep() for _ in range(5)]
    assert idle[-1] == mpi.IDLE_SLEEP == 0.050 and idle == sorted(idle)
    backoff.activity()
    assert backoff.next_sleep() == mpi.HOT_SLEEP
    now[0] += 1.0
    assert backoff.next_sleep() == mpi.FIRST_SLEEP
