"""Identity keys, authorized_keys and known_hosts (mpish.keys). Every key is made per test."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish import keys
from mpish.wire.errors import AuthenticationError, MpishError
from mpish.wire.noise import public_bytes

# A low-order point of Curve25519 (order 8): every DH with it gives all zeros.
# The armour lines, spelled in pieces (no committed-key scanner should match this file).
BEGIN = "-----BEGIN " + " ".join(("MPISH", "PRIVATE", "KEY")) + "-----"
END = "-----END " + " ".join(("MPISH", "PRIVATE", "KEY")) + "-----"
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mpish-home"
    monkeypatch.setenv("MPISH_HOME", str(path))
    return path


def new_public() -> bytes:
    return public_bytes(X25519PrivateKey.generate())


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# --- home and identity -----------------------------------------------------------------


def test_home_from_env_and_default(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert keys.mpish_home() == home
    assert keys.mpish_home("/somewhere") == Path("/somewhere")
    monkeypatch.delenv("MPISH_HOME")
    assert keys.mpish_home() == Path.home() / ".mpish"


def test_an_mpish_home_that_is_a_file_is_named_as_not_a_directory(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user trial (helper-130): MPISH_HOME naming a file said "[Errno 17] File exists"."""
    home.write_text("")
    with pytest.raises(MpishError, match=r"^MPISH_HOME '.*mpish-home' is not a directory: give a directory"):
        keys.generate_identity()
    monkeypatch.setenv("MPISH_HOME", str(home / "below"))
    with pytest.raises(MpishError, match=r"^cannot create MPISH_HOME '.*mpish-home/below': Not a directory$"):
        keys.generate_identity()


def test_generate_then_load_round_trip(home: Path) -> None:
    made = keys.generate_identity(comment="alice@node1")
    loaded = keys.load_identity()
    assert loaded.public == made.public
    assert loaded.comment == "alice@node1"
    assert loaded.private.private_bytes_raw() == made.private.private_bytes_raw()
    assert loaded.fingerprint == made.fingerprint
    assert public_bytes(loaded.private) == loaded.public
    pub_text = (home / keys.PUBLIC_KEY_NAME).read_text()
    assert pub_text == f"mpish-x25519 {b64(made.public)} alice@node1\n"
    assert keys.parse_public_key(pub_text) == (made.public, "alice@node1")


def test_private_file_is_armoured_and_never_contains_raw_key_in_repr(home: Path) -> None:
    made = keys.generate_identity(comment="c")
    text = (home / keys.PRIVATE_KEY_NAME).read_text()
    lines = text.splitlines()
    assert lines[0] == BEGIN
    assert lines[-1] == END
    assert all(len(line) <= 64 for line in lines[1:-1])
    blob = base64.b64decode("".join(lines[1:-1]))
    assert blob.startswith(b"MPISHKEY\x01")
    assert made.private.private_bytes_raw() in blob
    assert b64(made.private.private_bytes_raw()) not in repr(made)
    assert "private" not in repr(made)


def test_file_modes(home: Path) -> None:
    old = os.umask(0o022)
    try:
        keys.generate_identity(comment="c")
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / keys.PRIVATE_KEY_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE((home / keys.PUBLIC_KEY_NAME).stat().st_mode) == 0o644
    # no temporary file is left behind
    assert sorted(p.name for p in home.iterdir()) == [keys.PRIVATE_KEY_NAME, keys.PUBLIC_KEY_NAME]


def test_generate_refuses_to_overwrite_without_flag(home: Path) -> None:
    first = keys.generate_identity(comment="first")
    with pytest.raises(keys.KeyFileError, match="refusing to overwrite"):
        keys.generate_identity(comment="second")
    assert keys.load_identity().public == first.public
    second = keys.generate_identity(comment="second", overwrite=True)
    assert second.public != first.public
    assert keys.load_identity().public == second.public
    assert stat.S_IMODE((home / keys.PRIVATE_KEY_NAME).stat().st_mode) == 0o600


def test_default_comment_is_user_at_host(home: Path) -> None:
    made = keys.generate_identity()
    assert "@" in made.comment
    assert made.comment == keys.default_comment()


def test_bad_comment_rejected(home: Path) -> None:
    with pytest.raises(keys.KeyFormatError):
        keys.generate_identity(comment="two\nlines")
    assert not (home / keys.PRIVATE_KEY_NAME).exists()


