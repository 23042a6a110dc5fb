"""Run under mpiexec -n 2: the small-message hot paths of mpish.secure(comm) (Send/Recv and
send/recv of fewer than 16 KiB) deliver exactly what raw MPI does, whatever the buffer.

The hot paths keep the flat byte view of the last numpy array sent and received into
(communicator.py): these checks reuse, modify, switch and write-protect such arrays.
Prints ``OK <check>`` per check and ``ALL OK`` at the end; a failure aborts the job.
"""

from __future__ import annotations

import array

import numpy as np
from mpi4py import MPI
from mpi_main import run_checks

from mpish.comm import SecureComm


def ok(name: str) -> None:
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.Get_rank() == 0:
        print(f"OK {name}", flush=True)


def check_none_with_proc_null_on_a_fresh_communicator_is_an_empty_message(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Send(None)/Recv(None) to and from PROC_NULL, before any array was kept, work as raw MPI's do."""
    status = MPI.Status()
    c.Recv(None, MPI.PROC_NULL, 5, status)  # before any array was kept: no kept array to mistake it for
    assert (status.Get_source(), status.Get_count()) == (MPI.PROC_NULL, 0)
    c.Send(None, MPI.PROC_NULL, 5)
    c.Recv([None, 0, MPI.BYTE], MPI.PROC_NULL)
    ok("none_with_proc_null_on_a_fresh_communicator_is_an_empty_message")


def check_a_reused_array_carries_its_current_content(c: SecureComm, raw: MPI.Intracomm) -> None:
    """Sending one array again after changing it (in place, its dtype, its shape) sends the new bytes."""
    a, b = np.arange(100, dtype="u1"), np.arange(50, dtype="f8")
    if c.rank == 0:
        c.Send(a, 1, 1)
        a[:] = 7
        c.Send(a, 1, 1)
        c.Send(b, 1, 1)  # another array in between
        c.Send(a, 1, 1)
        a.shape = (10, 10)
        c.Send(a, 1, 1)
        a.dtype = "u2"  # the same bytes, seen as 50 two-byte numbers
        c.Send(a, 1, 1)
    elif c.rank == 1:
        sevens = bytes([7] * 100)
        expected = [np.arange(100, dtype="u1").tobytes(), sevens, b.tobytes(), sevens, sevens, sevens]
        for want in expected:
            got = np.zeros(len(want), "u1")
            c.Recv(got, 0, 1)
            assert got.tobytes() == want
    ok("a_reused_array_carries_its_current_content")


def check_a_reused_receive_array_gets_each_message_until_it_is_read_only(
    c: SecureComm, raw: MPI.Intracomm
) -> None:
    """Receiving into one array again (and after another) fills it each time; once its
    ``writeable`` flag is off, Recv refuses it as it refuses any read-only buffer."""
    if c.rank == 0:
        for k in range(5):
            c.Send(np.full(64, k, "u1"), 1, 2)
    elif c.rank == 1:
        into, other = np.zeros(64, "u1"), np.zeros(8, "f8")
        c.Recv(into, 0, 2)
        assert np.all(into == 0)
        c.Recv(other, 0, 2)
        assert other.tobytes() == bytes([1] * 64)
        c.Recv(into, 0, 2)
        assert np.all(into == 2)
        c.Recv(into, 0, 2)
        assert np.all(into == 3)
        into.flags.writeable = False
        try:
            c.Recv(into, 0, 2)
        except ValueError as exc:
            assert "read-only" in str(exc)
        else:
            raise AssertionError("Recv wrote into an array whose writeable flag is off")
        c.Recv(other, 0, 2)  # the message is still there
        assert other.tobytes() == bytes([4] * 64)
    ok("a_reused_receive_array_gets_each_message_until_it_is_read_only")


def check_every_buffer_kind_and_wildcard_arrives_as_over_raw_mpi(c: SecureComm, raw: MPI.Intracomm) -> None:
    """bytes, bytearray, array, memoryview, numpy of several dtypes and shapes, empty and
    16 KiB - 1 messages, objects, ANY_SOURCE/ANY_TAG with a status: as raw MPI."""
    payloads: list[object] = [
        b"bytes",
        bytearray(b"a bytearray"),
        array.array("i", range(10)),
        memoryview(b"a memoryview"),
        np.arange(12, dtype="f8").reshape(3, 4),
        np.arange(5, dtype="i2"),
        np.zeros(0, "u1"),
        np.full(16 * 1024 - 1, 9, "u1"),
    ]
    for comm in (raw, c):
        if comm.Get_rank() == 0:
            for k, payload in enumerate(payloads):
                comm.Send(payload, 1, 10 + k)
            comm.send({"k": 1}, 1, 30)
        elif comm.Get_rank() == 1:
            for k, payload in enumerate(payloads):
                want = bytes(memoryview(payload).cast("B"))  # type: ignore[arg-type]
                got = bytearray(len(want) + 3)
                status = MPI.Status()
                comm.Recv(got, MPI.ANY_SOURCE, MPI.ANY_TAG, status)
                assert bytes(got[: len(want)]) == want and not any(got[len(want) :])
                assert (status.Get_source(), status.Get_tag(), status.Get_count()) == (0, 10 + k, len(want))
            status = MPI.Status()
            assert comm.recv(None, MPI.ANY_SOURCE, MPI.ANY_TAG, status) == {"k": 1}
            assert (status.Get_source(), status.Get_tag()) == (0, 30)
    ok("every_buffer_kind_and_wildcard_arrives_as_over_raw_mpi")


def main() -> None:
    if MPI.COMM_WORLD.Get_size() != 2:
        raise SystemExit("run with mpiexec -n 2")
    run_checks(
        [
            check_none_with_proc_null_on_a_fresh_communicator_is_an_empty_message,  # first: nothing kept yet
            check_a_reused_array_carries_its_current_content,
            check_a_reused_receive_array_gets_each_message_until_it_is_read_only,
            check_every_buffer_kind_and_wildcard_arrives_as_over_raw_mpi,
        ]
    )


if __name__ == "__main__":
    main()
