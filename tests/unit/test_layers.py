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
