"""The shape of the code base: no import circles between pyvs's modules, every package
folder installed, every module saying what it is in its first lines.

An import circle makes the order modules load in matter and hides which part depends
on which; the architecture (docs/architecture.md) is a one-way flow: ports -> director
-> protocols, schedulers, forwarders -> model.  Imports only for type checking
(``if TYPE_CHECKING:``) do not run and are not counted.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"engine": "pyvs.engine", "schedulers": "pyvs.schedulers",
            "forwarders": "pyvs.forwarders", "bench": "pyvs.bench"}


def modules() -> dict[str, Path]:
    out = {}
    for folder, name in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


def _runtime_imports(tree: ast.AST, module: str, is_pkg: bool) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                    pkg = pkg[:len(pkg) - child.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                # ``from pkg import mod`` depends on pkg.mod; ``from pkg import name``
                # on pkg (which of the two is decided against the module list)
                found.update(f"{base}.{a.name}" for a in child.names)
                found.add(f"{base}:from")
            visit(child)

    visit(tree)
    return found


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the pyvs modules it imports at run time; ``sources``: module ->
    (source text, is a package)."""
    graph = {}
    for name, (text, is_pkg) in sources.items():
        imported = _runtime_imports(ast.parse(text), name, is_pkg)
        deps = {m for m in imported if m in sources}
        for m in imported:
            if m.endswith(":from"):
                base = m[:-5]
                names = {i.rpartition(".")[2] for i in imported
                         if i.rpartition(".")[0] == base and not i.endswith(":from")}
                if base in sources and any(f"{base}.{n}" not in sources for n in names):
                    deps.add(base)
        graph[name] = deps - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return found


def test_no_import_circles():
    sources = {name: (path.read_text(), path.name == "__init__.py")
               for name, path in modules().items()}
    found = circles(import_graph(sources))
    assert found == [], "\n".join(" -> ".join(c) for c in found)


def test_the_check_sees_a_circle():
    """The checker itself: modules importing each other (also inside a function, or a
    package importing a name from its own submodule's importer) are found; an import
    only for type checking is not, nor a submodule taken from its package."""
    fake = {
        "pyvs.engine.a": ("from pyvs.engine.b import x\n", False),
        "pyvs.engine.b": ("def f():\n    from pyvs.engine.a import y\n", False),
        "pyvs.engine.c": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from pyvs.engine.d import y\n", False),
        "pyvs.engine.d": ("from pyvs.engine.c import z\n", False),
        "pyvs.engine.p": ("from .q import name\n", True),
        "pyvs.engine.p.q": ("from . import r\n", False),
        "pyvs.engine.p.r": ("from pyvs.engine.p import name\n", False),
    }
    found = circles(import_graph(fake))
    assert ["pyvs.engine.a", "pyvs.engine.b", "pyvs.engine.a"] in found
    assert not any("pyvs.engine.c" in c for c in found)
    assert ["pyvs.engine.p", "pyvs.engine.p.q", "pyvs.engine.p.r", "pyvs.engine.p"] in found


def test_every_package_folder_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    folders = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert folders == listed


def test_every_module_says_what_it_is():
    missing = [name for name, path in modules().items()
               if not ast.get_docstring(ast.parse(path.read_text()))
               and path.read_text().strip()]
    assert missing == []
