"""The package's modules import each other in one direction only: no circle (storage's inline source
builds on the download, the choice between them sits above both in ``storage/store.py``).

Edges are the imports a module runs when it loads (``TYPE_CHECKING`` ones excluded); ``from package
import name`` counts as importing the package unless ``name`` is one of its modules."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = "airflow_provider_videoquery"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (REPO / PACKAGE).rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    edges: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
            module = str(node.module)
            named = {f"{module}.{alias.name}" for alias in node.names} & modules.keys()
            edges |= named if len(named) == len(node.names) else {module, *named}
        elif isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names} & modules.keys()
    return edges


def test_no_module_imports_itself_back() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    circles: list[list[str]] = []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for target in sorted(graph[name]):
            if target in path:
                circles.append([*path[path.index(target) :], target])
            elif target not in done:
                done.add(target)
                visit(target, [*path, target], done)

    for name in sorted(modules):
        visit(name, [name], {name})
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles[:5])
