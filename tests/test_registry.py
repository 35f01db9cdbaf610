"""dvc.yaml spells out the study; `rotnet.registry` names it once. These tests tie the two
(and the report's paper numbers) together, so a variant added in one place fails here."""

from __future__ import annotations

import re

import yaml

from helpers import ROOT
from rotnet import registry
from rotnet.config import Config
from rotnet.report import PAPER


def _stages(pipeline: str = "dvc.yaml") -> dict:
    return yaml.safe_load((ROOT / pipeline).read_text())["stages"]


def _stage_names() -> set[str]:
    names = set()
    for name, stage in _stages().items():
        if "matrix" in stage:
            (key, values), = stage["matrix"].items()
            names |= {f"{name}@{value}" for value in values}
        elif "foreach" in stage and isinstance(stage["foreach"], dict):
            names |= {f"{name}@{key}" for key in stage["foreach"]}
        else:
            names.add(name)
    return names


def test_the_pretrain_matrix_is_the_registry_variants():
    assert tuple(_stages()["pretrain"]["matrix"]["variant"]) == registry.VARIANTS


def test_the_probe_stages_are_the_registry_probes():
    probes = _stages()["probe"]["foreach"]
    assert {k: (v["variant"], v["block"]) for k, v in probes.items()} == registry.PROBES


def test_the_table3_matrix_is_the_registry_methods():
    assert set(_stages()["table3"]["matrix"]["method"]) == {"supervised", *registry.TABLE3_PROBES}
    # every Table 3 row with a paper number is a table3 method or the block-2 probe
    assert set(PAPER["table3"]) <= {"supervised", "nonlinear", *registry.TABLE3_PROBES}


def test_the_stages_on_the_baseline_read_the_registry_baseline():
    stages = _stages()
    for name in ("table3", "semisup", "snapshots"):
        body = stages[name].get("do", stages[name])
        pretrained = {d for d in body["deps"] if d.startswith("runs/pretrain/")}
        assert pretrained == {f"runs/pretrain/{registry.BASELINE}"}, name
        assert f"runs/pretrain/{registry.BASELINE}" in body["cmd"], name


def test_rotnet_ablate_compares_with_stages_that_exist():
    names = _stage_names()
    assert set(registry.baseline_stages()) <= names
    assert len(registry.baseline_stages()) == 1 + registry.BASELINE_BLOCKS


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
