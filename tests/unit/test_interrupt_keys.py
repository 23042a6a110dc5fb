"""keyboard.InterruptKeys on a real pseudo-terminal: Ctrl-C is a key while an operation runs,
including one typed after the operation's last look at the keys."""

from __future__ import annotations

import os
import pty

from mpish.shell.keyboard import InterruptKeys


def test_a_ctrl_c_typed_after_the_last_poll_still_counts_and_voids_what_was_typed_before_it() -> None:
    # --copy -f: a Ctrl-C in the last moments of one batch was kept as a typed byte (dropped by
    # the typed-ahead editor) and the next batch started, as if nothing had been pressed
    controller, terminal = pty.openpty()
    try:
        with os.fdopen(os.dup(terminal), "r") as stream:
            keys = InterruptKeys(stream)
            with keys:
                assert not keys.pressed()
                os.write(controller, b"ls\r\x03cd /tmp\r")  # after the operation's last poll
            assert keys.interrupted
            assert bytes(keys.typed) == b"cd /tmp\n"  # what came after the Ctrl-C is typed ahead (ICRNL)
            ordinary = InterruptKeys(stream)
            with ordinary:
                os.write(controller, b"echo hi\r")
            assert not ordinary.interrupted and bytes(ordinary.typed) == b"echo hi\n"
    finally:
        os.close(controller)
        os.close(terminal)