def test_ensure_identity_creates_once(home: Path) -> None:
    first, created = keys.ensure_identity()
    assert created is True
    again, created_again = keys.ensure_identity()
    assert created_again is False
    assert again.public == first.public


def test_identity_rejects_mismatched_public() -> None:
    with pytest.raises(ValueError, match="does not belong"):
        keys.Identity(private=X25519PrivateKey.generate(), public=new_public(), comment="")


def test_missing_key_says_run_keygen(home: Path) -> None:
    with pytest.raises(keys.KeyFileError, match="mpish keygen"):
        keys.load_identity()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o600 | 0o010, 0o700 | 0o001])
def test_load_refuses_unprotected_key(home: Path, mode: int) -> None:
    keys.generate_identity(comment="c")
    path = home / keys.PRIVATE_KEY_NAME
    path.chmod(mode)
    with pytest.raises(keys.KeyPermissionError) as info:
        keys.load_identity()
    message = str(info.value)
    assert "WARNING: UNPROTECTED PRIVATE KEY FILE!" in message
    assert f"Permissions 0{mode:03o} for '{path}' are too open." in message
    assert "It is required that your private key files are NOT accessible by others." in message
    assert "This private key will be ignored." in message
    assert f"chmod 600 '{path}'" in message
    assert isinstance(info.value, keys.KeyFileError)
    assert isinstance(info.value, MpishError)
    path.chmod(0o600)
    assert keys.load_identity().comment == "c"


def _write_private(home: Path, text: str | bytes) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(home / keys.PRIVATE_KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)


def _armour(blob: bytes) -> str:
    return f"{BEGIN}\n{b64(blob)}\n{END}\n"


def _blob(private: bytes, public: bytes, comment: bytes = b"c", version: int = 1) -> bytes:
    return b"MPISHKEY" + bytes([version]) + private + public + len(comment).to_bytes(2, "big") + comment


def _good_blob() -> bytes:
    key = X25519PrivateKey.generate()
    return _blob(key.private_bytes_raw(), public_bytes(key))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "missing armour"),
        ("hello\n", "missing armour"),
        (f"{BEGIN}\n!!!!\n{END}\n", "base64"),
        (_armour(b"NOTMAGIC" + bytes(80)), "bad magic"),
        (_armour(_good_blob()[:50]), "truncated"),
        (_armour(_good_blob() + b"x"), "wrong length"),
        (_armour(_good_blob()[:-1]), "wrong length"),
        (b"\xff\xfe binary", "not text"),
        (
            _armour(_blob(X25519PrivateKey.generate().private_bytes_raw(), new_public())),
            "does not match",
        ),
        (_armour(_blob(bytes(32), bytes(32), version=7)), "version 7"),
    ],
)
def test_corrupt_private_key_is_named_with_what_is_wrong_and_what_to_do(
    home: Path, content: str | bytes, expected: str
) -> None:
    _write_private(home, content)
    with pytest.raises(keys.KeyFormatError, match=expected) as info:
        keys.load_identity()
    assert str(home / keys.PRIVATE_KEY_NAME) in str(info.value)
    if "version" not in expected:  # a newer format is not damage: no advice to replace the key
        assert "run 'mpish keygen'" in str(info.value)


def test_hand_built_valid_blob_loads(home: Path) -> None:
    """The format documented in the module docstring is the one read."""
    key = X25519PrivateKey.generate()
    _write_private(home, _armour(_blob(key.private_bytes_raw(), public_bytes(key), b"hand")))
    loaded = keys.load_identity()
    assert loaded.public == public_bytes(key)
    assert loaded.comment == "hand"


# --- public keys -----------------------------------------------------------------------


def test_fingerprint_matches_ssh_keygen_format() -> None:
    # sha256 of 32 zero bytes, base64 without padding
    expected = "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU"
    assert keys.fingerprint(bytes(32)) == expected
    fp = keys.fingerprint(new_public())
    assert fp.startswith("SHA256:") and not fp.endswith("=") and len(fp) == 7 + 43


