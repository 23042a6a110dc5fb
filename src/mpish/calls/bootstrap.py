"""Start the agent on a host where mpish is not installed: ship its code over stdin.

Theory of operation (execnet's and mitogen's way)
-------------------------------------------------
The remote command is ``python3 -c STUB``. The stub is one line with no single quote: it
checks the Python version, reads exactly N bytes from descriptor 0 with ``os.read`` (never
through a buffered reader, so no byte of the protocol that follows is swallowed), and
executes them after ``zlib`` decompression. The client writes those N bytes right after
starting ssh, and sends nothing else until the agent's hello: so the stub's read ends on
the payload's last byte.

The payload is :data:`LOADER` plus the source of the modules the agent needs: mpish's
agent, call protocol, transport and error modules (``mpish.wire``'s package is replaced by
an empty one: the agent needs none of the crypto), cloudpickle, and msgpack's pure-Python
fallback. A meta-path finder serves them from memory:

* mpish and cloudpickle come first on ``sys.meta_path``: the agent always runs the
  client's code, so both sides speak the same protocol even if another mpish is installed
  there;
* msgpack comes last: a msgpack installed on the host (with its C extension) is used
  if there is one; otherwise the shipped pure-Python copy.

Modules are compiled when first imported (cloudpickle only once a pickled function
arrives). A traceback through shipped code shows its lines (they are put in linecache
under ``<mpish shipped>/...``).

If even this fails (Python older than 3.10, a broken interpreter), the stub or the loader
writes one line starting with ``mpish-bootstrap:`` on stderr and exits 1; the client
turns it into :class:`~mpish.transport.ssh.MpishMissing`.
"""

from __future__ import annotations

import importlib.util
import zlib
from functools import cache
from pathlib import Path

from mpish.transport.ssh import BOOTSTRAP_MARK

MIN_PYTHON = (3, 10)

# mpish modules the agent imports, directly or when a call refers to them.
MPISH_MODULES = (
    "mpish",
    "mpish.calls",
    "mpish.calls.agent",
    "mpish.calls.messages",
    "mpish.calls.serialize",
    "mpish.calls.client",
    "mpish.calls.bootstrap",
    "mpish.transport",
    "mpish.transport.ssh",
    "mpish.wire",
    "mpish.wire.errors",
    "mpish.wire.framing",
    "mpish.wire.codec",
    "mpish.wire.text",
)
EMPTY_PACKAGES = {"mpish.wire": '"""mpish.wire, as shipped to an agent: only the modules it needs."""\n'}
FIRST_PACKAGES = ("cloudpickle",)  # shipped copies win over installed ones
LAST_PACKAGES = ("msgpack",)  # installed copies win (C speed); the shipped one is the fallback

LOADER = '''
import importlib.abc, importlib.util, linecache, sys


class _ShippedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports modules from source text sent by the mpish client."""

    def __init__(self, modules):
        self.modules = modules  # name -> (is_package, file name, source)

    def find_spec(self, fullname, path=None, target=None):
        entry = self.modules.get(fullname)
        if entry is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=entry[1], is_package=entry[0])

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        is_package, filename, source = self.modules[module.__name__]
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)


def _start_agent(first, last, argv):
    sys.meta_path.insert(0, _ShippedModules(first))
    sys.meta_path.append(_ShippedModules(last))
    try:
        import mpish.calls.agent
    except BaseException as exc:
        sys.stderr.write(MARK + " cannot load the shipped agent: " + repr(exc) + "\\n")
        sys.exit(1)
    mpish.calls.agent.main(argv)
'''


def _module_source(name: str) -> tuple[bool, str, str]:
    """(is package, shown file name, source) of an installed module."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot ship {name}: not found locally")
    path = Path(spec.origin)
    is_package = spec.submodule_search_locations is not None
    source = EMPTY_PACKAGES.get(name) or path.read_text(encoding="utf-8")
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
def payload(data_only: bool) -> bytes:
    """The compressed program the stub executes: the loader, the modules, the start."""
    first = {name: _module_source(name) for name in MPISH_MODULES}
    for package in FIRST_PACKAGES:
        first.update(_package_modules(package))
    last: dict[str, tuple[bool, str, str]] = {}
    for package in LAST_PACKAGES:
        last.update(_package_modules(package))
    argv = ["--data-only"] if data_only else []
    program = f"MARK = {BOOTSTRAP_MARK!r}\n{LOADER}\n_start_agent({first!r}, {last!r}, {argv!r})\n"
    return zlib.compress(program.encode("utf-8"), 6)


def stub(size: int) -> str:
    """The ``python -c`` program: check the version, read ``size`` bytes, run them.

    One line, no single quote (it travels through the remote login shell).
    """
    major, minor = MIN_PYTHON
    too_old = (
        f'"{BOOTSTRAP_MARK} Python "+sys.version.split()[0]+" is too old, '
        f'the mpish agent needs {major}.{minor} or later"'
    )
    return (
        f"import os,sys,zlib;sys.version_info<{MIN_PYTHON!r} and sys.exit({too_old});"
        f'n={size};b=b"";exec("while len(b)<n:b+=os.read(0,n-len(b)) or os._exit(3)");'
        "exec(zlib.decompress(b))"
    )
