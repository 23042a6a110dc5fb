"""The README's layout section names every source module, and the tree keeps its shape.

The shape (issue 8): layers point one way (wire <- transport <- keys/services <- cli), with no
import cycle between the top-level places of ``src/mpish``, and no source module over ~500 lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "mpish"
MAX_LINES = 520  # "~500": a module may pass 500 by a docstring paragraph, not by a second job

# Each place may import only the places listed (its layer and below).
ALLOWED = {
    "wire": set(),
    "keys": {"wire"},
    "transport": {"wire", "report"},  # report: only its Diagnostics (logging loaded when needed)
    "report": set(),
    "calls": {"wire", "transport", "report", "__version__"},  # report: Diagnostics, as transport
    "comm": {"wire", "transport", "keys", "report"},
    "shell": {"wire", "transport", "keys", "report"},
    "ssh": {"calls", "wire", "transport"},
    "cli": {"wire", "keys", "report", "shell", "__version__"},
    "__main__": {"cli"},
    "__init__": {"comm", "__version__"},
}


def _layout_sections() -> dict[str, str]:
    """The README layout block, cut into its top-level entries (``wire/``, ``cli.py`` ...)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    sections: dict[str, str] = {}
    current = ""
    for line in block.splitlines():
        entry = re.match(r"^  (\S+)", line)
        if entry:
            current = entry.group(1)
            sections[current] = ""
        if current:
            sections[current] += line + "\n"
    return sections


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_readme_layout_names_every_source_module_under_its_package() -> None:
    sections = _layout_sections()
    missing = []
    for path in _modules():
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and len(relative.parts) > 1:
            continue
        if len(relative.parts) == 1:
            names_it = relative.name in sections or any(relative.name in s for s in sections.values())
        else:
            section = sections.get(relative.parts[0] + "/", "")
            names_it = re.search(rf"(?<![\w.]){re.escape(relative.name)}", section) is not None
        if not names_it:
            missing.append(str(relative))
    assert not missing, f"README.md's Layout section does not name: {missing}"


def test_no_source_module_is_much_over_500_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in _modules()}
    long = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not long, f"split these modules by job: {long}"


def _imported_places(path: Path) -> set[str]:
    """The top-level places of mpish that one module imports."""
    relative = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(relative[:-1])
    places = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            full = base + (node.module.split(".") if node.module else [])
            if full:
                places.add(full[0])
            else:  # from . import x, at the top of the package
                places.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mpish":
            parts = node.module.split(".")[1:]
            places.update([parts[0]] if parts else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            places.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mpish."))
    return places


def test_imports_point_down_the_layers_only() -> None:
    upward = []
    for path in _modules():
        place = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for target in _imported_places(path) - {place}:
            if target not in ALLOWED.get(place, set()):
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not upward, upward


def test_the_layer_table_itself_has_no_cycle() -> None:
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(place: str, path: list[str]) -> None:
        if seen.get(place) == 1:
            raise AssertionError(f"import cycle allowed by ALLOWED: {[*path, place]}")
        if seen.get(place) == 2:
            return
        seen[place] = 1
        for target in ALLOWED.get(place, set()):
            visit(target, [*path, place])
        seen[place] = 2

    for place in ALLOWED:
        visit(place, [])
