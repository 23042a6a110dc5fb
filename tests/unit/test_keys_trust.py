"""StrictModes for the trust files: owners, modes, the directories above, links and FIFOs.

Files owned by another user are made for real: as root, with ``os.chown`` to ``nobody``,
or by running a process as ``nobody`` (``setpriv``), as another user of the cluster would.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish import keys
from mpish.wire.noise import public_bytes

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="making files owned by another user needs root")


def other_uid() -> int:
    return pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mpish-home"
    monkeypatch.setenv("MPISH_HOME", str(path))
    return path


def key_line() -> str:
    return keys.format_public_key(public_bytes(X25519PrivateKey.generate()), "someone") + "\n"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# --- the owner of the mpish directory and of each file ---------------------------------------


@as_root
def test_world_writable_home_made_by_another_user_is_refused() -> None:
    """The issue's attack: another user makes /tmp/k (1777) with their key in authorized_keys."""
    attacker = Path("/tmp") / f"mpish-test-{secrets.token_hex(8)}"
    script = (
        "import os, sys; os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o1777); "
        "open(os.path.join(sys.argv[1], 'authorized_keys'), 'w').write(sys.argv[2])"
    )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("no setpriv")
    subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", script,
         str(attacker), key_line()],
        check=True,
    )
    try:
        assert attacker.stat().st_uid == other_uid()
        with pytest.raises(keys.KeyPermissionError) as info:
            keys.AuthorizedKeys.load(attacker)
    finally:
        shutil.rmtree(attacker)
    message = str(info.value)
    assert f"the mpish directory '{attacker}' is owned by nobody" in message
    assert "mkdir -m 700 DIR and set MPISH_HOME=DIR" in message


def test_sticky_world_writable_home_is_refused_even_if_mine(home: Path) -> None:
    home.mkdir()
    home.chmod(0o1777)
    with pytest.raises(keys.KeyPermissionError, match=rf"Permissions 01777 .*chmod 700 '{home}'"):
        keys.AuthorizedKeys.load()
    home.chmod(0o700)
    assert len(keys.AuthorizedKeys.load()) == 0


def test_a_shared_temporary_directory_as_home_is_refused_with_no_advice_to_chmod_it() -> None:
    """MPISH_HOME=/tmp advised `chmod 700 '/tmp'`, which would break the system (a new user's review)."""
    with pytest.raises(keys.KeyPermissionError) as info:
        keys.AuthorizedKeys.load("/tmp")
    message = str(info.value)
    assert "chmod 700" not in message
    assert "do not chmod it" in message and "mkdir -m 700 DIR and set MPISH_HOME=DIR" in message


def test_group_writable_home_is_refused_and_no_key_is_made_in_it(home: Path) -> None:
    home.mkdir()
    home.chmod(0o770)
    with pytest.raises(keys.KeyPermissionError, match="too open"):
        keys.ensure_identity()
    assert not (home / keys.PRIVATE_KEY_NAME).exists()


@as_root
@pytest.mark.parametrize(
    ("name", "load"),
    [
        (keys.PRIVATE_KEY_NAME, lambda: keys.load_identity()),
        (keys.AUTHORIZED_KEYS_NAME, lambda: keys.AuthorizedKeys.load()),
        (keys.KNOWN_HOSTS_NAME, lambda: keys.KnownHosts().lookup("node1")),
    ],
)
def test_trust_file_owned_by_another_user_is_refused(
    home: Path, name: str, load: Callable[[], object]
) -> None:
    keys.generate_identity(home, comment="me")
    path = home / name
    if name != keys.PRIVATE_KEY_NAME:
        write(path, key_line() if name == keys.AUTHORIZED_KEYS_NAME else "")
    os.chown(path, other_uid(), -1)
    with pytest.raises(keys.KeyPermissionError) as info:
        load()
    message = str(info.value)
    assert f"'{path}' is owned by nobody (uid {other_uid()})" in message
    assert f"rm '{path}'" in message and f"chown {pwd.getpwuid(os.geteuid()).pw_name} '{path}'" in message


@as_root
def test_home_owned_by_another_user_is_refused_for_every_file(home: Path) -> None:
    keys.generate_identity(home, comment="me")
    os.chown(home, other_uid(), -1)
    for load in (keys.load_identity, keys.AuthorizedKeys.load, lambda: keys.KnownHosts().lookup("n")):
        with pytest.raises(keys.KeyPermissionError, match=r"the mpish directory .* is owned by nobody"):
            load()
    with pytest.raises(keys.KeyPermissionError):
        keys.KnownHosts().check("node1", public_bytes(X25519PrivateKey.generate()))
    assert not (home / keys.KNOWN_HOSTS_NAME).exists()


