"""The ``mpish`` command line: keygen, keys, and the main-shell placeholder."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mpish import keys
from mpish.cli import main
from mpish.wire.noise import public_bytes


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "mpish-home"
    monkeypatch.setenv("MPISH_HOME", str(path))
    return path


def test_keygen_creates_key_and_prints_fingerprint(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "-C", "alice@node1"]) == 0
    out = capsys.readouterr().out
    identity = keys.load_identity()
    assert identity.comment == "alice@node1"
    assert f"saved in {home / 'id_x25519'}" in out
    assert f"saved in {home / 'id_x25519.pub'}" in out
    assert f"{identity.fingerprint} alice@node1" in out
    assert stat.S_IMODE((home / "id_x25519").stat().st_mode) == 0o600


def test_keygen_refuses_overwrite_without_force(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "-C", "one"]) == 0
    first = keys.load_identity().public
    capsys.readouterr()
    assert main(["keygen", "-C", "two"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mpish: ")
    assert "already exists" in err and "-f" in err
    assert "Traceback" not in err
    assert keys.load_identity().public == first
    assert main(["keygen", "-f", "-C", "two"]) == 0
    assert keys.load_identity().public != first
    assert keys.load_identity().comment == "two"


def test_keys_lists_identity_and_authorized(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "-C", "me"])
    friend = public_bytes(X25519PrivateKey.generate())
    (home / "authorized_keys").write_text(keys.format_public_key(friend, "friend@lab") + "\n")
    (home / "authorized_keys").chmod(0o600)
    capsys.readouterr()
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    me = keys.load_identity()
    assert me.public_line in out.splitlines()
    assert f"{me.fingerprint} me" in out
    assert f"{keys.fingerprint(friend)} friend@lab" in out
    assert "1 key(s)" in out


def test_keys_without_identity_fails_cleanly(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mpish: no mpish identity")
    assert "mpish keygen" in err
    assert "Traceback" not in err


def test_keys_refuses_unprotected_key(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keygen", "-C", "me"])
    os.chmod(home / "id_x25519", 0o644)
    capsys.readouterr()
    assert main(["keys"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mpish:\n@@@")
    assert "WARNING: UNPROTECTED PRIVATE KEY FILE!" in err
    assert "Permissions 0644" in err


def test_run_main_receives_parsed_options(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_run_main(args: object) -> int:
        seen.update(vars(args))
        return 0

    monkeypatch.setattr("mpish.cli.run_main", fake_run_main)
    assert main(["--np", "3", "-vv", "-u", "2.5", "-t", "4", "-w", "@1-2", "-x", "@2", "-L", "ls", "-l"]) == 0
    assert seen == {
        "np": 3,
        "command": "ls -l",  # the words after the options, as clush
        "json": False,
        "verbose": 2,
        "debug": False,
        "timeout": 2.5,
        "connect_timeout": 4.0,
        "targets": "@1-2",
        "exclude": ["@2"],
        "groups": [],
        "exclude_groups": [],
        "all": False,
        "hostfiles": [],
        "label": "rank",
        "dshbak": False,
        "merge_stderr": False,
        "lines": True,
        "labels": True,
        "quiet": False,
        "diff": False,
        "gather_limit": 64.0,
        "outdir": None,
        "errdir": None,
        "maxrc": True,
        "stats": False,
        "fanout": 0,  # all at once (-f N: N)
        "nostdin": False,
        "tty": False,
        "commands_from": None,
        "color": "auto",
        "copy": False,
        "rcopy": False,
        "preserve": False,
        "dest": None,
        "copy_request": None,
    }


def test_copy_takes_the_words_as_files_and_dest_after_them_as_clush_does(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mpish.shell.options import CopyRequest

    seen = []
    monkeypatch.setattr("mpish.cli.run_main", lambda args: seen.append(args.copy_request) or 0)
    assert main(["-n", "2", "--copy", "a", "b c", "--dest", "/tmp"]) == 0
    assert main(["-n", "2", "--dest=/srv", "--rcopy", "/etc/motd"]) == 0
    assert main(["-n", "2", "--copy", "a", "--dest=/x"]) == 0
    assert seen == [CopyRequest(("a", "b c"), "/tmp", False), CopyRequest(("/etc/motd",), "/srv", True),
                    CopyRequest(("a",), "/x", False)]
    # options between and after the files are options, as clush 1.9 reads them after --copy
    # (`-x @2` after the files copied to @2 anyway and then looked for a file '@2')
    seen.clear()
    monkeypatch.setattr("mpish.cli.run_main", lambda args: seen.append((args.copy_request, args.exclude,
                                                                        args.targets)) or 0)
    assert main(["-n", "2", "--copy", "a", "-x", "@2", "b", "--dest", "/d", "-w", "@1-2"]) == 0
    assert main(["-n", "2", "--copy", "--", "-f", "--dest", "-x"]) == 0  # after --: files
    assert main(["-n", "2", "--copy", "a", "-x", "@1", "--", "-b", "-c"]) == 0
    assert seen == [(CopyRequest(("a", "b"), "/d", False), ["@2"], "@1-2"),
                    (CopyRequest(("-f", "--dest", "-x"), "", False), [], "@all"),
                    (CopyRequest(("a", "-b", "-c"), "", False), ["@1"], "@all")]
    for argv, said in ((["--copy"], "--copy needs the files to copy"),
                       (["--rcopy", "-c", "ls", "f"], "give no command (-c or -C)"),
                       (["--copy", "f", "--dest"], "argument --dest: expected one argument"),
                       (["--copy", "f", "--dest="], "--dest needs a directory"),
                       (["--dest", "/tmp", "ls"], "--dest goes with --copy or --rcopy"),
                       (["--copy", "--rcopy", "f"], "not allowed with argument"),
                       (["--json", "--copy", "f"], "--json reports commands; --copy/--rcopy say how"),
                       (["-u", "-1", "true"], "'-1' is not a timeout: seconds, a number from 0 (none) up"),
                       (["-u", "nan", "true"], "'nan' is not a timeout"),  # both ran with no timeout
                       (["-u", "inf", "true"], "'inf' is not a timeout"),
                       (["-t", "-5", "true"], "'-5' is not a timeout"),
                       (["-t", "0", "true"], "'0' is not a timeout: seconds, a number above 0"),
                       (["--diff", "-L", "true"], "--diff compares gathered outputs: not with -L"),
                       (["--diff", "--json", "true"], "--diff compares gathered outputs"),
                       (["--json", "-L", "true"], "--json prints one JSON object per target: not with -L"),
                       (["--json", "-v", "true"], "--json prints one JSON object per target")):
        with pytest.raises(SystemExit) as info:
            main(["-n", "2", *argv])
        assert info.value.code == 2, argv
        assert said in capsys.readouterr().err, argv


def test_c_and_commands_from_exclude_each_other(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-c", "ls", "-C", "-"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_bad_option_is_a_usage_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-n", "many"])
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["keygen", "--bogus"])
    assert info.value.code == 2


@pytest.mark.parametrize("count", ["0", "-2"])
def test_fewer_than_one_rank_is_a_usage_error_before_any_launch(
    home: Path, capsys: pytest.CaptureFixture[str], count: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["-n", count, "-c", "true"])
    assert info.value.code == 2
    assert f"-n {count}: give at least one shell server" in capsys.readouterr().err


def test_python_dash_m_keygen_subprocess(tmp_path: Path) -> None:
    home = tmp_path / "sub-home"
    env = {**os.environ, "MPISH_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "mpish", "keygen", "-C", "sub@proc"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    identity = keys.load_identity(home)
    assert identity.comment == "sub@proc"
    assert identity.fingerprint in result.stdout
    assert stat.S_IMODE((home / "id_x25519").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    again = subprocess.run(
        [sys.executable, "-m", "mpish", "keygen"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("mpish: ")
    assert "Traceback" not in again.stderr


def test_ssh_with_only_an_exclusion_is_a_usage_error_not_a_host_named_after_the_command(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mpish ssh -x node3 reboot` took "reboot" for the hosts (clush: No node to run on)."""
    with pytest.raises(SystemExit) as info:
        main(["ssh", "-x", "host1", "uptime"])
    assert info.value.code == 2
    assert "-x/-X only leave hosts out: name the hosts first" in capsys.readouterr().err
    import argparse

    from mpish.cli import _add_ssh, _parse_ssh

    parser = argparse.ArgumentParser(prog="mpish ssh")
    _add_ssh(parser)
    args = _parse_ssh(parser, ["-x", "node3", "node[1-4]", "uptime"])  # hosts, then the command
    assert (args.hosts, args.exclude, args.command) == ("node[1-4]", ["node3"], "uptime")


