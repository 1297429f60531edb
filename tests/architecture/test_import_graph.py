"""The project's modules import each other without cycles, read from the source.

Every ``import`` and ``from ... import`` statement counts, at module level or inside a
function; ``estimators/`` is installed as ``autoinit_sym.estimators``. The family modules of
``estimators/`` import none of each other, and the math packages import no Keras.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"autoinit_sym": ROOT / "autoinit_sym", "autoinit_sym.estimators": ROOT / "estimators"}


def project_modules() -> dict[str, Path]:
    """Module name -> source file for every module of the project."""
    modules = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def _resolve(module: str, path: Path, node: ast.ImportFrom | ast.Import, names: set[str]) -> list[str]:
    """The project modules ``node`` (in ``module``) imports."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in names]
    return found or ([base] if base in names else [])


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    names = set(modules)
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(_resolve(module, path, node, names))
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_reader_sees_imports_and_cycles():
    """The checker itself: it finds the edges of a known module and a planted cycle."""
    graph = import_graph()
    assert "autoinit_sym.statistics.state" in graph["autoinit_sym.statistics.elementwise"]
    assert "autoinit_sym.estimators.registry" in graph["autoinit_sym.estimators.base"]
    planted = {**graph, "autoinit_sym.statistics.state": graph["autoinit_sym.statistics.state"]
               | {"autoinit_sym.statistics.elementwise"}}
    assert find_cycle(planted) is not None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_family_modules_import_no_other_family():
    from autoinit_sym.estimators.registry import SHARED_MODULES, family_modules

    families = {f"autoinit_sym.estimators.{name}" for name in family_modules()}
    assert {"autoinit_sym.estimators.core", "autoinit_sym.estimators.pooling"} <= families
    assert not {f"autoinit_sym.estimators.{name}" for name in SHARED_MODULES} & families
    graph = import_graph()
    crossing = {f: sorted(graph[f] & families) for f in families if graph[f] & families}
    assert not crossing, crossing


@pytest.mark.parametrize("package", ["autoinit_sym.moment_engine", "autoinit_sym.statistics"])
def test_math_packages_import_no_keras(package):
    modules = project_modules()
    for module, path in modules.items():
        if module.startswith(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    assert not any(a.name.split(".")[0] in ("keras", "tensorflow") for a in node.names), module
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert node.module.split(".")[0] not in ("keras", "tensorflow"), module
                    assert not node.module.startswith(("autoinit_sym.walk", "autoinit_sym.estimators")), module
