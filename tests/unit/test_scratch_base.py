"""Where a scratch directory goes (shell/scratch.py's private_directory): never in a base
that another user can change. With TMPDIR a group's project directory (writable by others,
not sticky), another uid renamed the shell server's fresh 0700 directory away, put its own
in its place and had the user's bash source its command file there (helper-137: 4 of 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mpish.shell import scratch


def _base(tmp_path: Path, *modes: int) -> Path:
    """tmp_path/d0/d1/... with the given modes, the last one the TMPDIR to use."""
    here = tmp_path
    for index, mode in enumerate(modes):
        here = here / f"d{index}"
        here.mkdir()
        here.chmod(mode)
    return here


@pytest.mark.parametrize(("modes", "used"), [
    ((0o700,), True),
    ((0o755,), True),
    ((0o1777,), os.geteuid() == 0),  # sticky and root's, as /tmp: others cannot rename ours there
    ((0o777,), False),  # a shared directory without the sticky bit
    ((0o2770,), False),  # a group's project directory
    ((0o777, 0o700), False),  # ours, inside one that others can rename and replace
])
def test_a_scratch_directory_is_made_only_where_no_other_user_can_swap_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modes: tuple[int, ...], used: bool
) -> None:
    base = _base(tmp_path, *modes)
    monkeypatch.setenv("TMPDIR", str(base))
    made = Path(scratch.private_directory("mpish-test-"))
    try:
        assert (made.parent == base) is used, (made, oct(modes[-1]))
        assert made.stat().st_mode & 0o777 == 0o700
        assert scratch.held_by_us(str(made.parent))
    finally:
        made.rmdir()


def test_held_by_us_follows_links_to_the_directory_they_name(tmp_path: Path) -> None:
    shared = _base(tmp_path, 0o777)
    (tmp_path / "link").symlink_to(shared)
    assert not scratch.held_by_us(str(tmp_path / "link"))
    assert scratch.held_by_us(str(tmp_path))
    assert not scratch.held_by_us(str(tmp_path / "missing"))


def test_a_tmpdir_that_is_a_link_kept_where_others_can_swap_it_is_used_through_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TMPDIR=/shared/link, /shared writable by others, the link naming a private directory:
    the check passed on the target, but the directory's path went through the link, which
    another user can replace (helper-139)."""
    shared, mine = _base(tmp_path, 0o777), tmp_path / "mine"
    mine.mkdir(mode=0o700)
    (shared / "link").symlink_to(mine)
    monkeypatch.setenv("TMPDIR", str(shared / "link"))
    made = Path(scratch.private_directory("mpish-test-"))
    try:
        assert made.parent == mine, made
    finally:
        made.rmdir()
