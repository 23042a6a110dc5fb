"""shell/segments.py against real processes and real /dev/shm files: what a session's processes have
mapped is found by name and inode; another user's is named; only ours, the very file mapped, is removed."""

from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mpish.shell.segments import Segment, foreign_segments, mapped_segments, remove_ours
from mpish.transport.shm import describe, foreign_memory, mappings

MAPS = ("import mmap, sys, time\n"
        "with open(sys.argv[1], 'r+b') as f:\n"
        "    m = mmap.mmap(f.fileno(), 4096)\n"
        "print('mapped', flush=True)\n"
        "time.sleep(60)\n")


@pytest.fixture
def segment() -> Iterator[Path]:
    path = Path(f"/dev/shm/mpich_shm_mpishtest{os.getpid():x}_0")
    path.write_bytes(bytes(mmap.PAGESIZE))
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def _mapping(path: Path) -> Iterator[int]:
    """A process that has ``path`` mapped, while the block runs: its pid."""
    with subprocess.Popen([sys.executable, "-c", MAPS, str(path)], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "mapped\n"
            yield proc.pid
        finally:
            proc.kill()


def test_the_segments_a_process_has_mapped_are_found_by_name_and_inode(segment: Path) -> None:
    with _mapping(segment) as pid:
        assert Segment(str(segment), segment.stat().st_ino) in mapped_segments([pid, os.getpid()])
        assert foreign_segments([pid]) == []  # ours


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root")
def test_a_segment_of_another_user_that_a_process_mapped_is_named_with_its_owner(segment: Path) -> None:
    """What a server stuck in MPI_Init on a planted segment looks like from the console."""
    os.chown(segment, 65534, 65534)
    with _mapping(segment) as pid:
        [(found, uid)] = foreign_segments([pid])
        assert (found.path, found.inode, found.deleted) == (str(segment), segment.stat().st_ino, False)
        assert uid == 65534
        assert remove_ours(mapped_segments([pid])) == []  # never another user's
        assert segment.exists()


def test_only_the_very_file_that_was_mapped_is_removed(segment: Path) -> None:
    """A name reused since (another file, another inode) is left alone."""
    with _mapping(segment) as pid:
        seen = mapped_segments([pid])
    segment.unlink()
    segment.write_bytes(b"another session's")
    deadline = time.monotonic() + 5
    while segment.stat().st_ino == seen[0].inode and time.monotonic() < deadline:  # tmpfs may reuse it
        segment.unlink()
        segment.write_bytes(b"another session's")
    assert remove_ours(seen) == [] and segment.exists()
    fresh = Segment(str(segment), segment.stat().st_ino)
    assert remove_ours([fresh]) == [str(segment)] and not segment.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root")
def test_a_planted_segment_removed_once_mapped_is_still_named_with_its_owner(segment: Path) -> None:
    """Security review: another user planted the segment, waited until the servers had mapped it,
    then removed it; maps showed '(deleted)', which was skipped, so the start watcher saw nothing."""
    os.chown(segment, 65534, 65534)
    with _mapping(segment) as pid:
        segment.unlink()
        [(found, uid)] = foreign_segments([pid])
        assert (found.path, found.deleted, uid) == (str(segment), True, 65534)  # read through map_files


def test_a_removed_mpich_segment_whose_owner_is_hidden_is_reported_as_such(
    segment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel refuses /proc/PID/map_files (a user without CAP_CHECKPOINT_RESTORE) and
    no descriptor is left open on it, a segment removed while in use is reported with an unknown
    owner (MPICH removes its own only at finalize); one renamed once mapped is found all the same."""
    real_stat = os.stat

    def no_map_files(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if "/map_files/" in str(path) or "/fd/" in str(path):  # and no descriptor left open on it
            raise PermissionError(1, "Operation not permitted", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", no_map_files)
    with _mapping(segment) as pid:
        assert foreign_segments([pid]) == []  # ours, named: its owner is read from the name
        renamed = segment.with_name("innocent")
        segment.rename(renamed)
        assert foreign_segments([pid]) == []  # renamed, still ours
        renamed.unlink()
        [(found, uid)] = foreign_segments([pid])
        assert (found.path, found.deleted, uid) == (str(renamed), True, None)
        message = describe((found, uid), who="a shell server")
        assert "was removed while in use, which hides its owner" in message and str(renamed) in message


@pytest.mark.parametrize(("name", "remover", "reported"), [
    ("ucx_shm_posix_mpishtest", "another", False),  # UCX removes its own right after attaching them
    ("sm_segment.mpishtest", "another", True),  # Open MPI 5 never does: its owner hid it (helper-117)
    ("sm_segment.mpishtest", "this process", False),  # the Open MPI console drops its own (remove_ours)
])
def test_a_removed_segment_whose_owner_is_hidden_is_reported_unless_removed_by_design_or_by_us(
    monkeypatch: pytest.MonkeyPatch, name: str, remover: str, reported: bool,
) -> None:
    """As a user without privilege: no map_files, no descriptor left open on the file. A name
    of Open MPI's passed whoever had removed it, so a planted one hid by its owner went on."""
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: (_ for _ in ()).throw(PermissionError(1, "no"))
                        if "/map_files/" in str(path) or "/fd/" in str(path) else real_stat(path, *a, **k))
    path = Path(f"/dev/shm/{name}.{os.getpid()}.0")
    path.write_bytes(bytes(mmap.PAGESIZE))
    try:
        with _mapping(path) as pid:
            if remover == "this process":
                assert remove_ours(mapped_segments([pid], (name,))) == [str(path)]
            else:
                path.unlink()
            assert [m.deleted for m in mappings(pid, (name,))] == [True]
            assert [found.path for found, _ in foreign_memory(pid)] == ([str(path)] if reported else [])
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root")
def test_a_planted_segment_renamed_once_mapped_is_still_named_with_its_owner(segment: Path) -> None:
    """Review of the check (helper-115): maps shows a file's current name, and the planter may
    rename her file once the victims have mapped it ('innocent'): every file of /dev/shm's file
    system counts, whatever its name."""
    os.chown(segment, 65534, 65534)
    with _mapping(segment) as pid:
        renamed = segment.with_name(f"innocent{os.getpid()}")
        segment.rename(renamed)
        try:
            [(found, uid)] = foreign_segments([pid])
            assert (found.path, uid) == (str(renamed), 65534)
        finally:
            renamed.unlink()