def test_format_and_parse_public_key() -> None:
    pub = new_public()
    line = keys.format_public_key(pub, "bob@host with spaces")
    assert line == f"mpish-x25519 {b64(pub)} bob@host with spaces"
    assert keys.parse_public_key(line) == (pub, "bob@host with spaces")
    assert keys.parse_public_key(f"  mpish-x25519   {b64(pub)}  \n") == (pub, "")
    assert keys.format_public_key(pub) == f"mpish-x25519 {b64(pub)}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", "expected"),
        ("mpish-x25519", "expected"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA== x", "unsupported key type"),
        ("mpish-x25519 not*base64 c", "base64"),
        (f"mpish-x25519 {b64(bytes(31))} c", "32 bytes"),
        (f"mpish-x25519 {b64(bytes(33))} c", "32 bytes"),
        (f"mpish-x25519 {b64(bytes(32))} c", "low order"),
        (f"mpish-x25519 {b64(LOW_ORDER)} c", "low order"),
        # same 32 bytes, but the unused low bits of the last base64 digit are set
        (f"mpish-x25519 {b64(bytes.fromhex('09' + '00' * 31))[:-2]}B= c", "canonical"),
    ],
)
def test_parse_public_key_errors(line: str, expected: str) -> None:
    with pytest.raises(keys.KeyFormatError, match=expected):
        keys.parse_public_key(line)


def test_format_rejects_low_order() -> None:
    with pytest.raises(keys.KeyFormatError):
        keys.format_public_key(LOW_ORDER, "x")


# --- authorized_keys -------------------------------------------------------------------


def test_authorized_keys(home: Path) -> None:
    a, b, stranger = new_public(), new_public(), new_public()
    home.mkdir()
    (home / "authorized_keys").write_text(
        "# my other laptop\n"
        f"{keys.format_public_key(a, 'laptop')}\n"
        "\n"
        "   # indented comment\n"
        f"   {keys.format_public_key(b)}   \n"
    )
    (home / "authorized_keys").chmod(0o600)
    auth = keys.AuthorizedKeys.load()
    assert auth.is_authorized(a)
    assert auth.is_authorized(b)
    assert not auth.is_authorized(stranger)
    assert len(auth) == 2
    assert [(e.comment, e.line) for e in auth] == [("laptop", 2), ("", 5)]
    assert [e.fingerprint for e in auth] == [keys.fingerprint(a), keys.fingerprint(b)]


def test_authorized_keys_missing_is_empty(home: Path) -> None:
    auth = keys.AuthorizedKeys.load()
    assert len(auth) == 0
    assert not auth.is_authorized(new_public())


def test_authorized_keys_bad_lines_reported_with_numbers(home: Path) -> None:
    home.mkdir()
    (home / "authorized_keys").write_text(
        f"{keys.format_public_key(new_public())}\ngarbage\n# fine\nmpish-x25519 {b64(LOW_ORDER)} evil\n"
    )
    with pytest.raises(keys.KeyFormatError) as info:
        keys.AuthorizedKeys.load()
    message = str(info.value)
    assert "line 2:" in message
    assert "line 4:" in message
    assert "line 1:" not in message
    assert "authorized_keys" in message


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_authorized_keys_writable_by_others_refused(home: Path, mode: int) -> None:
    home.mkdir()
    path = home / "authorized_keys"
    path.write_text(f"{keys.format_public_key(new_public())}\n")
    path.chmod(mode)
    with pytest.raises(keys.KeyPermissionError, match="too open"):
        keys.AuthorizedKeys.load()
    path.chmod(0o644)  # readable by others is fine: public keys are public
    assert len(keys.AuthorizedKeys.load()) == 1


def test_trusted_keys_include_own_key(home: Path) -> None:
    me = keys.generate_identity(comment="me")
    assert keys.trusted_keys(me) == frozenset({me.public})
    friend = new_public()
    (home / "authorized_keys").write_text(keys.format_public_key(friend, "friend") + "\n")
    (home / "authorized_keys").chmod(0o600)
    assert keys.trusted_keys(me) == frozenset({me.public, friend})


# --- known_hosts -----------------------------------------------------------------------


def test_known_hosts_added_then_known(home: Path) -> None:
    hosts = keys.KnownHosts()
    pub = new_public()
    assert hosts.check("node1", pub) == "added"
    path = home / "known_hosts"
    assert path.read_text() == f"node1 mpish-x25519 {b64(pub)}\n"
    assert hosts.check("node1", pub) == "known"
    assert keys.KnownHosts().check("node1", pub, policy="strict") == "known"
    assert path.read_text().count("\n") == 1
    other = new_public()
    assert hosts.check("node2", other) == "added"
    assert hosts.lookup("node2") == [(other, 2)]


