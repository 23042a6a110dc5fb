"""Start a remote side where mpish is not installed: ship its code over ssh's stdin.

Theory of operation (execnet's and mitogen's way)
-------------------------------------------------
This is the one way mpish starts a remote side over ssh: the calls agent
(:mod:`mpish.calls.agent`) and the ``mpish ssh`` shell server
(:mod:`mpish.shell.remote`) both start through it, so a host needs only Python 3.10+
(and bash for the shell), never mpish.

The remote command is ``python3 -c STUB [ARG...]``. The stub is one line with no single
quote: it checks the Python version, reads a 4-byte length N and then exactly N bytes
from descriptor 0 with ``os.read`` (never through a buffered reader, so no byte of the
protocol that follows is swallowed), decompresses them (``zlib``) and executes the part
before the first NUL byte: :data:`LOADER`, which reads the rest, a :mod:`marshal` dump
of builtin values only (readable by any Python 3). The command does not depend on the
payload, so the client starts ssh first and writes the payload as soon as it has it,
and may queue its first frames right behind it (no round trip is spent on the start):
the stub's read ends on the payload's last byte.

The stub's first write is :data:`START_MARK` on stdout: what a host's login writes there
before Python runs (a ``.bashrc`` that echoes, a forced command's banner) comes before it,
and the client's frame decoder sets those bytes aside (``after=START_MARK``,
:mod:`mpish.wire.framing`) instead of reading them as a frame: ``ssh host cmd`` shows
such output too, and clush runs its commands behind it.

The payload holds the source of the modules the entry needs: the closure of its mpish
imports at load time (:func:`closure`, read from the source with :mod:`ast`; imports
inside functions and ``if TYPE_CHECKING:`` blocks are left out, so a late import must be
named in ``also``; ``mpish.wire``'s package is replaced by an empty one, so its
cryptographic modules never load), the extra packages the caller names (cloudpickle for
calls), and msgpack's pure-Python fallback. Each module also travels compiled by the
client (``marshal``'d code): a host whose Python has the client's bytecode magic number
runs that and compiles nothing (compiling the shell server's ~200 kB of source cost
20-40 ms of CPU on every host, every start); any other Python compiles the source. A
meta-path finder serves them from memory:

* mpish (and the caller's ``first`` packages) come first on ``sys.meta_path``, and
  the finder owns the whole ``mpish`` name space: a module that was not shipped is
  missing even if another mpish is installed there. So the remote side runs exactly
  the client's code, whether or not (and whichever) mpish is installed on the host;
* msgpack comes last: a msgpack installed on the host (with its C extension) is used
  if there is one; otherwise the shipped pure-Python copy.

A traceback through shipped code shows its lines (under ``<mpish shipped>/...``: the
finder's ``get_source`` serves them to :mod:`linecache` when a traceback is formatted, so
linecache, with tokenize and re, is not loaded to start). The entry module's
``main(argv)`` runs with the payload's fixed arguments plus the command line's.

Building a payload (the closure's ``ast`` walk, compiling, compressing) costs the client
150-400 ms of CPU, on a machine that is at the same time running one ssh per host. So a
built payload is kept in the user's cache directory (``$XDG_CACHE_HOME/mpish/ship`` or
``~/.cache/mpish/ship``), named by a SHA-256 over everything it is made of: the source
of every module of mpish and of the shipped packages, the entry and its arguments, the
bytecode magic number and the payload format. A change to any of them is a new name; a
stale file is never used. The file starts with its own SHA-256 (a damaged file is
rebuilt), and is used only from a directory that belongs to this user and that no one
else can write (the payload is code that runs on every host).

If even this fails (Python older than 3.10, a broken interpreter, a module missing from
the closure), the stub or the loader writes one line starting with
:data:`~mpish.transport.ssh.BOOTSTRAP_MARK` on stderr and exits 1; the client turns it
into a one-line error (:func:`mpish.transport.ssh.classify`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import marshal
import os
import re
import stat
import zlib
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING

from mpish.report import Diagnostics

from .ssh import BOOTSTRAP_MARK

if TYPE_CHECKING:
    import ast
    from pathlib import Path

# ast, hashlib and pathlib (with urllib.parse and ipaddress) are imported where they are used:
# ``mpish ssh`` imports this module before it starts its ssh processes, and uses them after
# (the payload is read while ssh connects), so the ssh processes start ~6 ms sooner.

log = Diagnostics(__name__)

MIN_PYTHON = (3, 10)
START_MARK = b"\0mpish:start\0"  # the stub's first bytes on stdout (module doc); written in stub()
ROOT = "mpish"
EMPTY_PACKAGES = {"mpish.wire": '"""mpish.wire, as shipped: only the modules the remote side needs."""\n'}
LAST_PACKAGES = ("msgpack",)  # installed copies win (C speed); the shipped one is the fallback
PAYLOAD_FORMAT = b"mpish payload 2"  # in the cache key: the layout of what the stub reads
MARSHAL_VERSION = 4  # of the data part: builtin values only, readable by every Python 3.10+
CACHE_KEEP = 8  # payloads kept in the cache directory (the newest)

# No importlib.abc or importlib.util here: importing them costs ~30 ms (importlib.resources,
# pathlib, re...) on every start; a finder and a loader need only these methods.
# importlib._bootstrap_external is loaded with importlib itself.
LOADER = '''
import gc, importlib, importlib.machinery, marshal, sys


class _ShippedModules:
    """Imports modules sent by the mpish client (finder and loader): its compiled code when
    this Python reads the client's bytecode, else the source."""

    def __init__(self, modules, owned=(), magic=b""):
        self.modules = modules  # name -> (is_package, file name, source, marshalled code)
        self.owned = owned  # name spaces served only from here
        self.compiled = magic == importlib._bootstrap_external.MAGIC_NUMBER

    def find_spec(self, fullname, path=None, target=None):
        entry = self.modules.get(fullname)
        if entry is None:
            if fullname.split(".")[0] in self.owned:
                raise ModuleNotFoundError(fullname + " was not shipped by the mpish client", name=fullname)
            return None
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=entry[1], is_package=entry[0])
        spec.has_location = False
        return spec

    def create_module(self, spec):
        return None

    def get_source(self, fullname):
        return self.modules[fullname][2]  # for linecache: a traceback shows shipped lines

    def exec_module(self, module):
        is_package, filename, source, code = self.modules[module.__name__]
        self.modules[module.__name__] = (is_package, filename, source, b"")
        if self.compiled and code:
            code = marshal.loads(code)
        else:
            code = compile(source, filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)


