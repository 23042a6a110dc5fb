"""shell/gathered.py: each server's output kept until the end, identical outputs stored once."""

from __future__ import annotations

import io
import random

from mpish.shell.gathered import Gathered, Store


def test_identical_outputs_are_stored_once_whoever_is_ahead() -> None:
    root = Store()
    a, b = Gathered(root), Gathered(root)
    assert a.write(b"hello ") == 6  # new bytes
    assert b.write(b"hello world\n") == 6  # "hello " was there: only "world\n" is new
    assert a.write(b"world\n") == 0
    assert root.size == 12 and a.store is b.store
    assert b"".join(a.chunks()) == b"".join(b.chunks()) == b"hello world\n"
    assert a.digest.digest() == b.digest.digest()
    a.close()
    b.close()


def test_a_server_that_differs_moves_to_a_store_of_its_own_and_both_outputs_stay_whole() -> None:
    root = Store()
    a, b, c = Gathered(root), Gathered(root), Gathered(root)
    a.write(b"line 1\nline 2\nline 3\n")
    assert b.write(b"line 1\nline X\n") == 14  # a store of its own: the 12 bytes shared, then its 2
    assert b.store is not root and a.store is root
    c.write(b"line 1\n")  # a prefix of a's output: still on the shared store, a different output
    assert c.store is root and c.digest.digest() != a.digest.digest()
    assert b"".join(a.chunks()) == b"line 1\nline 2\nline 3\n"
    assert b"".join(b.chunks()) == b"line 1\nline X\n"
    assert list(c.lines()) == [b"line 1\n"]  # its view ends where its output ends
    for view in (a, b, c):
        view.close()


def test_random_interleavings_keep_every_servers_bytes_and_count_each_distinct_byte_once() -> None:
    rng = random.Random(7)
    shared = bytes(rng.randrange(256) for _ in range(300_000))
    outputs = [shared, shared, shared[:200_000] + b"!" + shared[200_001:], shared[:1000]]
    root = Store()
    views = [Gathered(root) for _ in outputs]
    offsets = [0] * len(outputs)
    stored = 0
    while any(offsets[i] < len(o) for i, o in enumerate(outputs)):
        i = rng.randrange(len(outputs))
        size = rng.choice([1, 17, 4096, 70_000])
        piece = outputs[i][offsets[i] : offsets[i] + size]
        stored += views[i].write(piece)
        offsets[i] += len(piece)
    for view, output in zip(views, outputs, strict=True):
        assert b"".join(view.chunks()) == output
        sink = io.BytesIO()
        view.copy_to(sink, lambda: False)
        assert sink.getvalue() == output + (b"" if output.endswith(b"\n") else b"\n")
    assert stored == 300_000 + 300_000  # the shared bytes once; the one that differs, all of its own
    for view in views:
        view.close()


def test_lines_are_whole_across_pieces_and_the_last_may_lack_its_newline() -> None:
    view = Gathered()
    long_line = b"x" * 200_000 + b"\n"
    view.write(long_line + b"short\nend")
    assert list(view.lines()) == [long_line, b"short\n", b"end"]
    view.close()