def test_ssh_copy_takes_hosts_from_w_anywhere_or_as_the_first_word() -> None:
    import argparse

    from mpish.cli import _add_ssh, _parse_ssh
    from mpish.shell.options import CopyRequest

    parser = argparse.ArgumentParser(prog="mpish ssh")
    _add_ssh(parser)
    for argv, hosts, nodes in ((["--copy", "f", "g", "-w", "n1", "--dest", "/d"], None, ["n1"]),
                               (["n[1-2]", "--copy", "f", "g", "--dest", "/d"], "n[1-2]", []),
                               (["--copy", "n[1-2]", "f", "g", "--dest=/d"], "n[1-2]", [])):
        args = _parse_ssh(parser, argv)
        expected = (hosts, nodes, CopyRequest(("f", "g"), "/d", False))
        assert (args.hosts, args.nodes, args.copy_request) == expected, argv


def test_a_rank_beyond_n_is_refused_before_any_server_starts(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`mpish -n 3 -w @5 hostname` started 3 servers (seconds) before saying rank 5 has none."""
    from mpish.shell import mpi_session

    def no_launch(*args: object) -> None:
        raise AssertionError("servers were started for a rank set that -n cannot have")

    monkeypatch.setattr(mpi_session, "start_console", no_launch)
    assert main(["-n", "3", "-w", "@2,5-6", "-c", "true"]) == 2
    assert "no shell server on rank(s) 5-6: -n 3 starts @1-3" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "said"), [
    (["ssh", "node1", "-n", "-c", "cat"],
     "unrecognized arguments: -n (clush's -n, no stdin, is --nostdin here)"),
    (["-n", "2", "-n", "-c", "hostname"],
     "invalid int value: '-c' (clush's -n, no stdin, is --nostdin here; mpish's -n is the number of ranks)"),
])
def test_clushs_n_gets_a_hint_to_nostdin(home: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                         said: str) -> None:
    """A new user typed clush's -n (no stdin) and read only argparse's words."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert said in capsys.readouterr().err


def test_c_with_a_local_file_says_it_runs_it_where_clushs_c_copies_it_and_how_bash_finds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clush user: ``mpish ssh -w host[1-2] -c install.sh`` ran the script on every host
    (clush's -c is --copy); the run goes on, after a note naming --copy."""
    import argparse

    from mpish.cli import _add_ssh, _parse_ssh

    monkeypatch.chdir(tmp_path)
    (tmp_path / "install.sh").write_text("echo hi\n")
    parser = argparse.ArgumentParser(prog="mpish ssh")
    _add_ssh(parser)
    args = _parse_ssh(parser, ["-w", "host[1-2]", "-c", "install.sh"])
    assert args.command == "install.sh"
    said = capsys.readouterr().err
    # without a slash bash looks it up in PATH: "run by its path" was followed by "command not found"
    assert said == ("mpish: note: -c runs a command: install.sh, without a slash, is looked up in PATH on "
                    "each target (./install.sh runs it by its path) (clush's -c copies a file: --copy "
                    "install.sh here)\n"), said
    _parse_ssh(parser, ["-w", "host[1-2]", "-c", "./install.sh"])
    said = capsys.readouterr().err
    assert said == ("mpish: note: -c runs a command: ./install.sh is run by its path on each target "
                    "(clush's -c copies a file: --copy ./install.sh here)\n"), said
    for command in ("bash install.sh", "no-such-file"):  # a command line, or no local file: nothing said
        _parse_ssh(parser, ["-w", "host[1-2]", "-c", command])
        assert capsys.readouterr().err == "", command
