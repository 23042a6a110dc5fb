"""The console's screen filter (shell/screen.py) against writing to a terminal, side by side.

For each kind of output, one "op" handles 1 MiB chunks of it, as the console's sink gets
them from a server, and writes them to a pseudo-terminal (a thread drains its other end,
as a terminal emulator would, without drawing anything):
  raw      os.write of the chunk to the pty (:raw on)
  filter   ScreenFilter.feed(chunk), then os.write of what is left (the default)
Kinds: plain text lines, UTF-8 text with accents (the filter's quick check looks at every
0xC2 byte), ``ls --color``-like lines (an SGR pair per word), and a full-screen program's
redraws (cursor moves and clears: most bytes dropped). Rounds alternate between copy and
filter so that machine drift hits both alike; the median of the rounds is reported.
Run: python bench/screen.py [--rounds N] [--mib M]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable

from mpish.shell.screen import ScreenFilter

CHUNK = 1 << 20


def _kinds() -> dict[str, bytes]:
    line = b"x" * 79 + b"\n"
    accents = "déjà vu, naïve café ¢ £ ¥ §\n".encode()
    coloured = b"\x1b[01;34mdirectory\x1b[0m  \x1b[01;32mscript.sh\x1b[0m  plain.txt\n"
    redraw = b"\x1b[H\x1b[2J\x1b[1;24r\x1b[?25l" + b"".join(
        f"\x1b[{row};1H\x1b[K row {row} of the screen".encode() for row in range(1, 25)
    ) + b"\x1b[?25h"
    return {
        "plain": (line * (CHUNK // len(line) + 1))[:CHUNK],
        "utf-8": (accents * (CHUNK // len(accents) + 1))[:CHUNK],
        "colours": (coloured * (CHUNK // len(coloured) + 1))[:CHUNK],
        "redraws": (redraw * (CHUNK // len(redraw) + 1))[:CHUNK],
    }


def _rate(op: Callable[[bytes], object], chunk: bytes, chunks: int) -> float:
    started = time.perf_counter()
    for _ in range(chunks):
        op(chunk)
    return chunks * len(chunk) / (time.perf_counter() - started) / 1e6


def _terminal() -> Callable[[bytes], None]:
    """A write to a pty whose master a thread drains; returns the writer."""
    master, slave = os.openpty()

    def drain() -> None:
        while True:
            try:
                if not os.read(master, 1 << 16):
                    return
            except OSError:
                return

    threading.Thread(target=drain, daemon=True).start()

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(slave, view) :]

    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=32, help="MiB per op and round")
    args = parser.parse_args()
    write = _terminal()
    results: dict[str, dict[str, list[float]]] = {}
    for kind, chunk in _kinds().items():
        feed = ScreenFilter().feed
        rates = results.setdefault(kind, {"raw": [], "filter": []})
        for _ in range(args.rounds):
            rates["raw"].append(_rate(write, chunk, args.mib))
            rates["filter"].append(_rate(lambda data, feed=feed: write(feed(data)), chunk, args.mib))
    print(f"{'output':<10} {'raw MB/s':>10} {'filter MB/s':>12} {'filter/raw':>11}")
    ratios = {}
    for kind, rates in results.items():
        raw, filtered = statistics.median(rates["raw"]), statistics.median(rates["filter"])
        ratios[kind] = filtered / raw
        print(f"{kind:<10} {raw:>10.0f} {filtered:>12.0f} {ratios[kind]:>11.3f}")
    print("RESULT " + " ".join(f"{kind.replace('-', '')}_filter_vs_raw={ratio:.3f}"
                               for kind, ratio in ratios.items()))


if __name__ == "__main__":
    main()
