"""A part file swapped by another user between the digest check and the rename (in a
directory others can write, not sticky) is detected: her file does not stay at the target."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from mpish.shell.transfer import PartFile, shared_warning

DATA = b"genuine results\n" * 100


def swap_before_rename(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """At the rename, another user first moves the part file away and puts hers under its name."""
    replace = os.replace

    def swapped(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
        os.rename(src, directory / "stolen", src_dir_fd=src_dir_fd)
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755, dir_fd=src_dir_fd)
        os.write(fd, b"#!/bin/sh\necho pwned\n")
        os.close(fd)
        replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "replace", swapped)


def test_a_part_file_replaced_before_its_rename_is_reported_and_the_impostor_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = PartFile(tmp_path / "results.sh")
    part.write(DATA)
    swap_before_rename(monkeypatch, tmp_path)
    error = part.commit(hashlib.sha256(DATA).digest(), len(DATA), 0o644)
    assert "part file was replaced by someone else" in error and "\n" not in error
    assert not (tmp_path / "results.sh").exists()


def test_a_tree_part_file_replaced_before_its_rename_is_reported_and_the_impostor_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        part = PartFile(tmp_path / "results.sh", directory)
        part.write(DATA)
        swap_before_rename(monkeypatch, tmp_path)
        error = part.commit(hashlib.sha256(DATA).digest(), len(DATA), 0o644)
    finally:
        os.close(directory)
    assert "part file was replaced by someone else" in error
    assert not (tmp_path / "results.sh").exists()


def test_a_part_file_left_alone_is_committed(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "results.sh")
    part.write(DATA)
    assert part.commit(hashlib.sha256(DATA).digest(), len(DATA), 0o644) == ""
    assert (tmp_path / "results.sh").read_bytes() == DATA


def test_only_a_directory_others_can_write_and_not_sticky_is_warned_about(tmp_path: Path) -> None:
    for name, mode in (("shared", 0o777), ("group", 0o2770), ("sticky", 0o1777), ("own", 0o755)):
        (tmp_path / name).mkdir()
        (tmp_path / name).chmod(mode)
    warning = shared_warning(tmp_path / name for name in ("shared", "group", "sticky", "own", "shared"))
    assert warning.count(str(tmp_path / "shared")) == 1 and str(tmp_path / "group") in warning
    assert "sticky" not in warning.split(":")[0] and str(tmp_path / "own") not in warning
    assert "\n" not in warning
    assert shared_warning([tmp_path / "sticky", tmp_path / "own"]) == ""


@pytest.mark.parametrize("tree", [False, True])
def test_two_ranks_writing_one_destination_leave_the_file_when_a_siblings_rename_comes_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tree: bool
) -> None:
    """mpish -n 4 on one file system: rank A renamed its copy into place, rank B renamed its own
    over it before A's check, and A took B's copy for an impostor and removed it (the file the
    user had there was gone; :put F F lost F itself)."""
    target = tmp_path / "shared.txt"
    target.write_text("the old content\n")
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) if tree else None
    try:
        first, second = PartFile(target, directory), PartFile(target, directory)
        for part in (first, second):
            part.write(DATA)
        replace = os.replace
        errors = []

        def then_the_sibling(src: Any, dst: Any, **fds: Any) -> None:
            replace(src, dst, **fds)
            if not errors:  # the first rename (A's): B's whole commit comes now
                errors.append("B's commit")
                errors[0] = second.commit(hashlib.sha256(DATA).digest(), len(DATA), 0o644)

        monkeypatch.setattr(os, "replace", then_the_sibling)
        assert first.commit(hashlib.sha256(DATA).digest(), len(DATA), 0o644) == ""
    finally:
        if directory is not None:
            os.close(directory)
    assert errors == [""]
    assert target.read_bytes() == DATA
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shared.txt"]  # no part file left


def test_a_same_size_file_of_other_bytes_at_the_target_is_still_taken_for_an_impostor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = PartFile(tmp_path / "results.sh")
    part.write(DATA)
    replace = os.replace

    def swapped(src: Any, dst: Any, **fds: Any) -> None:
        os.rename(src, tmp_path / "stolen")  # kept: its inode number is not given to hers
        Path(src).write_bytes(DATA.upper())  # as long as ours, other bytes
        replace(src, dst, **fds)

    monkeypatch.setattr(os, "replace", swapped)
    error = part.commit(hashlib.sha256(DATA).digest(), len(DATA), 0o644)
    assert "part file was replaced by someone else" in error
    assert not (tmp_path / "results.sh").exists()
    assert (tmp_path / "stolen").read_bytes() == DATA