def test_known_hosts_changed_is_loud_and_file_untouched(home: Path) -> None:
    hosts = keys.KnownHosts()
    old, new = new_public(), new_public()
    hosts.check("other", new_public())
    hosts.check("node1", old)
    path = home / "known_hosts"
    before = path.read_bytes()
    for policy in ("accept-new", "strict"):
        with pytest.raises(keys.HostKeyChangedError) as info:
            hosts.check("node1", new, policy=policy)
        message = str(info.value)
        assert "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!" in message
        assert "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!" in message
        assert keys.fingerprint(new) in message
        assert keys.fingerprint(old) in message
        assert f"Offending mpish-x25519 key in {path}:2" in message
        assert "remove line 2" in message
        assert isinstance(info.value, AuthenticationError)
    assert path.read_bytes() == before


def test_known_hosts_strict_unknown(home: Path) -> None:
    hosts = keys.KnownHosts()
    pub = new_public()
    with pytest.raises(keys.UnknownHostError) as info:
        hosts.check("node9", pub, policy="strict")
    assert keys.fingerprint(pub) in str(info.value)
    assert isinstance(info.value, AuthenticationError)
    assert not (home / "known_hosts").exists()


def test_known_hosts_comma_list_comments_and_missing_newline(home: Path) -> None:
    home.mkdir()
    pub = new_public()
    path = home / "known_hosts"
    path.write_text(f"# pinned by hand\nnode1,node1.cluster mpish-x25519 {b64(pub)}")
    hosts = keys.KnownHosts()
    assert hosts.check("node1.cluster", pub) == "known"
    assert hosts.check("node1", pub) == "known"
    fresh = new_public()
    assert hosts.check("node2", fresh) == "added"
    assert path.read_text().splitlines()[-1] == f"node2 mpish-x25519 {b64(fresh)}"
    assert hosts.lookup("node1") == [(pub, 2)]


def test_known_hosts_malformed_line_is_an_error(home: Path) -> None:
    home.mkdir()
    path = home / "known_hosts"
    path.write_text("node1 mpish-x25519\n")
    with pytest.raises(keys.KeyFormatError, match="line 1"):
        keys.KnownHosts().check("node1", new_public())
    assert path.read_text() == "node1 mpish-x25519\n"


@pytest.mark.parametrize("host", ["", "a b", "a,b", "#x", "a\nb"])
def test_known_hosts_rejects_bad_host_names(home: Path, host: str) -> None:
    with pytest.raises(ValueError, match="invalid host"):
        keys.KnownHosts().check(host, new_public())


def test_known_hosts_rejects_bad_policy_and_key(home: Path) -> None:
    with pytest.raises(ValueError, match="policy"):
        keys.KnownHosts().check("node1", new_public(), policy="no")
    with pytest.raises(keys.KeyFormatError):
        keys.KnownHosts().check("node1", LOW_ORDER)
    assert not (home / "known_hosts").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a link of another user needs root")
def test_mpish_home_through_a_link_another_user_can_replace_is_refused(tmp_path: Path) -> None:
    """Security review (LOW): mallory's /tmp link to one of root's directories made
    `MPISH_HOME=/tmp/link mpish keygen` write root's key there, and she could later point it
    at any directory of root's (keys then read from there); `link/..` walked past the check."""
    target = tmp_path / "mine"
    (target / "sub").mkdir(mode=0o700, parents=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    theirs = shared / "theirs"
    theirs.symlink_to(target / "sub")
    os.lchown(theirs, 65534, 65534)
    chained = tmp_path / "chained"  # our link to their link: still theirs on the way
    chained.symlink_to(theirs)
    for path in (theirs, chained, theirs / "sub2", theirs / ".." / "made"):
        with pytest.raises(keys.KeyPermissionError) as refused:
            keys.generate_identity(path)
        said = str(refused.value)
        assert f"the symbolic link '{theirs}', on the way to the mpish directory '{path}', can be" in said
        assert "point MPISH_HOME at the directory itself" in str(refused.value)
    assert sorted(p.name for p in target.rglob("*")) == ["sub"]
    ours = shared / "ours"
    ours.symlink_to(target)
    keys.generate_identity(ours)  # the user's own link in a sticky directory: followed, as before
    assert (target / "id_x25519").exists()
    trusted_dir = tmp_path / "root_only"  # a link of another user where only root writes (/home -> /nfs)
    trusted_dir.mkdir(mode=0o755)
    nfs = trusted_dir / "home"
    nfs.symlink_to(target / "sub")
    os.lchown(nfs, 65534, 65534)
    keys.generate_identity(nfs)
    assert (target / "sub" / "id_x25519").exists()
