"""Protocol fingerprints: what changes a run's result changes it, what does not leaves it,
and the runs the experiments make carry exactly the fingerprint the report expects of them
(computed from the params alone, the pretraining chain included)."""

import json

import pytest

from helpers import tiny_config
from rotnet import experiments, figure5, files, protocol, report
from rotnet.report import expected_fingerprint
from rotnet.subsets import write_label_subset
from rotnet.tracking import NullTracker

PROBE_B2 = {"method": "nonlinear", "variant": "b4-r4", "block": "2"}
# Table 3's cells: their key -> the tags the report looks their runs up by.
TABLE3 = {key.removeprefix("table3/"): want for key, _, _, _, _, want in report.table_specs()
          if key.startswith("table3/")}


@pytest.mark.parametrize("change", [
    {"data": {"root": "elsewhere", "download": False}},
    {"runtime": {"device": "cpu", "channels_last": False, "compile": True,
                 "deterministic": True, "log_every": 5}},
    {"pretrain": {"snapshot_every": 1}},
    {"pretrain": {"eval_every": 2}},  # scores fewer epochs, trains the same
    {"semisup": {"per_class": [3]}, "snapshots": {"every": 2}, "ablation": {"blocks": 5}},
])
def test_paths_logging_and_runtime_leave_the_fingerprint(change):
    base, changed = tiny_config(), tiny_config(change)
    for want in ({"task": "pretrain", "variant": "b4-r4"}, PROBE_B2, {"task": "supervised"}):
        assert expected_fingerprint(changed, want) == expected_fingerprint(base, want)


@pytest.mark.parametrize("change, changes_pretrain", [
    ({"data": {"train_size": 32}}, True),
    ({"data": {"seed": 3}}, True),  # another draw of the data
    ({"runtime": {"seed": 1}}, True),
    ({"pretrain": {"optim": {"epochs": 3}}}, True),  # a probe's pretraining chain
    ({"pretrain": {"width": 0.25}}, True),
    ({"pretrain": {"optim": {"warmup_epochs": 1}}}, True),
    ({"probe": {"optim": {"lr": 0.05}}}, False),
    ({"probe": {"hidden": 100}}, False),
])
def test_what_defines_the_result_changes_the_fingerprint(change, changes_pretrain):
    base, changed = tiny_config(), tiny_config(change)
    pretrain = {"task": "pretrain", "variant": "b4-r4"}
    assert (expected_fingerprint(changed, pretrain) != expected_fingerprint(base, pretrain)) \
        is changes_pretrain
    assert expected_fingerprint(changed, PROBE_B2) != expected_fingerprint(base, PROBE_B2)


def test_the_resolved_precision_is_part_of_the_fingerprint():
    """A bf16 run and an fp32 run of the same params never fill one cell; `auto` counts as
    what it resolves to on this machine, never as itself."""
    base = tiny_config()
    resolved = protocol.run_precision(base.runtime)
    other = {"bf16": "fp32", "fp32": "bf16"}[resolved]
    for want in ({"task": "pretrain", "variant": "b4-r4"}, PROBE_B2, {"task": "supervised"}):
        assert expected_fingerprint(base, want) == expected_fingerprint(base, want, precision=resolved)
        assert expected_fingerprint(base, want) != expected_fingerprint(base, want, precision=other)
    fp32 = tiny_config({"runtime": {"precision": "fp32"}})
    assert expected_fingerprint(fp32, PROBE_B2) == expected_fingerprint(base, PROBE_B2, precision="fp32")


def test_the_backbone_lr_scale_defines_only_the_fine_tuned_cells():
    base, changed = tiny_config(), tiny_config({"finetune": {"backbone_lr_scale": 1.0}})
    finetuned = {**PROBE_B2, "method": "nonlinear-finetuned"}
    assert expected_fingerprint(changed, finetuned) != expected_fingerprint(base, finetuned)
    assert expected_fingerprint(changed, PROBE_B2) == expected_fingerprint(base, PROBE_B2)


def test_the_rotation_set_block_and_snapshot_epoch_are_part_of_it():
    config = tiny_config()
    seen = {expected_fingerprint(config, {"task": "pretrain", "variant": v})
            for v in ("b4-r4", "b4-r8", "b3-r4")}
    seen |= {expected_fingerprint(config, {**PROBE_B2, "block": b}) for b in ("1", "2")}
    seen.add(expected_fingerprint(config, PROBE_B2, snapshot_epoch=1))
    assert len(seen) == 6
    # a probe on the last snapshot reads the final weights: the same protocol
    assert expected_fingerprint(config, PROBE_B2, snapshot_epoch=2) == \
        expected_fingerprint(config, PROBE_B2)


