"""Every DVC stage depends on every `rotnet/` module its script imports, directly or not, so
an edit to the library makes `dvc status` name the stages whose results it may change."""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, copy_project, run_command

DVC = Path(sys.executable).parent / "dvc"
PIPELINES = ("dvc.yaml", "ablation/dvc.yaml")


def _module_file(module: str) -> Path | None:
    path = ROOT / (module.replace(".", "/") + ".py")
    return path if module.split(".")[0] == "rotnet" and path.is_file() else None


def _imported_modules(path: Path) -> set[str]:
    """The `rotnet` modules `path` imports anywhere (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if _module_file(name)}


def rotnet_closure(script: Path) -> set[str]:
    """Repository paths of every rotnet module `script` imports, directly or transitively
    (and the package's __init__.py, which any of them runs)."""
    seen: set[str] = set()
    todo = list(_imported_modules(script))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _imported_modules(_module_file(module))
    paths = {_module_file(m).relative_to(ROOT).as_posix() for m in seen}
    return paths | ({"rotnet/__init__.py"} if paths else set())


def stages(pipeline: str):
    """(stage name, script path, deps relative to the repository root) per stage."""
    doc = yaml.safe_load((ROOT / pipeline).read_text())
    for name, stage in doc["stages"].items():
        body = stage.get("do", stage)
        wdir = (ROOT / pipeline).parent / body.get("wdir", ".")
        script = re.search(r"python (\S+\.py)", body["cmd"]).group(1)
        deps = {os.path.relpath((wdir / d).resolve(), ROOT) for d in body["deps"]}
        yield name, (wdir / script).resolve(), deps


def test_the_closure_follows_imports_transitively():
    closure = rotnet_closure(ROOT / "stages" / "probe.py")
    assert {"rotnet/experiments.py", "rotnet/augment.py", "rotnet/engine.py"} <= closure
    assert "rotnet/report.py" not in closure and "rotnet/cli.py" not in closure


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_stage_depends_on_exactly_the_modules_its_script_imports(pipeline):
    found = list(stages(pipeline))
    assert found
    for name, script, deps in found:
        assert script.relative_to(ROOT).as_posix() in deps, name
        listed = {d for d in deps if d.startswith("rotnet/")}
        needed = rotnet_closure(script)
        assert not needed - listed, f"{pipeline} stage {name} misses {sorted(needed - listed)}"
        # no module it never imports either: an edit there would rerun it for nothing
        assert not listed - needed, f"{pipeline} stage {name} lists {sorted(listed - needed)}"


@pytest.mark.slow
def test_editing_augment_makes_the_probe_stages_stale(tmp_path):
    """In a git copy: record the probe stages as done (placeholder outputs), edit augment.py."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(tmp_path)}
    dest = copy_project(tmp_path, env)
    variants = yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]["probe"]["matrix"]["variant"]
    for variant in variants:  # seeds [0]: the smoke profile's
        for path in (f"runs/pretrain/{variant}-s0/checkpoint.pt", f"runs/probe/{variant}-s0/checkpoint.pt",
                     f"metrics/probe/{variant}-s0/block2.json", f"plots/probe/{variant}-s0/block2.csv"):
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).write_text("placeholder\n")
    run_command([str(DVC), "commit", "-f", "probe"], dest, env)

    def stale() -> dict:
        return json.loads(run_command([str(DVC), "status", "--json", "probe"], dest, env).stdout or "{}")

    assert stale() == {}
    with open(dest / "rotnet" / "augment.py", "a") as handle:
        handle.write("# an edit\n")
    status = stale()
    assert set(status) == {f"probe@{variant}-0" for variant in variants}
    assert all(entry == [{"changed deps": {"rotnet/augment.py": "modified"}}]
               for entry in status.values()), status


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_stage_scripts_take_their_paths_from_the_stage_command(pipeline):
    """dvc.yaml owns the paths: a script names none of the folders its stage declares."""
    for name, script, _ in stages(pipeline):
        literals = {node.value for node in ast.walk(ast.parse(script.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        held = [s for s in literals if re.match(r"(runs|metrics|plots|reports)(/|$)", s)]
        assert not held, f"{pipeline} stage {name}: {script.name} holds {held}"
