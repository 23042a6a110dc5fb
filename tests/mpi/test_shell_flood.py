"""Ctrl-C and a closed stdout while output floods in (new-user review)."""

from __future__ import annotations

import time

import pytest

from terminal import Person

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("mode", ["live", "grouped"])
def test_ctrl_c_interrupts_a_command_flooding_output_and_the_prompt_returns(
    person: Person, mode: str
) -> None:
    person.prompt()
    person.run(f":mode {mode}")
    person.type("echo started-$MPISH_RANK; yes | head -c 3000000000; echo not-reached")
    if mode == "live":
        person.child.expect(["started-1", "started-2"])
        person.child.expect(["started-1", "started-2"])
    else:  # grouped: nothing is shown until the command ends; let output pile up at the console
        time.sleep(3)
    person.child.sendcontrol("c")  # read at full speed meanwhile: pexpect keeps a small window
    person.child.expect("interrupting", timeout=30, searchwindowsize=4096)
    if mode == "grouped":  # what was gathered (hundreds of MB) is being shown: Ctrl-C ends that too
        person.child.expect("y\r\n", timeout=30)
        person.child.sendcontrol("c")
    person.child.expect(r"#>", timeout=60, searchwindowsize=4096)  # what was in flight is shown
    screen = person.run("echo after-$MPISH_RANK")
    assert "after-1" in screen and "after-2" in screen, screen
    assert "not-reached" not in screen
