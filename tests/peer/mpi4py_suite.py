"""Run mpi4py's own test modules against the raw and the secure communicator, and compare.

Usage: ``python tests/peer/mpi4py_suite.py [-n 1 2 3 4] [-m MODULE ...] [-k WORD ...] [--test-timeout S]``

The sdist matching the installed mpi4py is fetched once with
``pip download --no-binary mpi4py --no-deps mpi4py==<version>`` into ``.venv/mpi4py-sdist``
(``MPISH_PEER_CACHE`` overrides; the first fetch builds the sdist's metadata, about two
minutes). Its ``test/`` directory is copied, and each listed module is adapted minimally:
every line ``COMM = MPI.COMM_WORLD`` / ``MPI.COMM_SELF`` (optionally ``.Dup()``) gets the
communicator through ``mpish.secure(...)`` instead. Each module then runs under mpiexec
once raw and once adapted, at every size; a run that exceeds the timeout counts as a hang.
With ``--test-timeout S`` a watchdog ends a run whose test takes longer than S seconds:
that test counts as hung (and failed), and the module runs again without it, so one hang
does not hide the rest of the module. The secure run's seconds are printed per line.
Prints one line per (module, size) and a ``SUMMARY`` line; ``--json`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

MODULES = (
    "test_p2p_obj",
    "test_p2p_buf",
    "test_cco_obj",
    "test_cco_buf",
    "test_comm",
    "test_msgzero",
    "test_p2p_obj_matched",
    "test_p2p_buf_matched",
    "test_cco_vec",
    "test_cco_nb_buf",
    "test_cco_ngh_obj",
    "test_cco_ngh_buf",
    "test_comm_topo",
    "test_cco_nb_vec",
    "test_cco_pr_buf",
    "test_cco_pr_vec",
    "test_cco_pr_ngh_buf",
)
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
_COMM_LINE = re.compile(r"^(\s*(?:self\.)?COMM = )(MPI\.COMM_(?:WORLD|SELF))(\.Dup\(\))?\s*$")
PRELUDE = '''
import mpish as _mpish
_MPISH_SECURE = {}
def _mpish_secure(comm):
    """The secure communicator of comm (one per base communicator: secure() is collective)."""
    key = "world" if comm == MPI.COMM_WORLD else "self"
    if key not in _MPISH_SECURE:
        _MPISH_SECURE[key] = _mpish.secure(comm)
    return _MPISH_SECURE[key]
'''
# Runs one module with unittest on every rank; rank 0 prints its counts as JSON. A watchdog
# ends the whole job when one test exceeds MPISH_PEER_TEST_TIMEOUT seconds (a hang inside MPI
# cannot be interrupted otherwise); every rank prints "START <rank> <test>" first, so the
# runner knows which test hung and runs the module again without it (MPISH_PEER_SKIP).
RUNNER = """
import faulthandler, json, os, sys, unittest
sys.path.insert(0, ".")
from mpi4py import MPI
module = __import__(sys.argv[1])
rank = MPI.COMM_WORLD.Get_rank()
limit = float(os.environ.get("MPISH_PEER_TEST_TIMEOUT", "0"))
skip = set(filter(None, os.environ.get("MPISH_PEER_SKIP", "").split(",")))
only = list(filter(None, os.environ.get("MPISH_PEER_ONLY", "").split(",")))

class Result(unittest.TextTestResult):
    def startTest(self, test):
        print(f"START {rank} {test.id()}", flush=True)
        if limit:
            faulthandler.dump_traceback_later(limit, exit=True)
        super().startTest(test)

    def stopTest(self, test):
        if limit:
            faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

