"""transport/ssh_ciphers.py: AES-GCM first only where nobody chose ssh's ciphers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mpish.transport import ssh_ciphers as c

DEFAULT = ["chacha20-poly1305@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr",
           "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
X86 = "processor\t: 0\nflags\t\t: fpu sse2 aes avx2\n"
NO_AES = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"


def test_cpu_flags_name_aes_on_x86_and_arm_only_when_listed() -> None:
    assert c.cpu_has_aes(X86)
    assert c.cpu_has_aes("Features\t: fp asimd aes pmull sha1\n")
    assert not c.cpu_has_aes(NO_AES)
    assert not c.cpu_has_aes("flags\t: vaes-ish\n")  # a word, not a substring
    assert not c.cpu_has_aes(None)


def test_gcm_moves_to_the_head_of_the_default_list_and_nothing_is_added_or_removed() -> None:
    order = c.preferred_order(DEFAULT)
    assert order[:2] == ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"]
    assert sorted(order) == sorted(DEFAULT)
    assert c.preferred_order(["aes128-ctr", "aes256-ctr"]) == []  # no GCM built in: left alone
    assert c.preferred_order(order) == []  # already first: nothing to say


@pytest.mark.parametrize("options", [
    ["-c", "aes128-ctr"], ["-qc", "aes128-ctr"], ["-caes128-ctr"], ["-o", "Ciphers=aes128-ctr"],
    ["-oCiphers aes128-ctr"], ["-o", "ciphers aes128-ctr"], ["-F", "a", "-F", "b"], ["-F"],
])
def test_options_that_choose_a_cipher_or_are_unclear_leave_ssh_alone(options: list[str]) -> None:
    assert c.config_file(options) is False


def test_other_options_keep_the_choice_open_and_name_the_config_file(tmp_path: Path) -> None:
    assert c.config_file(["-o", "BatchMode=yes", "-p", "22", "-v"]) is None
    assert c.config_file(["-F", str(tmp_path / "cfg")]) == str(tmp_path / "cfg")
    assert c.config_file([f"-F{tmp_path}/cfg", "-oConnectTimeout=5"]) == str(tmp_path / "cfg")


def test_a_ciphers_line_anywhere_even_through_an_include_is_a_choice(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    top = tmp_path / "config"
    top.write_text("Host *\n  ServerAliveInterval 30\n  # Ciphers in a comment is no choice\n")
    assert not c.configures_ciphers(top, tmp_path)
    top.write_text("Host *\n  Include conf.d/*.conf\n")
    (tmp_path / "conf.d" / "a.conf").write_text("Compression yes\n")
    assert not c.configures_ciphers(top, tmp_path)
    (tmp_path / "conf.d" / "b.conf").write_text("Host fast\n  Ciphers=aes128-ctr\n")
    assert c.configures_ciphers(top, tmp_path)
    assert not c.configures_ciphers(tmp_path / "missing", tmp_path)  # no file: ssh's defaults


def test_an_unreadable_config_or_include_loop_counts_as_a_choice(tmp_path: Path) -> None:
    looped = tmp_path / "loop"
    looped.write_text(f"Include {looped}\n")
    assert c.configures_ciphers(looped, tmp_path)
    assert c.configures_ciphers(tmp_path, tmp_path)  # a directory: cannot be read
    bad = tmp_path / "bad"
    bad.write_text('Include "unterminated\n')
    assert c.configures_ciphers(bad, tmp_path)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user config and a system config under tmp_path, an AES CPU, ssh's default list."""
    home = tmp_path / "home" / ".ssh"
    home.mkdir(parents=True)
    monkeypatch.setattr(c, "_user_config", lambda: str(home / "config"))
    monkeypatch.setattr(c, "SYSTEM_CONFIG", str(tmp_path / "etc" / "ssh_config"))
    monkeypatch.setattr(c, "_read", lambda path: X86)
    monkeypatch.setattr(c, "default_ciphers", lambda ssh: list(DEFAULT))
    c._KNOWN.clear()
    yield tmp_path
    c._KNOWN.clear()


def test_with_nothing_configured_ssh_is_told_to_prefer_gcm(machine: Path) -> None:
    options = c.cipher_options("ssh", ["-o", "BatchMode=yes"])
    assert options[0] == "-o" and options[1].startswith("Ciphers=aes256-gcm@openssh.com,aes128-gcm")
    assert c.cipher_options("/usr/bin/ssh", []) == options
    assert c.cipher_options("/opt/wrapper/my-ssh", []) == []  # another program: its options unknown


def test_a_user_or_system_config_choice_or_a_cpu_without_aes_is_kept(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (machine / "home" / ".ssh" / "config").write_text("Ciphers aes256-ctr\n")
    assert c.cipher_options("ssh", []) == []
    c._KNOWN.clear()
    (machine / "home" / ".ssh" / "config").unlink()
    (machine / "etc").mkdir()
    (machine / "etc" / "ssh_config").write_text("Host *\n    Ciphers aes256-ctr\n")
    assert c.cipher_options("ssh", []) == []
    c._KNOWN.clear()
    own = machine / "own_config"  # -F: only that file counts (ssh reads no other)
    own.write_text("Host x\n  Port 22\n")
    assert c.cipher_options("ssh", ["-F", str(own)])[1].startswith("Ciphers=aes256-gcm")
    c._KNOWN.clear()
    monkeypatch.setattr(c, "_read", lambda path: NO_AES)
    assert c.cipher_options("ssh", []) == []


def test_this_machines_ssh_reports_a_default_list_with_gcm() -> None:
    """The real ``ssh -G -F /dev/null``: the list is read (the setup installs OpenSSH)."""
    listed = c.default_ciphers("ssh")
    if not listed:
        pytest.skip("no OpenSSH client here")
    assert "aes256-gcm@openssh.com" in listed and "chacha20-poly1305@openssh.com" in listed
    assert c.default_ciphers("/nonexistent/ssh") == []


def test_a_prefetched_check_runs_ssh_once_and_later_calls_reuse_it(
    machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probes: list[str] = []
    monkeypatch.setattr(c, "default_ciphers", lambda ssh: probes.append(ssh) or list(DEFAULT))
    c.prefetch("ssh", ["-v"])
    first = c.cipher_options("ssh", ["-v"])  # waits for the prefetch's result if it is running
    assert c.cipher_options("ssh", ("-v",)) == first and first[1].startswith("Ciphers=aes256-gcm")
    assert probes == ["ssh"]