def _tags(out_dir) -> dict:
    return json.loads((out_dir / files.METRICS).read_text())["tags"]


def test_runs_carry_the_fingerprint_the_report_expects(tiny_pretrained, tiny_data, tmp_path):
    config = tiny_config()
    assert _tags(tiny_pretrained.parent)["fingerprint"] == \
        expected_fingerprint(config, {"task": "pretrain", "variant": "b4-r4"})
    backbone = experiments.load_backbone(tiny_pretrained)
    assert backbone.lineage["pretrain_fingerprint"] == _tags(tiny_pretrained.parent)["fingerprint"]
    runs = {  # the report's tags for a cell -> the run the pipeline makes for it
        "nonlinear": (PROBE_B2, lambda out: experiments.probe(
            config, backbone, block=2, out_dir=out, tracker=NullTracker(), data=tiny_data)),
        "conv-finetuned": ({**PROBE_B2, "method": "conv-finetuned"}, lambda out: experiments.probe(
            config, backbone, head="conv", finetune=True, out_dir=out, tracker=NullTracker(),
            data=tiny_data)),
        "random-conv": (TABLE3["random-conv"], lambda out: experiments.probe(
            config, experiments.random_backbone(config, tiny_data), head="conv", out_dir=out,
            tracker=NullTracker(), data=tiny_data)),
        "random-conv-initial-bn": (TABLE3["random-conv-initial-bn"],
                                   lambda out: experiments.probe(
            config, experiments.random_backbone(config, tiny_data, calibrated=False), head="conv",
            out_dir=out, tracker=NullTracker(), data=tiny_data)),
        "supervised": ({"task": "supervised"}, lambda out: experiments.supervised(
            config, out_dir=out, tracker=NullTracker(), data=tiny_data)),
    }
    for name, (want, train) in runs.items():
        tags = _tags(train(tmp_path / name).out_dir)
        assert tags["fingerprint"] == expected_fingerprint(config, want), name
        assert {key: tags.get(key) for key in want} == want, name  # the report finds it by these
        assert tags["resolved.precision"] in ("bf16", "fp32")  # item 1: what ran, never "auto"
        assert {"resolved.threads", "resolved.world_size", "resolved.device"} <= set(tags)


def test_semisup_runs_carry_their_subset(tiny_pretrained, tmp_path):
    config = tiny_config()
    data = experiments.load_dataset(config)
    write_label_subset(tmp_path / "subsets", data.train_labels, 1, data.name)
    result = figure5.semisup_run(config, "conv", 1, tmp_path / "subsets", out_dir=tmp_path,
                                 backbone=experiments.load_backbone(tiny_pretrained),
                                 tracker=NullTracker())
    want = {**PROBE_B2, "method": "conv"}
    assert _tags(result.out_dir)["fingerprint"] == expected_fingerprint(config, want, subset_per_class=1)
    assert _tags(result.out_dir)["fingerprint"] != expected_fingerprint(config, want)


def test_one_fingerprint_for_a_set_ignores_order():
    assert protocol.combined(["b", "a"]) == protocol.combined(["a", "b"]) != protocol.combined(["a"])


def test_figure5b_supervised_runs_train_as_the_supervised_nin_and_skip_the_whole_set(tmp_path):
    config = tiny_config({"data": {"train_size": 60},  # 6 per class
                          "supervised": {"optim": {"epochs": 2}},
                          "semisup": {"optim": {"epochs": 1, "epoch_samples": 48}}})
    data = experiments.load_dataset(config)
    subsets = tmp_path / "subsets"
    write_label_subset(subsets, data.train_labels, 1, data.name)
    write_label_subset(subsets, data.train_labels, len(data.train_labels) // data.num_classes,
                       data.name)  # every training image: the Table 3 supervised run
    assert figure5.semisup_methods(1, subsets) == ("conv", "supervised")
    assert figure5.semisup_methods(len(data.train_labels) // data.num_classes, subsets) == \
        ("conv",)
    result = figure5.semisup_run(config, "supervised", 1, subsets, out_dir=tmp_path,
                                 tracker=NullTracker())
    assert [m["epoch"] for m in result.history] == [1, 2]  # supervised.optim's epochs
    assert _tags(result.out_dir)["fingerprint"] == \
        expected_fingerprint(config, {"task": "supervised"}, subset_per_class=1)
