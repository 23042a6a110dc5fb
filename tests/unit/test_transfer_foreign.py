"""Another user's symbolic link or directory at a copy's destination name (a security review
with a second uid): a planted link is never a directory to copy into (a file replaces it, a
tree is refused there, a name given with a trailing / is refused), and a tree's root that
exists already must be the user's own. Files of another uid are made by chown (root only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_shell_tree import copy  # a tree sent through a reader into a writer

from mpish.shell import protocol as p
from mpish.shell.console_transfer import get_destinations
from mpish.shell.server.transfer_files import Put
from mpish.shell.transfer import ForeignLink, destination, into_directory
from mpish.shell.tree import tree_destination

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")
NOBODY = 65534


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """(a link named ``out`` in a shared directory, the directory of the victim's it points to)."""
    victim = tmp_path / "home" / "docs"
    victim.mkdir(parents=True)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    link = shared / "out"
    link.symlink_to(victim)
    os.lchown(link, NOBODY, NOBODY)
    return link, victim


def test_another_users_link_is_no_directory_to_copy_into_and_a_file_replaces_it(
    planted: tuple[Path, Path],
) -> None:
    """`:get /etc/hostname /tmp/shared/out`, `out` a planted link to the victim's ~/docs: the
    file went into ~/docs (the README promised the link is replaced, never followed)."""
    link, victim = planted
    assert not into_directory(link)
    assert destination(link, "hostname", False) == link  # the file takes the link's name
    with pytest.raises(ForeignLink, match=f"symbolic link of uid {NOBODY}.*not followed"):
        destination(link, "hostname", True)  # named as a directory: refused, not followed
    assert tree_destination(link, "tree") == link  # a tree's root there: refused by the writer
    mine = link.parent / "mine"
    mine.symlink_to(victim)  # the user's own link is followed, as cp does
    assert into_directory(mine) and destination(mine, "f", False) == mine / "f"


def test_a_put_into_another_users_link_given_as_a_directory_writes_nothing_there(
    planted: tuple[Path, Path],
) -> None:
    link, victim = planted
    put = Put(p.PutStart(1, f"{link}/", 4, 0o644, "f"), str(link.parent))
    assert put.part is None and "not followed" in put.error, put.error
    assert os.listdir(victim) == []


def test_a_get_into_another_users_link_given_as_a_directory_is_refused_before_anything_is_asked(
    planted: tuple[Path, Path],
) -> None:
    link, _ = planted
    with pytest.raises(ValueError, match="not followed"):
        get_destinations(None, "/etc/hostname", f"{link}/", [1])  # type: ignore[arg-type]


def test_a_trees_root_that_another_user_made_in_advance_is_not_copied_into(tmp_path: Path) -> None:
    """`--rcopy ~/priv --dest /tmp/shared` with `priv.host1` made by another user (mode 0777):
    the copy went into her directory, where she read files the 0700 ~/priv had kept private."""
    source = tmp_path / "priv"
    (source / "inner").mkdir(parents=True)
    (source / "notes.txt").write_bytes(b"secret")
    squatted = tmp_path / "shared" / "priv.host1"
    squatted.mkdir(parents=True, mode=0o777)
    os.chown(squatted, NOBODY, NOBODY)
    verdict = copy(source, squatted)
    assert verdict.startswith(f"cannot write {squatted}: it exists and belongs to uid {NOBODY}"), verdict
    assert os.listdir(squatted) == []


def test_a_file_named_as_a_file_is_not_put_into_a_directory_another_user_made_at_its_name(
    tmp_path: Path,
) -> None:
    """`:get /root/priv/notes.txt /tmp/out`, `/tmp/out` a directory mallory made in advance (0777):
    the copy went into it as notes.txt, readable by her (helper-113). Named without a trailing /
    her directory is refused; with one, the user asked for "into it" (a shared project
    directory), as cp does."""
    squatted = tmp_path / "out"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, NOBODY, NOBODY)
    with pytest.raises(OSError, match=f"directory of uid {NOBODY}.*name it with a trailing /"):
        destination(squatted, "notes.txt", False)
    with pytest.raises(ValueError, match=f"directory of uid {NOBODY}"):
        get_destinations(None, "/root/priv/notes.txt", str(squatted), [1])  # type: ignore[arg-type]
    put = Put(p.PutStart(1, str(squatted), 4, 0o644, "notes.txt"), str(tmp_path))
    assert put.part is None and "not yours" in put.error, put.error
    assert os.listdir(squatted) == []
    assert destination(squatted, "notes.txt", True) == squatted / "notes.txt"  # said: into it
    mine = tmp_path / "mine"
    mine.mkdir()
    assert destination(mine, "notes.txt", False) == mine / "notes.txt"  # the user's own: as before
