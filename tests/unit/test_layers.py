"""The package reads top-down (docs/design.md, "Layers"): no module imports a layer above its own.

Every ``import`` and ``from ... import`` of ``secure_pcft`` modules is read from the source (module
level and inside functions alike), so a lazy import cannot hide a layering violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "secure_pcft"

ENTRY = {"cli", "run"}
# Each layer, and the top-level subpackages / modules it must never import.
FORBIDDEN = {
    "transport": {"collab", "runtime", "privacy", "model", "train", "data", "audit", "report"}
    | ENTRY,
    "crypto": {"collab", "runtime", "privacy", "model", "train", "data", "audit", "report"} | ENTRY,
    "privacy": {"collab", "runtime", "audit", "report"} | ENTRY,
    "collab": {"runtime", "audit", "report"} | ENTRY,
    "runtime": {"audit", "report"} | ENTRY,
}


def imported_parts(path: Path) -> set[str]:
    """The first component under ``secure_pcft`` of every module ``path`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n.split(".")[1] for n in names if n.startswith("secure_pcft.") and n.count(".") >= 1}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer: str) -> None:
    violations = {
        str(p.relative_to(PACKAGE)): sorted(imported_parts(p) & FORBIDDEN[layer])
        for p in sorted((PACKAGE / layer).rglob("*.py"))
    }
    assert {k: v for k, v in violations.items() if v} == {}


def test_the_reader_finds_function_level_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from secure_pcft.runtime.loopback import Simulation\n")
    assert imported_parts(src) == {"runtime"}


# ---- import cycles ---------------------------------------------------------------------------
# A registry loads its built-in entries lazily (one file each registers itself), so its module
# and those files import each other; that is the only cycle allowed. Each entry: the registry
# module and the package (or module prefix) of its entries.
REGISTRY_CYCLES = {
    "secure_pcft.collab.strategy": "secure_pcft.collab.strategies",
    "secure_pcft.audit.attack": "secure_pcft.audit.",
}


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports when it runs (typing-only imports excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test).endswith("TYPE_CHECKING")
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:  # `from pkg import module` or `import pkg.mod`
                name = name.rpartition(".")[0]
            if name.startswith("secure_pcft"):
                found.add(name)
    return found


def import_cycles(package: Path) -> list[set[str]]:
    """Strongly connected groups (> 1 module) of the package's runtime import graph."""
    paths = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph = {m: _runtime_imports(p, set(paths)) - {m} for m, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _is_registry_cycle(group: set[str]) -> bool:
    return any(
        registry in group and all(m == registry or m.startswith(entries) for m in group)
        for registry, entries in REGISTRY_CYCLES.items()
    )


def test_no_import_cycle_outside_registries() -> None:
    cycles = [sorted(g) for g in import_cycles(PACKAGE) if not _is_registry_cycle(g)]
    assert cycles == []


def test_the_cycle_finder_sees_a_lazy_cycle_and_ignores_typing_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "secure_pcft"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import secure_pcft.b\n")
    (pkg / "b.py").write_text("def f():\n    from secure_pcft.a import x\n")
    (pkg / "c.py").write_text("import secure_pcft.d\n")
    (pkg / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from secure_pcft.c import y\n"
    )
    assert import_cycles(pkg) == [{"secure_pcft.a", "secure_pcft.b"}]
