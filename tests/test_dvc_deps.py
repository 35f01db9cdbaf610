"""Every DVC stage depends on every `rotnet/` module its script imports, directly or not, so
an edit to the library reruns the stages whose results it may change: in dvc.yaml through
its script's digest (the `code` stage, rotnet/code_digest.py), in ablation/dvc.yaml listed."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, copy_project, run_command
from rotnet.code_digest import digest_name, digest_text, module_closure

DVC = Path(sys.executable).parent / "dvc"
PIPELINES = ("dvc.yaml", "ablation/dvc.yaml")


def rotnet_closure(script: Path) -> set[str]:
    return module_closure(script, ROOT)


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


def test_every_ablation_stage_lists_exactly_the_modules_its_script_imports():
    found = list(stages("ablation/dvc.yaml"))
    assert found
    for name, script, deps in found:
        assert script.relative_to(ROOT).as_posix() in deps, name
        listed = {d for d in deps if d.startswith("rotnet/")}
        needed = rotnet_closure(script)
        assert not needed - listed, f"stage {name} misses {sorted(needed - listed)}"
        # no module it never imports either: an edit there would rerun it for nothing
        assert not listed - needed, f"stage {name} lists {sorted(listed - needed)}"


def test_every_main_stage_depends_on_its_scripts_digest_and_the_code_stage_on_all_code():
    code = {os.path.relpath(ROOT / d, ROOT) for d in
            yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["code"]["deps"]}
    every = {p.relative_to(ROOT).as_posix() for folder in ("rotnet", "stages")
             for p in (ROOT / folder).glob("*.py")}
    assert code == every
    for name, script, deps in stages("dvc.yaml"):
        if name == "code":
            continue
        assert f"runs/code/{digest_name(script)}" in deps, name
        assert not {d for d in deps if d.startswith(("rotnet/", "stages/"))}, name


def test_a_digest_holds_the_hash_of_the_script_and_of_every_module_it_imports():
    script = ROOT / "stages" / "probe.py"
    lines = [line.split("  ") for line in digest_text(script, ROOT).splitlines()]
    assert {path for _, path in lines} == rotnet_closure(script) | {"stages/probe.py"}
    assert all(digest == hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
               for digest, path in lines)


def test_an_edit_changes_the_digests_of_exactly_the_scripts_that_import_the_module(tmp_path):
    for folder in ("rotnet", "stages"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    scripts = sorted((tmp_path / "stages").glob("*.py"))
    before = {s.name: digest_text(s, tmp_path) for s in scripts}
    with open(tmp_path / "rotnet" / "augment.py", "a") as handle:
        handle.write("# an edit\n")
    changed = {s.name for s in scripts if digest_text(s, tmp_path) != before[s.name]}
    importing = {s.name for s in scripts if "rotnet/augment.py" in module_closure(s, tmp_path)}
    assert changed == importing
    assert "probe.py" in changed and "report.py" not in changed


@pytest.mark.slow
def test_editing_augment_makes_the_probe_stages_stale(tmp_path):
    """In a git copy: record the probe stages as done (placeholder outputs), edit augment.py:
    `dvc status` names the code stage, and once it ran, every probe stage."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(tmp_path)}
    dest = copy_project(tmp_path, env)
    variants = yaml.safe_load((dest / "dvc.yaml").read_text())["stages"]["probe"]["matrix"]["variant"]
    run_command([str(DVC), "repro", "--single-item", "code"], dest, env)
    for variant in variants:  # seeds [0]: the smoke profile's
        for path in (f"runs/pretrain/{variant}-s0/checkpoint.pt", f"runs/probe/{variant}-s0/checkpoint.pt",
                     f"metrics/probe/{variant}-s0/block2.json", f"plots/probe/{variant}-s0/block2.csv"):
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).write_text("placeholder\n")
    run_command([str(DVC), "commit", "-f", "probe"], dest, env)

    def stale(*targets: str) -> dict:
        return json.loads(run_command([str(DVC), "status", "--json", *targets], dest, env).stdout or "{}")

    assert stale("code", "probe") == {}
    with open(dest / "rotnet" / "augment.py", "a") as handle:
        handle.write("# an edit\n")
    assert stale("code") == {"code": [{"changed deps": {"rotnet/augment.py": "modified"}}]}
    run_command([str(DVC), "repro", "--single-item", "code"], dest, env)
    status = stale("probe")
    assert set(status) == {f"probe@{variant}-0" for variant in variants}
    assert all(entry == [{"changed deps": {"runs/code/probe.txt": "modified"}}]
               for entry in status.values()), status


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_stage_scripts_take_their_paths_from_the_stage_command(pipeline):
    """dvc.yaml owns the paths: a script names none of the folders its stage declares."""
    for name, script, _ in stages(pipeline):
        literals = {node.value for node in ast.walk(ast.parse(script.read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        held = [s for s in literals if re.match(r"(runs|metrics|plots|reports)(/|$)", s)]
        assert not held, f"{pipeline} stage {name}: {script.name} holds {held}"
