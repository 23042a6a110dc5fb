"""The progress polling of secure requests' MPI handles (comm/handles.py) is bounded per call:
thousands of pending requests cost each secure call a fixed batch, and every request gets its turn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mpish.comm import handles


class FakeRequest:
    """Stands in for a SecureRequest: counts the progress tests it gets."""

    def __init__(self, finished: bool = False) -> None:
        self.polls = 0
        self.finished = finished

    def _poll_handle(self) -> bool:
        self.polls += 1
        return self.finished


@pytest.fixture
def pending() -> Iterator[list[FakeRequest]]:
    requests = [FakeRequest() for _ in range(1000)]
    saved = list(handles._ORDER), set(handles._WATCHED)
    handles._ORDER.clear()
    handles._WATCHED.clear()
    for request in requests:  # as watch() registers them, without starting the thread
        handles._WATCHED.add(request)
        handles._ORDER.append(handles.weakref.ref(request))
    yield requests
    handles._ORDER.clear()
    handles._WATCHED.clear()
    handles._ORDER.extend(handles.weakref.ref(r) for r in saved[0] if r() is not None)
    for request in saved[1]:
        handles._WATCHED.add(request)


def test_one_call_tests_a_fixed_batch_however_many_requests_are_pending(pending: list[FakeRequest]) -> None:
    handles._poll_watched(handles._CALL_BATCH)
    assert sum(r.polls for r in pending) == handles._CALL_BATCH


def test_every_pending_request_gets_its_turn_in_order(pending: list[FakeRequest]) -> None:
    rounds = -(-len(pending) // handles._CALL_BATCH)
    for _ in range(rounds):
        handles._poll_watched(handles._CALL_BATCH)
    assert min(r.polls for r in pending) == 1
    assert max(r.polls for r in pending) <= 2


def test_a_request_no_longer_watched_is_dropped_when_its_turn_comes(pending: list[FakeRequest]) -> None:
    gone = pending[: handles._CALL_BATCH]
    for request in gone:
        handles._WATCHED.discard(request)
    handles._poll_watched(handles._CALL_BATCH)
    assert all(r.polls == 0 for r in gone)
    assert len(handles._ORDER) == len(pending) - len(gone)


def test_a_finished_request_is_reported(pending: list[FakeRequest]) -> None:
    pending[3].finished = True
    assert handles._poll_watched(handles._CALL_BATCH) is True
