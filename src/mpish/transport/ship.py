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
protocol that follows is swallowed), and executes them after ``zlib`` decompression.
The command does not depend on the payload, so the client starts ssh first and builds
the payload (cached per process) while ssh connects; it writes it as soon as it is
ready and may queue its first frames right behind it (no round trip is spent on the
start): the stub's read ends on the payload's last byte.

The payload is :data:`LOADER` plus the source of the modules the entry needs: the
closure of its mpish imports at load time (:func:`closure`, read from the source with
:mod:`ast`; imports inside functions and ``if TYPE_CHECKING:`` blocks are left out, so a
late import must be named in ``also``; ``mpish.wire``'s package is replaced by an
empty one, so its cryptographic modules never load), the extra packages the caller
names (cloudpickle for calls), and msgpack's pure-Python fallback. A meta-path finder
serves them from memory:

* mpish (and the caller's ``first`` packages) come first on ``sys.meta_path``, and
  the finder owns the whole ``mpish`` name space: a module that was not shipped is
  missing even if another mpish is installed there. So the remote side runs exactly
  the client's code, whether or not (and whichever) mpish is installed on the host;
* msgpack comes last: a msgpack installed on the host (with its C extension) is used
  if there is one; otherwise the shipped pure-Python copy.

Modules are compiled when first imported. A traceback through shipped code shows its
lines (they are put in linecache under ``<mpish shipped>/...``). The entry module's
``main(argv)`` runs with the payload's fixed arguments plus the command line's.

If even this fails (Python older than 3.10, a broken interpreter, a module missing from
the closure), the stub or the loader writes one line starting with
:data:`~mpish.transport.ssh.BOOTSTRAP_MARK` on stderr and exits 1; the client turns it
into a one-line error (:func:`mpish.transport.ssh.classify`).
"""

from __future__ import annotations

import ast
import importlib.util
import zlib
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from .ssh import BOOTSTRAP_MARK

MIN_PYTHON = (3, 10)
ROOT = "mpish"
EMPTY_PACKAGES = {"mpish.wire": '"""mpish.wire, as shipped: only the modules the remote side needs."""\n'}
LAST_PACKAGES = ("msgpack",)  # installed copies win (C speed); the shipped one is the fallback

# No importlib.abc or importlib.util here: importing them costs ~30 ms (importlib.resources,
# pathlib, re...) on every start; a finder and a loader need only these methods.
LOADER = '''
import importlib, importlib.machinery, linecache, sys


class _ShippedModules:
    """Imports modules from source text sent by the mpish client (finder and loader)."""

    def __init__(self, modules, owned=()):
        self.modules = modules  # name -> (is_package, file name, source)
        self.owned = owned  # name spaces served only from here

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

    def exec_module(self, module):
        is_package, filename, source = self.modules[module.__name__]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)


def _start(first, last, entry, argv):
    sys.meta_path.insert(0, _ShippedModules(first, (ROOT,)))
    sys.meta_path.append(_ShippedModules(last))
    try:
        module = importlib.import_module(entry)
    except BaseException as exc:
        sys.stderr.write(MARK + " cannot load the shipped " + entry + ": " + repr(exc) + "\\n")
        sys.exit(1)
    sys.exit(module.main(argv))
'''


def _path(name: str) -> tuple[Path, bool] | None:
    """The source file of mpish module ``name`` and whether it is a package (no import)."""
    spec = importlib.util.find_spec(ROOT)
    assert spec is not None and spec.origin is not None
    base = Path(spec.origin).parent.joinpath(*name.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    return None


def _imports(tree: ast.AST, name: str, is_package: bool) -> Iterable[str]:
    """Names of the modules a module imports when it loads: function bodies (imports done
    late on purpose, such as ``mpish.secure``'s) and TYPE_CHECKING blocks are left out."""
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


def _module_source(name: str) -> tuple[bool, str, str]:
    """(is package, shown file name, source) of an installed module."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot ship {name}: not found locally")
    is_package = spec.submodule_search_locations is not None
    source = EMPTY_PACKAGES.get(name) or Path(spec.origin).read_text(encoding="utf-8")
    shown = name.replace(".", "/") + ("/__init__" if is_package else "")
    return is_package, f"<mpish shipped>/{shown}.py", source


def _package_modules(package: str) -> dict[str, tuple[bool, str, str]]:
    """Every pure-Python module of an installed package (extension modules are left out)."""
    modules = {package: _module_source(package)}
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations is not None
    for location in spec.submodule_search_locations:
        for path in sorted(Path(location).glob("*.py")):
            if path.stem != "__init__":
                modules[f"{package}.{path.stem}"] = _module_source(f"{package}.{path.stem}")
    return modules


@cache
def payload(entry: str, argv: tuple[str, ...] = (), also: tuple[str, ...] = (),
            first: tuple[str, ...] = ()) -> bytes:
    """What the client writes first on stdin: the length, then the compressed program the
    stub executes (the loader, the modules, the start).

    ``entry``'s ``main(argv + command line arguments)`` runs; ``also`` are mpish modules
    that may be needed beyond the entry's imports (a pickled call may name them);
    ``first`` are other packages shipped whole, ahead of any installed copy.
    """
    shipped = {name: _module_source(name) for name in closure((entry, *also))}
    for package in first:
        shipped.update(_package_modules(package))
    last: dict[str, tuple[bool, str, str]] = {}
    for package in LAST_PACKAGES:
        last.update(_package_modules(package))
    program = (f"MARK = {BOOTSTRAP_MARK!r}\nROOT = {ROOT!r}\n{LOADER}\n"
               f"_start({shipped!r}, {last!r}, {entry!r}, {list(argv)!r} + sys.argv[1:])\n")
    code = zlib.compress(program.encode("utf-8"), 6)
    return len(code).to_bytes(4, "big") + code


def stub() -> str:
    """The ``python -c`` program: check the version, read a length and that many bytes, run them.

    One line, no single quote (it travels through the remote login shell).
    """
    major, minor = MIN_PYTHON
    too_old = (
        f'"{BOOTSTRAP_MARK} Python "+sys.version.split()[0]+" is too old, '
        f'mpish needs {major}.{minor} or later"'
    )
    return (
        f"import os,sys,zlib;sys.version_info<{MIN_PYTHON!r} and sys.exit({too_old});"
        'n=4;b=b"";w="while len(b)<n:b+=os.read(0,n-len(b)) or os._exit(3)";exec(w);'
        'n=int.from_bytes(b,"big");b=b"";exec(w);exec(zlib.decompress(b))'
    )


def command(python: Sequence[str], args: Sequence[str] = ()) -> list[str]:
    """The remote command line that reads and runs a :func:`payload` (sent first on stdin)."""
    return ["exec", *python, "-c", stub(), *args]
