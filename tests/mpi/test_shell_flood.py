"""Ctrl-C and a closed stdout while output floods in (new-user review)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shell_util import MPISH, make_home, shell_env
from terminal import Person, shown_after_ctrl_c

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("mode", ["live", "grouped"])
def test_ctrl_c_interrupts_a_command_flooding_output_and_the_prompt_returns(
    person: Person, mode: str
) -> None:
    person.prompt()
    person.run(f":mode {mode}")
    person.type("echo started-$MPISH_RANK; yes | head -c 3000000000; echo not-reached")
    if mode == "live":  # one rank's flood is enough (over TCP one rank's output can lead by seconds);
        # it has begun: a Ctrl-C right after "started-N" can stop yes before it wrote anything
        person.child.expect(r"\d: y\r\n", searchwindowsize=4096)
    else:  # grouped: nothing is shown until the command ends; let output pile up at the console
        time.sleep(3)
    person.child.sendcontrol("c")  # read at full speed meanwhile: pexpect keeps a small window
    person.child.expect("interrupting", timeout=30, searchwindowsize=4096)
    prompt = False
    if mode == "grouped":  # what was gathered (hundreds of MB) is being shown: Ctrl-C ends that too;
        # past the gather limit (64 MiB in 3 s) it was shown as it came, and the rest is dropped
        prompt = person.child.expect(["y\r\n", r"#>"], timeout=60, searchwindowsize=4096) == 1
        if not prompt:
            person.child.sendcontrol("c")
    if mode == "live":  # what was in flight (up to a window per rank) is dropped, as a terminal does
        person.child.expect("of output in flight at the Ctrl-C not shown", timeout=60, searchwindowsize=4096)
    if not prompt:
        person.child.expect(r"#>", timeout=60, searchwindowsize=4096)
    # not person.run: a second Ctrl-C that came as the display ended is one at the prompt, which
    # draws another prompt, and the run's screen was the text between the two (a CI run)
    person.child.sendline("echo after-$MPISH_RANK")
    person.child.expect(r"after-(1|2)\r\n(.|\r|\n)*after-(1|2)\r\n", timeout=60)
    shown = person.child.before + person.child.after
    assert {"after-1", "after-2"} <= set(re.findall(r"after-\d", shown)), shown
    assert "not-reached" not in shown


def test_a_long_display_of_gathered_output_says_that_ctrl_c_stops_it(person: Person) -> None:
    """Ctrl-C of a flood at the console: megabytes gathered before the key were then shown for
    20-50 s at a slow terminal, with no word that a second Ctrl-C ends that display."""
    person.prompt()
    person.type("yes | head -c 3000000")
    person.child.expect(r"mpish: [\d.]+ MiB of output gathered; showing it \(Ctrl-C stops it\)", timeout=60)
    person.child.expect(r"#>", timeout=60, searchwindowsize=4096)
    screen = person.run("echo after-$MPISH_RANK")
    assert "after-1" in screen and "after-2" in screen, screen


def _processes(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return found.stdout.split()


def test_stdout_closed_by_head_ends_the_command_quietly_with_the_sigpipe_status(tmp_path: Path) -> None:
    env = shell_env(make_home(tmp_path / "home"))
    script = f'"{MPISH}" -n 1 -c "yes flood-{tmp_path.name}" | head -2; echo "status=${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=120, check=False)
    assert done.stdout == f"flood-{tmp_path.name}\n" * 2 + "status=141\n", (done.stdout[-500:], done.stderr)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert not _processes(f"yes flood-{tmp_path.name}")


@pytest.mark.parametrize("mode", [[], ["-b"], ["-L"]])
def test_stdout_closed_while_several_ranks_gather_ends_the_command_with_the_sigpipe_status(
    tmp_path: Path, mode: list[str]
) -> None:
    """Grouped output writes nothing before the command ends, so it never met the EPIPE:
    ``mpish -n 2 -c yes | true`` gathered (on disk) for good."""
    env = shell_env(make_home(tmp_path / "home"))
    command = f'"{MPISH}" -n 2 {" ".join(mode)} -c "yes flood-{tmp_path.name}"'
    script = f'{command} | true; echo "status=${{PIPESTATUS[0]}}"'
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=120, check=False)
    finally:
        leftover = _processes(f"yes flood-{tmp_path.name}")
        for pid in leftover:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
    assert done.stdout == "status=141\n", (done.stdout[-500:], done.stderr)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert not leftover


def test_an_endless_grouped_command_gives_way_to_labelled_lines_so_head_ends_it_with_sigpipe(
    tmp_path: Path,
) -> None:
    """Grouped output waits for the end: ``mpish -n 2 -c yes | head -2`` ran for ever (and
    filled /tmp). Past the gather limit (64 MiB by default) the lines flow, labelled."""
    env = shell_env(make_home(tmp_path / "home"))
    word = f"flood-{tmp_path.name}"
    script = f'"{MPISH}" -n 2 -c "yes {word}" | head -2; echo "status=${{PIPESTATUS[0]}}"'
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=120, check=False)
    finally:
        leftover = _processes(f"yes {word}")
        for pid in leftover:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
    *shown, status = done.stdout.splitlines()
    assert status == "status=141", (done.stdout[-500:], done.stderr)
    assert len(shown) == 2 and all(line in (f"@1: {word}", f"@2: {word}") for line in shown), shown
    assert done.stderr.count("more than 64 MiB of output gathered") == 1, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert not leftover


def test_grouped_output_below_the_gather_limit_is_gathered_as_before(tmp_path: Path) -> None:
    env = shell_env(make_home(tmp_path / "home"))
    done = subprocess.run([str(MPISH), "-n", "2", "--gather-limit", "1", "-c", "seq 3; echo oops >&2"],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "---------------\n@1-2 (2)\n---------------\n1\n2\n3\n", done.stdout
    assert done.stderr == "@1-2: oops\n", done.stderr


@pytest.mark.parametrize("mode", [[], ["-L"]])
def test_ctrl_c_on_a_terminal_ends_a_one_shot_command_while_its_gathered_output_is_being_shown(
    tmp_path: Path, mode: list[str]
) -> None:
    """``mpish -n 2 -c yes`` at a terminal: past the gather limit what was gathered is shown as
    labelled lines before the rest flows, and that display never looked at the keyboard in -c
    mode (only the interactive console's did): Ctrl-C did nothing until 64 MiB had been written
    to the terminal (a minute and more there). Here the limit is 8 MiB and the screen is read
    only once the display began: after the Ctrl-C, far less than what was gathered comes."""
    import pexpect

    env = shell_env(make_home(tmp_path / "home"))
    word = f"flood-{tmp_path.name}"
    child = pexpect.spawn(MPISH, ["-n", "2", "--gather-limit", "8", *mode, "-c", f"yes {word}"], env=env,
                          cwd=str(tmp_path), timeout=60, dimensions=(50, 250))
    try:
        child.expect(b"more than 8 MiB of output gathered")
        after = shown_after_ctrl_c(child)
        assert after < (4 << 20), f"{after} bytes shown after the Ctrl-C"
    finally:
        if child.isalive():
            child.terminate(force=True)
        for pid in _processes(f"yes {word}"):
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.mark.parametrize(("mode", "command"), [(["-n", "2"], "echo hi"), (["-n", "2", "--json"], "echo hi"),
                                               (["-n", "1"], "echo hi; sleep 1000.5")])
def test_a_full_stdout_ends_the_command_with_one_line_and_status_1(
    tmp_path: Path, mode: list[str], command: str
) -> None:
    """``mpish -c 'echo hi' > /dev/full`` ended in a traceback (OSError: No space left on
    device, from the sink's write): now one line and status 1, as cat's "write error"; a
    command still running when its output cannot be written is interrupted (one target's
    output is streamed)."""
    env = shell_env(make_home(tmp_path / "home"))
    script = f'"{MPISH}" {" ".join(mode)} -c "{command}" > /dev/full'
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                              cwd=str(tmp_path), timeout=120, check=False)
    finally:
        leftover = _processes("sleep 1000.5")
        for pid in leftover:
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "mpish: cannot write the output: No space left on device\n"
    assert not leftover


def test_a_closed_stdout_drops_the_output_as_ssh_does_without_a_traceback(tmp_path: Path) -> None:
    """``mpish -c CMD >&-`` ended in AttributeError ('NoneType' object has no attribute
    'buffer'): fds 0-2 closed by the caller are now /dev/null, as OpenSSH makes them."""
    env = shell_env(make_home(tmp_path / "home"))
    script = f'"{MPISH}" -n 2 -c "echo out; echo err >&2; exit 3" >&-'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "err" in done.stderr, done.stderr
