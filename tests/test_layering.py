"""The map in docs/architecture.md is the code's: every module of rotnet/ is on it once, and
imports (function-level ones included) go only to its own layer or a layer above it."""

from __future__ import annotations

import ast
import re

from helpers import ROOT

LAYERS = ("core", "tracking", "training", "reporting", "pipeline", "cli")
MAP = ROOT / "docs" / "architecture.md"


def layer_of() -> dict[str, str]:
    rows = re.findall(r"^\| (\w+) \| `([\w.]+)` \|", MAP.read_text(), flags=re.M)
    modules = [module for _, module in rows]
    assert len(modules) == len(set(modules)), "a module is on the map twice"
    assert {layer for layer, _ in rows} <= set(LAYERS)
    return {module: layer for layer, module in rows}


def modules() -> dict[str, object]:
    """Every module of the package (sub-packages included) by dotted name under rotnet."""
    found = {}
    for path in sorted((ROOT / "rotnet").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT / "rotnet").with_suffix("").parts)
        found[name.removesuffix(".__init__") if name != "__init__" else "__init__"] = path
    return found


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rotnet"):
            if node.module == "rotnet":
                names |= {alias.name for alias in node.names}
            else:
                names.add(node.module.removeprefix("rotnet."))
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("rotnet.") for a in node.names if a.name.startswith("rotnet.")}
    return names


def test_every_module_is_on_the_map():
    assert set(modules()) == set(layer_of()), "docs/architecture.md and rotnet/ disagree"


def test_imports_go_only_to_the_same_layer_or_one_above_it():
    layers, rank = layer_of(), {layer: i for i, layer in enumerate(LAYERS)}
    known = set(modules())
    breaches = [f"{name} ({layers[name]}) imports {dep} ({layers[dep]})"
                for name, path in modules().items() for dep in imported(path) & known
                if rank[layers[dep]] > rank[layers[name]]]
    assert not breaches, breaches


def test_the_layering_test_sees_a_breach(tmp_path, monkeypatch):
    """The rule is not vacuous: a core module importing the report is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from rotnet.report import collect\n")
    assert "report" in imported(bad)
    assert LAYERS.index(layer_of()["report"]) > LAYERS.index("core")
