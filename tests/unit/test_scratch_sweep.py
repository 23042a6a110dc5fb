"""Scratch directories (shell/scratch.py): locked while their owner lives, swept once it is gone.

A shell server killed with SIGKILL left its state directory (a copy of the user's exported
environment) in /tmp for good; 1,086 had piled up on the test machine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mpish.shell.scratch import LAUNCH_PREFIX, MIN_AGE, SHELL_PREFIX, HeldDirectory, host_tag, sweep

# a process that makes a held directory, says its path, and waits to be killed
OWNER = textwrap.dedent("""
    import sys, time
    from mpish.shell.scratch import HeldDirectory
    held = HeldDirectory(sys.argv[1], "7-")
    open(held.path + "/state", "w").write("export SECRET=1\\n")
    print(held.path, flush=True)
    time.sleep(600)
""")


def start_owner(tmp: Path, kind: str) -> tuple[subprocess.Popen[str], Path]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, kind], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "TMPDIR": str(tmp)})
    assert owner.stdout is not None
    path = Path(owner.stdout.readline().strip())
    assert path.parent == tmp and path.name.startswith(f"{kind}{host_tag()}-7-"), path
    return owner, path


def end(owner: subprocess.Popen[str]) -> None:
    owner.kill()
    owner.wait()
    assert owner.stdout is not None
    owner.stdout.close()


def later() -> float:
    return time.time() + MIN_AGE + 1


@pytest.mark.parametrize("kind", [SHELL_PREFIX, LAUNCH_PREFIX])
def test_the_directory_of_an_owner_killed_with_sigkill_is_swept_and_a_live_ones_is_not(
        tmp_path: Path, kind: str) -> None:
    killed, gone = start_owner(tmp_path, kind)
    live, kept = start_owner(tmp_path, kind)
    try:
        end(killed)  # SIGKILL
        assert (gone / "state").exists()  # SIGKILL removes nothing by itself
        assert sweep(str(tmp_path), kind, now=later()) == [str(gone)]
        assert not gone.exists()
        assert (kept / "state").read_text() == "export SECRET=1\n"  # its owner still holds the lock
    finally:
        end(live)
    assert sweep(str(tmp_path), kind, now=later()) == [str(kept)]


def test_a_new_held_directory_sweeps_what_a_killed_one_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    killed, gone = start_owner(tmp_path, SHELL_PREFIX)
    end(killed)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    old = time.time() - MIN_AGE - 5
    os.utime(gone, (old, old))
    held = HeldDirectory(SHELL_PREFIX, "1-")
    try:
        assert not gone.exists()
        assert Path(held.path).is_dir()
    finally:
        held.remove()
    assert not Path(held.path).exists()


def test_a_directory_younger_than_the_minimum_age_is_left_to_its_maker(tmp_path: Path) -> None:
    """Made, not yet locked (the moment between mkdir and flock): not swept."""
    young = tmp_path / (SHELL_PREFIX + "3-abc")
    young.mkdir()
    assert sweep(str(tmp_path), SHELL_PREFIX) == []
    assert young.is_dir()
    assert sweep(str(tmp_path), SHELL_PREFIX, now=later()) == [str(young)]


def test_links_files_and_other_prefixes_are_never_removed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "data").write_text("keep")
    (tmp_path / (SHELL_PREFIX + "1-link")).symlink_to(target)
    (tmp_path / (SHELL_PREFIX + "1-file")).write_text("a file")
    other = tmp_path / "mpish-prte-xyz"
    other.mkdir()
    assert sweep(str(tmp_path), SHELL_PREFIX, now=later()) == []
    assert (target / "data").read_text() == "keep"
    assert (tmp_path / (SHELL_PREFIX + "1-link")).is_symlink()
    assert (tmp_path / (SHELL_PREFIX + "1-file")).is_file() and other.is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's directory")
def test_another_users_directory_of_the_same_name_is_not_touched(tmp_path: Path) -> None:
    theirs = tmp_path / (SHELL_PREFIX + "1-theirs")
    theirs.mkdir()
    (theirs / "state").write_text("theirs")
    os.chown(theirs, 65534, 65534)
    assert sweep(str(tmp_path), SHELL_PREFIX, now=later()) == []
    assert (theirs / "state").read_text() == "theirs"


def test_another_hosts_directories_in_a_shared_tmpdir_are_never_swept(tmp_path: Path) -> None:
    """On a TMPDIR shared by hosts (NFS), a directory lock may be this host's alone: another
    host's live directory looked free here (review). A sweep looks at this host's names only."""
    theirs = tmp_path / f"{SHELL_PREFIX}{'0' * 8 if host_tag() != '0' * 8 else '1' * 8}-3-abc"
    theirs.mkdir()
    ours = tmp_path / f"{SHELL_PREFIX}{host_tag()}-3-abc"
    ours.mkdir()
    for directory in (theirs, ours):
        os.utime(directory, (1_000_000_000, 1_000_000_000))
    assert sweep(str(tmp_path), f"{SHELL_PREFIX}{host_tag()}-") == [str(ours)]
    assert theirs.is_dir() and not ours.exists()


def test_removal_never_follows_a_link_planted_where_the_directory_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a base directory others can write (a group's project directory, not sticky), a group
    member renamed the live directory away and planted a link to ~/important in its place:
    the session's end deleted every file there (review)."""
    important = tmp_path / "important"
    important.mkdir()
    (important / "data").write_text("keep")
    base = tmp_path / "shared"
    base.mkdir()
    monkeypatch.setenv("TMPDIR", str(base))
    held = HeldDirectory(SHELL_PREFIX, "1-")
    Path(held.path, "state").write_text("ours")
    moved = tmp_path / "moved"
    os.rename(held.path, moved)
    os.symlink(important, held.path)
    held.remove()
    assert (important / "data").read_text() == "keep"
    assert Path(held.path).is_symlink()  # the planted name is left alone, not removed through
    assert list(moved.iterdir()) == []  # what was ours is gone, through the descriptor
