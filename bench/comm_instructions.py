"""Instructions executed per secure(comm) call, counted by valgrind: a measure this shared
2-core machine's noise cannot move (timings of the same code drift by 30% from run to run).

Each case runs in its own process (one rank, no mpiexec) under ``valgrind --tool=callgrind``
twice, with LOW and HIGH calls; the main thread's instructions of the second run less the
first's, over HIGH - LOW, are one call's (start-up and set-up cancel out; the progress
thread, if any, is another thread and not counted). Cases:

  send       secure Send of 1 KiB, MPI's send replaced by nothing
  recv       secure Recv of 1 KiB, MPI's receive replaced by copying the next sealed record
  encrypt    the lane's AES-GCM encrypt of 1 KiB alone (cryptography's call, the floor of send)
  decrypt    its decrypt alone (the floor of recv)
  nb         secure Irecv + Send + Wait of 128 B to the process itself (real MPI)
  nb_raw     the same on the raw communicator

The RESULT line gives ratios from the same run: ``send_over_encrypt``, ``recv_over_decrypt``
(the Python and MPI work around the cipher) and ``nb_over_raw``; the table the counts.
Run: ``python bench/comm_instructions.py`` (needs valgrind: ``apt-get install valgrind``;
about four minutes). MPISH_HOME must hold a key, else a temporary one is made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

LOW, HIGH = 200, 700
CASES = ("send", "recv", "encrypt", "decrypt", "nb", "nb_raw")


def worker(case: str, calls: int) -> None:
    import gc

    import numpy as np
    from mpi4py import MPI

    import mpish

    raw = MPI.COMM_WORLD
    comm = mpish.secure(raw)
    lane = comm._p2p
    big, out = np.zeros(1024, dtype=np.uint8), np.zeros(1024, dtype=np.uint8)
    small, into = np.zeros(16), np.zeros(16)
    sealed: list[bytes] = []
    count = [0]

    def copy_in(rx: bytearray, source: int, tag: int, status: object) -> None:
        record = sealed.pop()
        count[0] = len(record)
        rx[: count[0]] = record

    seal = lane.seal_small[0]
    record = seal(memoryview(big), 5)
    opener = lane.openers[0]
    aead, nonce, header = opener._state.aead, bytes(12), record[:44]
    ciphertext = aead.encrypt(nonce, big.tobytes(), header)

    def run(n: int) -> None:
        if case == "send":
            for _ in range(n):
                comm.Send(big, 0, 5)
        elif case == "recv":
            for _ in range(n):
                comm.Recv(out, 0, 5)
        elif case == "encrypt":
            for _ in range(n):
                aead.encrypt(nonce, big, header)
        elif case == "decrypt":
            for _ in range(n):
                aead.decrypt(nonce, ciphertext, header)
        else:
            c = comm if case == "nb" else raw
            for _ in range(n):
                request = c.Irecv(into, 0, 5)
                c.Send(small, 0, 5)
                request.Wait()

    if case == "send":
        lane.mpi_send = lambda record, dest, tag: None
    if case == "recv":
        lane._mpi_recv, lane._count = copy_in, lambda: count[0]
        sealed[:] = [seal(memoryview(big), 5) for _ in range(HIGH + 21)][::-1]  # as many in both runs
        comm.Recv(out, 0, 5)  # the first record after the one sealed above: the general path
    run(20)
    gc.collect()
    gc.disable()
    run(calls)


def instructions(case: str, calls: int, home: str) -> int:
    """The main thread's instructions of a worker process making ``calls`` calls."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, PYTHONHASHSEED="0", MPISH_HOME=home)
        subprocess.run(
            ["setarch", "-R", "valgrind", "--tool=callgrind", "--separate-threads=yes",
             f"--callgrind-out-file={out}/cg.%p", sys.executable, __file__, "--worker", case, str(calls)],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
        )
        main = [name for name in os.listdir(out) if name.endswith("-01")]
        with open(os.path.join(out, main[0])) as profile:
            found = re.search(r"^summary: (\d+)", profile.read(), re.MULTILINE)
        assert found, "callgrind wrote no summary"
        return int(found.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("comm_instructions: valgrind is not installed (apt-get install valgrind)")
    home = os.environ.get("MPISH_HOME") or ""
    made = None
    if not home:
        from pathlib import Path

        from mpish.keys import ensure_identity

        home = made = tempfile.mkdtemp(prefix="mpish-bench-home-")
        ensure_identity(Path(made))
    per_call = {}
    try:
        print(f"{'case':10} {'instructions per call':>22}")
        for case in CASES:
            per_call[case] = (instructions(case, HIGH, home) - instructions(case, LOW, home)) / (HIGH - LOW)
            print(f"{case:10} {per_call[case]:>22,.0f}", flush=True)
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)
    print(
        f"RESULT send_over_encrypt={per_call['send'] / per_call['encrypt']:.2f} "
        f"recv_over_decrypt={per_call['recv'] / per_call['decrypt']:.2f} "
        f"nb_over_raw={per_call['nb'] / per_call['nb_raw']:.1f}"
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]))
    else:
        main()
