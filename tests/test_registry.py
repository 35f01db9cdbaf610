"""dvc.yaml spells out the study; `rotnet.registry` names it once. These tests tie the two
(and the report's paper numbers) together, so a variant added in one place fails here."""

from __future__ import annotations

import itertools
import re

import yaml

from helpers import ROOT
from rotnet import registry
from rotnet.config import Config
from rotnet.report import PAPER


def _stages(pipeline: str = "dvc.yaml") -> dict:
    return yaml.safe_load((ROOT / pipeline).read_text())["stages"]


def _params_value(values, params: dict):
    """A matrix axis: a list, or "${a.b}", params' a.b."""
    if not isinstance(values, str):
        return values
    for key in values.removeprefix("${").removesuffix("}").split("."):
        params = params[key]
    return params


def _stage_names(params: dict | None = None) -> set[str]:
    """dvc.yaml's stage names as DVC generates them (matrix values joined with "-"), a
    matrix axis "${a.b}" read from `params` (default: the paper profile's)."""
    params = params or Config.from_dict({}).to_dict()
    names = set()
    for name, stage in _stages().items():
        if "matrix" in stage:
            axes = [_params_value(values, params) for values in stage["matrix"].values()]
            names |= {f"{name}@{'-'.join(map(str, combo))}" for combo in itertools.product(*axes)}
        else:
            names.add(name)
    return names


def test_the_pretrain_matrix_is_the_registry_variants():
    assert tuple(_stages()["pretrain"]["matrix"]["variant"]) == registry.VARIANTS


def test_the_probe_stages_are_the_registry_probes():
    """One probe stage per variant probes its registry blocks (stages/probe.py reads them)."""
    assert tuple(_stages()["probe"]["matrix"]["variant"]) == registry.VARIANTS
    assert {(v, b) for v in registry.VARIANTS for b in registry.probe_blocks(v)} == set(
        registry.PROBES.values())


def test_every_training_stage_runs_once_per_seed():
    """Each training stage's matrix has a `seed` axis read from params' `seeds` and puts it
    in every path it declares, so two seeds never share an output."""
    for name, stage in _stages().items():
        if name in ("code", "data", "subsets", "report"):
            assert "matrix" not in stage, name
            continue
        assert stage["matrix"]["seed"] == "${seeds}", name
        paths = [next(iter(o)) if isinstance(o, dict) else o
                 for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]
        assert paths and all("${item.seed}" in p for p in paths), name
        assert "${item.seed}" in stage["cmd"].split(), name  # the seed, an argument of its own
        pretrained = [d for d in stage["deps"] if d.startswith("runs/pretrain/")]
        assert all(d.endswith("-s${item.seed}") for d in pretrained), name


def test_the_table3_matrix_is_the_registry_methods():
    assert set(_stages()["table3"]["matrix"]["method"]) == {"supervised", *registry.TABLE3_PROBES}
    # every Table 3 row with a paper number is a table3 method or the block-2 probe
    assert set(PAPER["table3"]) <= {"supervised", "nonlinear", *registry.TABLE3_PROBES}


def test_the_stages_on_the_baseline_read_the_registry_baseline():
    stages = _stages()
    for name in ("table3", "semisup", "snapshots"):
        body = stages[name]
        baseline = f"runs/pretrain/{registry.BASELINE}-s${{item.seed}}"
        pretrained = {d for d in body["deps"] if d.startswith("runs/pretrain/")}
        assert pretrained == {baseline}, name
        assert baseline in body["cmd"], name


def test_rotnet_ablate_compares_with_stages_that_exist():
    names = _stage_names()
    assert set(registry.baseline_stages()) <= names
    assert registry.baseline_stages() == [f"pretrain@{registry.BASELINE}-0",
                                          f"probe@{registry.BASELINE}-0"]


def test_the_ablation_pipeline_names_no_variant():
    """ablation/dvc.yaml takes its variant from params (`rotnet ablate` sets them), which
    Config checks against the registry."""
    text = (ROOT / "ablation" / "dvc.yaml").read_text()
    assert not re.search(r"\bb\d-r\d", text)
    config = Config.from_dict({"ablation": {"blocks": 5, "rotations": "2-perp"}})
    assert registry.parse_variant(registry.variant_name(config.ablation.blocks,
                                                        config.ablation.rotations)) == (5, "2-perp")


def test_the_paper_numbers_are_keyed_by_registry_variants():
    assert set(PAPER["table1"]) == {registry.variant_name(*v) for v in registry.DEPTH_VARIANTS}
    assert set(PAPER["table2"]) == {registry.BASELINE} | {
        registry.variant_name(*v) for v in registry.ROTATION_VARIANTS}


def test_every_rotation_set_and_depth_makes_a_variant():
    for blocks in registry.BLOCK_CHOICES:
        for name in registry.ROTATION_SETS:
            assert registry.parse_variant(registry.variant_name(blocks, name)) == (blocks, name)


def test_dvc_expands_the_matrices_to_one_stage_per_variant_and_seed(tmp_path):
    """DVC itself, on dvc.yaml with seeds [0, 1]: every training stage twice."""
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True)
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    params = Config.from_dict({"profile": "quick", "seeds": [0, 1]}).to_dict()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with Repo(str(tmp_path)) as repo:
        names = {stage.name for stage in repo.index.stages}
    assert names == _stage_names(params)
    last_k = params["semisup"]["per_class"][-1]
    assert {"pretrain@b4-r8-1", "probe@b5-r4-1", "table3@supervised-1", f"semisup@{last_k}-1",
            "snapshots@1"} <= names
    assert sum(n.startswith("pretrain@") for n in names) == 2 * len(registry.VARIANTS)


def test_the_stages_rotnet_ablate_reproduces_exist_in_dvc_yaml():
    from rotnet import ablation

    names = _stage_names()
    for variant in registry.VARIANTS:
        assert set(ablation.main_pipeline_stages(variant)) <= names, variant
    assert set(registry.baseline_stages()) <= names
