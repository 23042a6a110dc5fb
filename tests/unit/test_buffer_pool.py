"""The MPI link's pool of idle record buffers: best fit, never more than twice the size asked
for (a small record must not pin a large buffer while MPI sends it), bounded in bytes."""

from __future__ import annotations

from mpish.transport.mpi import BUFFER_STEP, MAX_RECORD, BufferPool, buffer_size


def test_buffer_sizes_are_whole_steps_up_to_the_largest_record() -> None:
    assert buffer_size(1) == BUFFER_STEP
    assert buffer_size(BUFFER_STEP) == BUFFER_STEP
    assert buffer_size(BUFFER_STEP + 1) == 2 * BUFFER_STEP
    assert buffer_size(MAX_RECORD) == MAX_RECORD  # the largest record: no step past it


def test_take_gives_the_smallest_idle_buffer_that_fits_and_none_more_than_twice_too_large() -> None:
    pool = BufferPool(keep=1 << 30)
    small, middle, large = bytearray(BUFFER_STEP), bytearray(4 * BUFFER_STEP), bytearray(MAX_RECORD)
    for buffer in (large, small, middle):
        pool.give(buffer)
    assert pool.take(3 * BUFFER_STEP) is middle  # not large: the best fit
    assert pool.take(10) is small
    assert pool.take(10) is None  # only the 1 MiB buffer is left: far too large for 10 bytes
    assert pool.take(MAX_RECORD // 2 + 1) is large
    assert pool.idle_bytes == 0


def test_give_keeps_at_most_the_pools_bytes() -> None:
    pool = BufferPool(keep=3 * BUFFER_STEP)
    buffers = [bytearray(BUFFER_STEP) for _ in range(5)]
    for buffer in buffers:
        pool.give(buffer)
    assert pool.idle_bytes == 3 * BUFFER_STEP
    taken = [pool.take(1) for _ in range(4)]
    assert [b is not None for b in taken] == [True, True, True, False]
