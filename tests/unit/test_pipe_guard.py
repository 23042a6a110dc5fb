"""PipeGuard: what arrives after stdout's reader left (``mpish ... -c yes | head -2``) is
dropped at once, not formatted for /dev/null (that took seconds after head had ended)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import sys
    from mpish.shell.grouping import LiveSink, PipeGuard, Style
    from mpish.shell.protocol import STDERR, STDOUT

    sys.stdin.read(1)  # the reader has left: stdout's pipe has no reader now
    calls = []
    sink = LiveSink(sys.stdout.buffer, sys.stderr.buffer, Style(False))
    formatted = sink.output
    sink.output = lambda *args: calls.append(1) or formatted(*args)
    guard = PipeGuard(sink)
    for _ in range(1000):
        guard.output(1, STDOUT, b"y\\n" * 4096)
    guard.output(1, STDERR, b"an error\\n")  # stderr is still shown
    print(f"closed={guard.closed} formatted={len(calls)}", file=sys.stderr)
""")


def test_output_after_the_reader_left_is_dropped_unformatted() -> None:
    child = subprocess.Popen([sys.executable, "-c", PROGRAM], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stdin is not None
    child.stdout.close()  # as head does once it has its lines
    _, err = child.communicate(b"x", timeout=60)
    assert child.returncode == 0, err
    # the first output met the EPIPE; none of the 999 after it was formatted; stderr was shown
    assert err.decode() == "@1: an error\nclosed=True formatted=2\n", err
