"""The shipped payload: built once and kept in the user's cache, compiled for this Python."""

from __future__ import annotations

import importlib.util
import marshal
import os
import select
import subprocess
import sys
import types
import zlib
from pathlib import Path

import pytest

from mpish.transport import ship

ENTRY = "mpish.shell.remote"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory of this user's (XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def build() -> bytes:
    """A payload as a new process makes it (not the one this process already holds)."""
    return ship.payload.__wrapped__(ENTRY)  # type: ignore[attr-defined]


def counting_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    builds: list[int] = []
    real = ship._build

    def counted(*args: object) -> bytes:
        builds.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ship, "_build", counted)
    return builds


def unpack(payload: bytes) -> tuple[bytes, dict[str, object]]:
    """The loader's source and the data after it."""
    assert int.from_bytes(payload[:4], "big") == len(payload) - 4
    program = zlib.decompress(payload[4:])
    cut = program.index(0)
    return program[:cut], marshal.loads(program[cut + 1 :])


def test_a_built_payload_is_kept_and_read_back(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = counting_builds(monkeypatch)
    first = build()
    kept = list((cache / "mpish" / "ship").iterdir())
    assert len(kept) == 1 and len(kept[0].name) == 64  # named by a SHA-256
    assert kept[0].stat().st_mode & 0o077 == 0
    assert build() == first
    assert builds == [1]  # the second start read the cache


def test_a_damaged_cache_file_is_rebuilt(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build()
    (kept,) = (cache / "mpish" / "ship").iterdir()
    damaged = bytearray(kept.read_bytes())
    damaged[-1] ^= 1
    kept.write_bytes(damaged)
    builds = counting_builds(monkeypatch)
    assert build() == first
    assert builds == [1]


def test_a_cache_others_can_write_is_not_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build()
    (cache / "mpish" / "ship").chmod(0o777)
    builds = counting_builds(monkeypatch)
    build()
    assert builds == [1]


def test_a_cache_directory_that_is_a_link_is_neither_used_nor_emptied(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user plants ``mpish/ship`` as a link to the victim's own files (security review)."""
    thesis = cache / "thesis"
    thesis.mkdir(mode=0o755)
    for number in range(12):
        (thesis / f"chapter{number:02}.tex").write_text("work")
    (cache / "mpish").mkdir()
    (cache / "mpish" / "ship").symlink_to(thesis)
    builds = counting_builds(monkeypatch)
    for argument in range(10):
        ship.payload.__wrapped__(ENTRY, (f"--{argument}",))  # type: ignore[attr-defined]
    assert builds == [1] * 10  # never read from or written to through the link
    assert sorted(path.name for path in thesis.iterdir()) == [f"chapter{n:02}.tex" for n in range(12)]


def test_a_parent_others_can_write_makes_no_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build()
    (cache / "mpish").chmod(0o777)  # another user could swap ship/ between our check and our read
    builds = counting_builds(monkeypatch)
    build()
    assert builds == [1]


def test_a_payload_moved_under_another_name_is_not_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ship.payload.__wrapped__(ENTRY, ("--old",))  # type: ignore[attr-defined]
    (old,) = (cache / "mpish" / "ship").iterdir()
    wanted = ship._cache_key(ENTRY, ("--new",), (), ())
    old.rename(old.with_name(wanted))  # a rollback: an older payload under a newer key
    builds = counting_builds(monkeypatch)
    ship.payload.__wrapped__(ENTRY, ("--new",))  # type: ignore[attr-defined]
    assert builds == [1]


def test_only_payload_files_are_ever_removed(cache: Path) -> None:
    directory = cache / "mpish" / "ship"
    build()
    (directory / "notes.txt").write_text("mine")
    for argument in range(ship.CACHE_KEEP + 2):
        ship.payload.__wrapped__(ENTRY, (f"--{argument}",))  # type: ignore[attr-defined]
    names = [path.name for path in directory.iterdir()]
    assert "notes.txt" in names
    assert len([name for name in names if len(name) == 64]) == ship.CACHE_KEEP


def test_another_entry_or_argument_is_another_cache_file(cache: Path) -> None:
    one = ship.payload.__wrapped__(ENTRY)  # type: ignore[attr-defined]
    other = ship.payload.__wrapped__(ENTRY, ("--x",))  # type: ignore[attr-defined]
    assert one != other
    assert len(list((cache / "mpish" / "ship").iterdir())) == 2


def test_every_module_travels_compiled_for_this_python(cache: Path) -> None:
    loader, data = unpack(build())
    assert b"_ShippedModules" in loader
    assert data["magic"] == importlib.util.MAGIC_NUMBER
    modules = data["first"]
    assert isinstance(modules, dict) and ENTRY in modules and "mpish.wire.framing" in modules
    for name, (_, filename, source, code) in modules.items():
        compiled = marshal.loads(code)
        assert isinstance(compiled, types.CodeType) and compiled.co_filename == filename, name
        assert source  # still there, for tracebacks and for another Python


def start_server(payload: bytes) -> tuple[bytes, int]:
    """Run the shipped shell server as ssh would (``python -c STUB 1 2``, the payload on
    stdin): its first bytes (the start mark, then the Hello frame), and its exit status
    once stdin ended."""
    argv = ship.command([sys.executable, "-I"], ("1", "2"))[1:]
    pipe = subprocess.PIPE
    with subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=subprocess.DEVNULL) as server:
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(payload)
        server.stdin.flush()
        first = b""
        while not is_a_frame(first[len(ship.START_MARK):]):  # the mark comes at once, the Hello later
            ready, _, _ = select.select([server.stdout], [], [], 30)
            more = os.read(server.stdout.fileno(), 4096) if ready else b""
            if not more:
                break
            first += more
        server.stdin.close()
        return first, server.wait(30)


def is_a_frame(data: bytes) -> bool:
    return len(data) > 4 and int.from_bytes(data[:4], "big") == len(data) - 4


def test_the_shipped_server_starts_from_its_compiled_code_behind_its_start_mark(cache: Path) -> None:
    first, _ = start_server(build())
    assert first.startswith(ship.START_MARK) and is_a_frame(first[len(ship.START_MARK):]), first[:60]


def test_a_python_with_other_bytecode_compiles_the_shipped_source(cache: Path) -> None:
    loader, data = unpack(build())
    data["magic"] = b"\x00\x00\r\n"  # as from another Python version
    for name, entry in list(data["first"].items()):  # type: ignore[attr-defined]
        data["first"][name] = (*entry[:3], marshal.dumps(compile("raise SystemExit(9)", "x", "exec")))  # type: ignore[index]
    program = zlib.compress(loader + b"\0" + marshal.dumps(data, 4))
    first, status = start_server(len(program).to_bytes(4, "big") + program)
    assert is_a_frame(first[len(ship.START_MARK):]) and status != 9  # the shipped code would have exited 9


def test_ship_itself_loads_where_it_is_shipped_with_no_file() -> None:
    """The calls client ships this module too; a shipped module has no ``__file__``."""
    source = Path(ship.__file__).read_text(encoding="utf-8")
    namespace = {"__name__": "mpish.transport.ship_copy", "__package__": "mpish.transport"}
    exec(compile(source, "<mpish shipped>/mpish/transport/ship.py", "exec"), namespace)
    assert callable(namespace["payload"])


def test_the_shipped_code_runs_with_the_garbage_collector_on_and_its_modules_frozen(cache: Path) -> None:
    """Loading runs with the collector off (no garbage, ~100k objects); it must be back on after."""
    loader, data = unpack(build())
    probe = ("import gc, os\ndef main(argv):\n"
             "    os.write(1, f'{gc.isenabled()} {gc.get_freeze_count() > 0}'.encode())\n    return 0\n")
    entry = data["first"][ENTRY]  # type: ignore[index]
    data["first"][ENTRY] = (*entry[:2], probe, marshal.dumps(compile(probe, entry[1], "exec")))  # type: ignore[index]
    program = zlib.compress(loader + b"\0" + marshal.dumps(data, 4))
    said, status = start_server(len(program).to_bytes(4, "big") + program)
    assert (said, status) == (ship.START_MARK + b"True True", 0)