def keep(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from keep(test)
        elif test.id() not in skip and (not only or any(word in test.id() for word in only)):
            yield test

suite = unittest.TestSuite(keep(unittest.defaultTestLoader.loadTestsFromModule(module)))
runner = unittest.TextTestRunner(stream=open("/dev/null", "w"), verbosity=0, resultclass=Result)
result = runner.run(suite)
failed = [str(t) + ": " + tb.strip().splitlines()[-1] for t, tb in result.failures + result.errors]
tests = {getattr(t, "test_case", t).id() for t, _ in result.failures + result.errors}  # subtests: once
if rank == 0:
    print("PEER " + json.dumps({"run": result.testsRun, "failed": len(tests),
          "skipped": len(result.skipped), "failures": failed}), flush=True)
"""


def mpi4py_version() -> str:
    import mpi4py

    return str(mpi4py.__version__)


def fetch_sdist(cache: Path) -> Path:
    """The sdist of the installed mpi4py, downloaded once into ``cache``."""
    version = mpi4py_version()
    target = cache / f"mpi4py-{version}.tar.gz"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-binary",
                "mpi4py",  # only mpi4py from source: its build tools come as wheels (seconds, not minutes)
                "--no-deps",
                f"mpi4py=={version}",
                "-d",
                str(cache),
            ],
            check=True,
        )
    return target


def prepare(sdist: Path, work: Path, modules: tuple[str, ...]) -> tuple[Path, Path]:
    """(raw test dir, adapted test dir) extracted from ``sdist`` into ``work``."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/test/" in m.name and m.isfile()]
        tar.extractall(work, members=members, filter="data")
    raw = next(work.glob("mpi4py-*/test"))
    secure = work / "secure"
    shutil.copytree(raw, secure)
    for name in modules:
        path = secure / f"{name}.py"
        lines = path.read_text().splitlines(keepends=True)
        out, prelude_done = [], False
        for line in lines:
            match = _COMM_LINE.match(line)
            if match:
                line = f"{match[1]}_mpish_secure({match[2]}){match[3] or ''}\n"
            out.append(line)
            if not prelude_done and line.startswith("from mpi4py import MPI"):
                out.append(PRELUDE)
                prelude_done = True
        path.write_text("".join(out))
    return raw, secure


def run_module(
    directory: Path, module: str, size: int, timeout: float, env: dict[str, str], test_timeout: float = 0.0
) -> dict[str, object]:
    """Counts of one module at one size; with ``test_timeout``, a hung test is reported and skipped."""
    hung: list[str] = []
    while True:
        result = _run_once(directory, module, size, timeout, env, test_timeout, hung)
        culprit = result.pop("hung_test", None)
        if culprit is None or culprit in hung or len(hung) >= 20:
            break
        hung.append(str(culprit))
    result["hangs"] = hung
    if hung:  # the hung tests count as run and failed
        result["run"] = int(result["run"]) + len(hung)  # type: ignore[call-overload]
        result["failed"] = int(result["failed"]) + len(hung)  # type: ignore[call-overload]
        result["failures"] = [f"{t}: HANG" for t in hung] + list(result["failures"])  # type: ignore[call-overload]
    return result


def _raw_baseline(
    directory: Path, module: str, size: int, timeout: float, env: dict[str, str]
) -> dict[str, object]:
    """The raw run is the yardstick, not the code under test: a run that crashed before its
    report (MPICH itself, once in a CI run: test_msgzero raw 0/0 while secure passed 8/8) is run
    once more, and the crash is printed on stderr so that it is seen, not hidden."""
    result = run_module(directory, module, size, timeout, env)
    if not result.get("crash"):
        return result
    print(f"raw {module} -n {size} crashed, run again: {result['failures']}", file=sys.stderr, flush=True)
    return run_module(directory, module, size, timeout, env)


def _hung_test(stdout: str) -> str | None:
    """The test that hung: the earliest of the tests each rank started last."""
    order: list[str] = []
    last: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("START "):
            _, rank, test = line.split(" ", 2)
            if test not in order:
                order.append(test)
            last[rank] = test
    if not last:
        return None
    return min(last.values(), key=order.index)


