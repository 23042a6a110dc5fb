"""A full-screen program for the pty tests: says whether it has a terminal and its size,
sets a scroll region, reads raw keys and prints them in hex until 'q', then exits 3.

Run as ``python raw_keys.py`` (by :attach on a shell server); prints ``size=ROWSxCOLS``
again on each SIGWINCH.
"""

import os
import signal
import sys
import termios
import tty


def show_size(*_: object) -> None:
    cols, rows = os.get_terminal_size(0)
    os.write(1, f"size={rows}x{cols}\r\n".encode())


def main() -> int:
    signal.signal(signal.SIGWINCH, show_size)
    os.write(1, f"tty={os.isatty(0)} term={os.environ.get('TERM')} cwd={os.getcwd()} "
                f"mark={os.environ.get('MARK')}\r\n".encode())
    os.write(1, b"\x1b[1;24r\x1b[24;1Hscroll-region-set\r\n")
    show_size()
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        while True:
            try:
                key = os.read(0, 1)
            except InterruptedError:
                continue
            os.write(1, f"key={key.hex()}\r\n".encode())
            if key in (b"q", b""):
                return 3
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.write(1, b"\x1b[r")


if __name__ == "__main__":
    sys.exit(main())