def _start(data, args):
    magic = data["magic"]
    sys.meta_path.insert(0, _ShippedModules(data["first"], (ROOT,), magic))
    sys.meta_path.append(_ShippedModules(data["last"], (), magic))
    entry = data["entry"]
    gc.disable()  # loading makes many objects and no garbage: no collection passes over them
    try:
        module = importlib.import_module(entry)
    except BaseException as exc:
        sys.stderr.write(MARK + " cannot load the shipped " + entry + ": " + repr(exc) + "\\n")
        sys.exit(1)
    gc.freeze()  # what was loaded lives as long as the process: later collections skip it
    gc.enable()
    sys.exit(module.main(data["argv"] + args))


_data = marshal.loads(b[b.index(0) + 1 :])
del b  # the stub's buffer: the whole payload
_start(_data, sys.argv[1:])
'''

Shipped = dict[str, tuple[bool, str, str, bytes]]  # name -> (is package, file name, source, code)


@cache
def _package_dir() -> Path:
    """mpish's own directory (not from ``__file__``: this module is shipped too, with the
    calls client, and a shipped module has no file)."""
    from pathlib import Path

    spec = importlib.util.find_spec(ROOT)
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def _path(name: str) -> tuple[Path, bool] | None:
    """The source file of mpish module ``name`` and whether it is a package (no import)."""
    base = _package_dir().joinpath(*name.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    return None


def _imports(tree: ast.AST, name: str, is_package: bool) -> Iterable[str]:
    """Names of the modules a module imports when it loads: function bodies (imports done
    late on purpose, such as ``mpish.secure``'s) and TYPE_CHECKING blocks are left out."""
    import ast

    package = name if is_package else name.rpartition(".")[0]
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _imports(child, name, is_package))
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = node.module or "" if not node.level else ".".join(p for p in (base, node.module) if p)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # maybe submodules
        yield from _imports(node, name, is_package)


def closure(entries: Iterable[str]) -> list[str]:
    """Every mpish module (and its packages) that the ``entries`` import, at any depth."""
    import ast

    found: dict[str, None] = {}
    todo = list(entries)
    while todo:
        name = todo.pop()
        if name in found or name.split(".")[0] != ROOT:
            continue
        located = _path(name)
        if located is None:
            continue  # a class or function imported from a module, not a module
        path, is_package = located
        found[name] = None
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        if name not in EMPTY_PACKAGES:
            todo += _imports(ast.parse(path.read_text(encoding="utf-8")), name, is_package)
    return sorted(found)


def _module(name: str) -> tuple[bool, str, str, bytes]:
    """(is package, shown file name, source, marshalled code) of an installed module."""
    from pathlib import Path

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot ship {name}: not found locally")
    is_package = spec.submodule_search_locations is not None
    source = EMPTY_PACKAGES.get(name) or Path(spec.origin).read_text(encoding="utf-8")
    shown = name.replace(".", "/") + ("/__init__" if is_package else "")
    filename = f"<mpish shipped>/{shown}.py"
    code = compile(source, filename, "exec", dont_inherit=True, optimize=0)
    return is_package, filename, source, marshal.dumps(code)


def _package_files(package: str) -> list[Path]:
    """The pure-Python files of an installed package, ``__init__.py`` first (no import)."""
    from pathlib import Path

    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"cannot ship {package}: not found locally")
    files = []
    for location in spec.submodule_search_locations:
        files += sorted(Path(location).glob("*.py"), key=lambda path: (path.stem != "__init__", path.name))
    return files


def _package_modules(package: str) -> Shipped:
    """Every pure-Python module of an installed package (extension modules are left out)."""
    return {package if path.stem == "__init__" else f"{package}.{path.stem}":
            _module(package if path.stem == "__init__" else f"{package}.{path.stem}")
            for path in _package_files(package)}


def _build(entry: str, argv: tuple[str, ...], also: tuple[str, ...], first: tuple[str, ...]) -> bytes:
    """Read, compile and compress everything the remote side runs (the slow part)."""
    shipped = {name: _module(name) for name in closure((entry, *also))}
    for package in first:
        shipped.update(_package_modules(package))
    last: Shipped = {}
    for package in LAST_PACKAGES:
        last.update(_package_modules(package))
    data = {"magic": importlib.util.MAGIC_NUMBER, "entry": entry, "argv": list(argv),
            "first": shipped, "last": last}
    loader = f"MARK = {BOOTSTRAP_MARK!r}\nROOT = {ROOT!r}\n{LOADER}".encode()
    code = zlib.compress(loader + b"\0" + marshal.dumps(data, MARSHAL_VERSION), 6)
    return len(code).to_bytes(4, "big") + code


# --- the cache ---------------------------------------------------------------------------


def _cache_key(entry: str, argv: tuple[str, ...], also: tuple[str, ...], first: tuple[str, ...]) -> str:
    """SHA-256 of all a payload is made of: any change to mpish or a shipped package, the
    arguments, or the local Python's bytecode gives another key."""
    import hashlib

    digest = hashlib.sha256(PAYLOAD_FORMAT + b"\0" + importlib.util.MAGIC_NUMBER)
    digest.update(repr((entry, argv, also, first, LAST_PACKAGES, BOOTSTRAP_MARK)).encode())
    files = [(ROOT, _package_dir(), path) for path in sorted(_package_dir().rglob("*.py"))]
    files += [(package, path.parent, path) for package in (*first, *LAST_PACKAGES)  # flat: *.py
              for path in _package_files(package)]
    for package, root, path in files:  # the path inside its package: a moved module is another key
        content = path.read_bytes()
        where = path.relative_to(root).as_posix()
        digest.update(f"\0{package}\0{where}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where built payloads are kept: ``$XDG_CACHE_HOME/mpish/ship``, or ``~/.cache/mpish/ship``."""
    from pathlib import Path

    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / ROOT / "ship"


_KEY_NAME = re.compile(r"[0-9a-f]{64}")  # the only names the cache reads, writes or removes


def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _safe_parent(st: os.stat_result) -> bool:
    """A directory on the way that no other user can change: owned by this user or root and
    writable by no one else, or root's sticky /tmp kind (others cannot rename what we own there)."""
    if st.st_uid not in (0, os.getuid()):
        return False
    others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    return not others_write or (st.st_uid == 0 and bool(st.st_mode & stat.S_ISVTX))


def _open_cache_dir(directory: Path, create: bool) -> int | None:
    """A descriptor of ``directory``, reached from ``/`` one component at a time without
    following a link, every directory on the way checked (:func:`_safe_parent`) and the
    last ones made private when ``create``; None when any check fails (then no cache)."""
    if not directory.is_absolute():
        return None
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        parts = directory.parts[1:]
        for index, part in enumerate(parts):
            st = os.fstat(fd)
            after_sticky = st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH
            if not _safe_parent(st):
                where = os.path.join(*directory.parts[: index + 1])
                log.debug("payload cache: %s is writable by others: not used", where)
                return None
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
            if after_sticky and os.fstat(fd).st_uid != os.getuid():
                return None  # below a world-writable sticky directory, only our own
        if not _private(os.fstat(fd)):
            log.debug("payload cache %s is not private to this user: not used", directory)
            return None
        fd, result = -1, fd
        return result
    except OSError as exc:  # a link on the way (ELOOP), not a directory, no permission
        log.debug("payload cache %s: %s", directory, exc)
        return None
    finally:
        if fd >= 0:
            os.close(fd)


def _sealed(key: str, built: bytes) -> bytes:
    """The check stored before a payload: it holds only under its own name."""
    import hashlib

    return hashlib.sha256(key.encode() + b"\0" + built).digest()


def _read_cache(directory: Path, key: str) -> bytes | None:
    dir_fd = _open_cache_dir(directory, create=False)
    if dir_fd is None:
        return None
    try:
        fd = os.open(key, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    with open(fd, "rb") as file:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st):
            return None
        stored = file.read()
    digest, built = stored[:32], stored[32:]
    if _sealed(key, built) != digest:
        log.debug("payload cache %s: damaged, rebuilt", directory / key)
        return None
    return built


def _write_cache(directory: Path, key: str, built: bytes) -> None:
    """Keep ``built`` as ``directory/key`` (atomically, through the checked directory's
    descriptor); drop all but the newest few payloads (files named by a key only)."""
    import secrets  # only when a payload is built

    dir_fd = _open_cache_dir(directory, create=True)
    if dir_fd is None:
        return
    temporary = f".new-{secrets.token_hex(8)}"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            with open(fd, "wb") as file:
                file.write(_sealed(key, built) + built)
            os.replace(temporary, key, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=dir_fd)
            raise
        with os.scandir(dir_fd) as scan:
            payloads = [e for e in scan if _KEY_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
        payloads.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime, reverse=True)
        for old in payloads[CACHE_KEEP:]:
            os.unlink(old.name, dir_fd=dir_fd)
    except OSError as exc:  # a read-only or full home: build every time
        log.debug("payload cache %s: %s", directory, exc)
    finally:
        os.close(dir_fd)


@cache
def payload(entry: str, argv: tuple[str, ...] = (), also: tuple[str, ...] = (),
            first: tuple[str, ...] = ()) -> bytes:
    """What the client writes first on stdin: the length, then the compressed program the
    stub executes (the loader and, after a NUL byte, the modules and the start).

    ``entry``'s ``main(argv + command line arguments)`` runs; ``also`` are mpish modules
    that may be needed beyond the entry's imports (a pickled call may name them);
    ``first`` are other packages shipped whole, ahead of any installed copy. Kept in
    :func:`cache_dir`, named by :func:`_cache_key`.
    """
    key = _cache_key(entry, argv, also, first)
    directory = cache_dir()
    built = _read_cache(directory, key)
    if built is None:
        built = _build(entry, argv, also, first)
        _write_cache(directory, key, built)
    return built


def stub() -> str:
    """The ``python -c`` program: check the version, read a length and that many bytes,
    decompress them and run the loader they begin with.

    One line, no single quote (it travels through the remote login shell).
    """
    major, minor = MIN_PYTHON
    too_old = (
        f'"{BOOTSTRAP_MARK} Python "+sys.version.split()[0]+" is too old, '
        f'mpish needs {major}.{minor} or later"'
    )
    return (
        f"import os,sys,zlib;sys.version_info<{MIN_PYTHON!r} and sys.exit({too_old});"
        'os.write(1,b"\\0mpish:start\\0");'
        'n=4;b=b"";w="while len(b)<n:b+=os.read(0,n-len(b)) or os._exit(3)";exec(w);'
        'n=int.from_bytes(b,"big");b=b"";exec(w);b=zlib.decompress(b);exec(b[:b.index(0)])'
    )


def command(python: Sequence[str], args: Sequence[str] = ()) -> list[str]:
    """The remote command line that reads and runs a :func:`payload` (sent first on stdin)."""
    return ["exec", *python, "-c", stub(), *args]