def _run_once(
    directory: Path,
    module: str,
    size: int,
    timeout: float,
    env: dict[str, str],
    test_timeout: float,
    skip: list[str],
) -> dict[str, object]:
    mpiexec = str(BIN / "mpiexec") if (BIN / "mpiexec").exists() else "mpiexec"
    env = dict(env, MPISH_PEER_SKIP=",".join(skip), MPISH_PEER_TEST_TIMEOUT=str(test_timeout))
    try:
        proc = subprocess.run(
            [mpiexec, "-n", str(size), sys.executable, "-c", RUNNER, module],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        hung_test = _hung_test(out)
        return {"run": 0, "failed": 0, "skipped": 0, "failures": [], "hang": True, "hung_test": hung_test}
    for line in proc.stdout.splitlines():
        if line.startswith("PEER "):
            result: dict[str, object] = json.loads(line[5:])
            result["hang"] = False
            return result
    culprit = _hung_test(proc.stdout) if test_timeout and "Timeout (" in proc.stderr else None
    if culprit is not None:
        log = Path(tempfile.gettempdir()) / f"mpish-peer-hang-{module}-{size}.txt"
        log.write_text(proc.stderr)
    return {
        "run": 0,
        "failed": 0,
        "skipped": 0,
        "failures": [proc.stderr[-500:]],
        "hang": False,
        "crash": culprit is None,
        "hung_test": culprit,
    }


def passed(result: dict[str, object]) -> int:
    return int(result["run"]) - int(result["failed"]) - int(result["skipped"])  # type: ignore[call-overload]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("-m", nargs="+", default=list(MODULES))
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--test-timeout", type=float, default=0.0, help="seconds per test (0: none)")
    parser.add_argument("--secure-only", action="store_true", help="skip the raw runs")
    parser.add_argument("--json", type=Path)
    parser.add_argument("-k", nargs="+", default=[], help="only the tests whose id holds one of these words")
    args = parser.parse_args(argv)
    # A module run that hits the per-test watchdog once ran its other tests and then waited
    # test_timeout: it must not be ended as a whole (that hides the rest of the module).
    args.timeout = max(args.timeout, args.test_timeout + 120)
    cache = Path(os.environ.get("MPISH_PEER_CACHE", ROOT / ".venv" / "mpi4py-sdist"))
    sdist = fetch_sdist(cache)
    table = []
    with tempfile.TemporaryDirectory(prefix="mpish-peer-") as tmp:
        home = Path(tmp) / "home"
        from mpish.keys import ensure_identity

        ensure_identity(home)
        env = dict(os.environ, MPISH_HOME=str(home), PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        env["MPISH_PEER_ONLY"] = ",".join(args.k)
        raw_dir, secure_dir = prepare(sdist, Path(tmp), tuple(args.m))
        for module in args.m:
            for size in args.n:
                empty: dict[str, object] = {"run": 0, "failed": 0, "skipped": 0, "failures": []}
                empty["hang"] = False
                raw = empty if args.secure_only else _raw_baseline(raw_dir, module, size, args.timeout, env)
                started = time.monotonic()
                sec = run_module(secure_dir, module, size, args.timeout, env, args.test_timeout)
                seconds = time.monotonic() - started
                row = {"module": module, "size": size, "raw": raw, "secure": sec}
                table.append(row)
                hung = len(sec.get("hangs", []))  # type: ignore[arg-type]
                hang = "  HANG" if sec["hang"] else (f"  hung tests: {hung}" if hung else "")
                raw_counts = f"{passed(raw):4}/{raw['run']:<4}"
                print(
                    f"{module:24} -n {size}  raw {raw_counts} secure {passed(sec):4}/{sec['run']:<4}"
                    f" {seconds:5.1f} s{hang}",
                    flush=True,
                )
    raw_total = sum(passed(r["raw"]) for r in table)  # type: ignore[arg-type]
    sec_total = sum(passed(r["secure"]) for r in table)  # type: ignore[arg-type]
    hangs = sum(
        1 if r["secure"]["hang"] else len(r["secure"].get("hangs", []))  # type: ignore[index, attr-defined]
        for r in table
    )
    ratio = sec_total / raw_total if raw_total else 0.0
    print(
        f"SUMMARY raw_passed={raw_total} secure_passed={sec_total} ratio={ratio:.3f} hangs={hangs}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