def test_group_writable_known_hosts_is_refused(home: Path) -> None:
    hosts = keys.KnownHosts()
    pub = public_bytes(X25519PrivateKey.generate())
    assert hosts.check("node1", pub) == "added"
    path = home / keys.KNOWN_HOSTS_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o620)
    with pytest.raises(keys.KeyPermissionError, match=rf"Permissions 0620 .*chmod 600 '{path}'"):
        hosts.check("node1", pub)
    path.chmod(0o644)  # readable by others is fine
    assert hosts.check("node1", pub) == "known"


# --- the directories above --------------------------------------------------------------------


def test_group_writable_directory_above_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    home = project / "alice" / "mpish"
    keys.generate_identity(home, comment="me")
    project.chmod(0o775)
    with pytest.raises(keys.KeyPermissionError) as info:
        keys.load_identity(home)
    message = str(info.value)
    assert f"bad modes for directory '{project}' (0775)" in message
    assert f"chmod go-w '{project}'" in message
    project.chmod(0o755)
    assert keys.load_identity(home).comment == "me"


def test_sticky_directory_above_is_fine(tmp_path: Path) -> None:
    shared = tmp_path / "scratch"
    shared.mkdir()
    shared.chmod(0o1777)
    home = shared / "alice-mpish"
    keys.generate_identity(home, comment="me")
    assert keys.load_identity(home).comment == "me"


@as_root
def test_directory_above_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    home = theirs / "mpish"
    keys.generate_identity(home, comment="me")
    os.chown(theirs, other_uid(), -1)
    with pytest.raises(keys.KeyPermissionError, match=rf"'{theirs}' is owned by nobody"):
        keys.load_identity(home)


# --- links and FIFOs ----------------------------------------------------------------------------


@pytest.mark.timeout(10)  # the old code blocked in open() on a FIFO for ever
@pytest.mark.parametrize("name", [keys.PRIVATE_KEY_NAME, keys.AUTHORIZED_KEYS_NAME, keys.KNOWN_HOSTS_NAME])
def test_fifo_in_place_of_a_trust_file_is_refused_without_blocking(home: Path, name: str) -> None:
    identity = keys.generate_identity(home, comment="me")
    path = home / name
    path.unlink(missing_ok=True)
    os.mkfifo(path, 0o600)
    with pytest.raises(keys.KeyFileError, match=rf"'{path}' is not a regular file; remove it: rm '{path}'"):
        if name == keys.PRIVATE_KEY_NAME:
            keys.load_identity()
        elif name == keys.AUTHORIZED_KEYS_NAME:
            keys.trusted_keys(identity)
        else:
            keys.KnownHosts().check("node1", identity.public)


@pytest.mark.parametrize("name", [keys.PRIVATE_KEY_NAME, keys.AUTHORIZED_KEYS_NAME, keys.KNOWN_HOSTS_NAME])
def test_symlink_in_place_of_a_trust_file_is_refused(home: Path, tmp_path: Path, name: str) -> None:
    identity = keys.generate_identity(home, comment="me")
    target = write(tmp_path / "elsewhere", key_line())
    path = home / name
    if name == keys.PRIVATE_KEY_NAME:
        target.write_bytes(path.read_bytes())
        path.unlink()
    path.symlink_to(target)
    with pytest.raises(keys.KeyPermissionError, match=rf"'{path}' is a symbolic link"):
        if name == keys.PRIVATE_KEY_NAME:
            keys.load_identity()
        elif name == keys.AUTHORIZED_KEYS_NAME:
            keys.trusted_keys(identity)
        else:
            keys.KnownHosts().check("node1", identity.public)
    assert target.read_text().count("\n") <= 6  # nothing was appended through the link


def test_symlinked_mpish_directory_is_checked_where_it_points(tmp_path: Path) -> None:
    real = tmp_path / "real"
    keys.generate_identity(real, comment="me")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert keys.load_identity(link).comment == "me"
    real.chmod(0o777)
    with pytest.raises(keys.KeyPermissionError, match=rf"the mpish directory '{real}' are too open"):
        keys.load_identity(link)
