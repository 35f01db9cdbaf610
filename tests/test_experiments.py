"""Experiments end to end: a killed run resumes to the same result, RotNet features beat
random ones, probes freeze (or fine-tune) the backbone, and bad input fails cleanly."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from helpers import ROTNET, cli_env, run_rotnet
from rotnet import checkpoint, experiments, figure5, files
from rotnet.errors import RotnetError
from rotnet.augment import normalize
from rotnet.models import NINBackbone, NINClassifier
from rotnet.tracking import NullTracker

COMPARED = ("epoch", "lr", "train_loss", "train_acc", "test_acc")


def metrics_of(history):
    return [{k: m[k] for k in COMPARED} for m in history]


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def snapshot_of(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_nothing_finished(out_dir, store=None):
    """No metrics.json (the file that says a run finished), and no run that looks finished."""
    assert not (out_dir / "metrics.json").exists()
    if store is not None:
        assert all(r.info.status == "FAILED" for r in store.runs()), \
            [(r.info.run_id, r.info.status) for r in store.runs()]


# ---- kill -9 in the middle, rerun, compare with an uninterrupted run -------------------

KILL_ARGS = ["pretrain", "--profile", "smoke", "--epochs", "4", "--no-track",
             "--set", "runtime.deterministic=true", "--set", "data.train_size=128",
             "--set", "data.test_size=64", "--set", "pretrain.optim.batch_size=16"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result_as_an_uninterrupted_run(tmp_path):
    env = cli_env()
    full_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    popen = dict(cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Both start at once (one thread each, two cores).
    full = subprocess.Popen([str(ROTNET), *KILL_ARGS, "--out", str(full_dir)], **popen)
    victim = subprocess.Popen([str(ROTNET), *KILL_ARGS, "--out", str(killed_dir)], **popen)
    try:
        deadline = time.monotonic() + 300
        # smoke keeps a snapshot every epoch; it is copied from checkpoint.pt after the save
        while not (killed_dir / "snapshot-epoch002.pt").exists():
            assert victim.poll() is None, f"finished before it could be killed:\n{victim.stderr.read()}"
            assert time.monotonic() < deadline, "no second epoch within 300 s"
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=60)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    interrupted = load(killed_dir / "checkpoint.pt")
    assert 2 <= interrupted["epoch"] < 4, "the kill must land in the middle of the run"
    assert not (killed_dir / "metrics.json").exists()

    _, full_err = full.communicate(timeout=300)
    assert full.returncode == 0, full_err

    resumed = run_rotnet([*KILL_ARGS, "--out", killed_dir], tmp_path, env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr

    full_metrics = json.loads((full_dir / "metrics.json").read_text())
    resumed_metrics = json.loads((killed_dir / "metrics.json").read_text())
    for key in ("test_acc", "best_test_acc", "best_epoch", "epochs"):
        assert resumed_metrics[key] == full_metrics[key], key
    assert resumed_metrics["epochs"] == 4

    full_state, resumed_state = load(full_dir / "checkpoint.pt"), load(killed_dir / "checkpoint.pt")
    assert resumed_state["epoch"] == full_state["epoch"] == 4
    assert metrics_of(resumed_state["history"]) == metrics_of(full_state["history"])
    # the epochs before the kill are the killed run's own, timings included: it resumed
    # rather than started over
    k = interrupted["epoch"]
    assert resumed_state["history"][:k] == interrupted["history"][:k]
    assert full_state["model"].keys() == resumed_state["model"].keys()
    for key, value in full_state["model"].items():
        assert torch.equal(resumed_state["model"][key], value), key
    for pid, buffers in full_state["optimizer"]["state"].items():
        other = resumed_state["optimizer"]["state"][pid]
        assert torch.equal(other["momentum_buffer"], buffers["momentum_buffer"])
    assert resumed_state["scheduler"] == full_state["scheduler"]


# ---- the real signal: RotNet features beat random features ----------------------------

SIGNAL = {
    "data": {"train_size": 1000, "test_size": 500},
    "runtime": {"seed": 0},
    "pretrain": {"width": 0.125, "optim": {"epochs": 6, "batch_size": 32, "milestones": [5]}},
    "probe": {"optim": {"epochs": 8, "batch_size": 64, "milestones": [6]}},
}


@pytest.mark.slow
def test_probe_on_rotnet_block_2_beats_the_same_probe_on_a_random_backbone(tmp_path,
                                                                           make_config):
    config = make_config(SIGNAL)
    data = experiments.load_dataset(config)
    pre = experiments.pretrain(config, tmp_path / "pretrain", tracker=NullTracker(), data=data)
    # The pretext was learned (chance is 25% over 500 × 4 rotated test images).
    assert pre.metrics["test_acc"] >= 30, pre.history

    rotnet = experiments.probe(config, experiments.load_backbone(tmp_path / "pretrain/checkpoint.pt"),
                               block=2, out_dir=tmp_path / "rotnet", tracker=NullTracker(),
                               data=data)
    random = experiments.probe(config, experiments.random_backbone(config, data),
                               block=2, out_dir=tmp_path / "random", tracker=NullTracker(),
                               data=data)
    ours, theirs = rotnet.metrics["test_acc"], random.metrics["test_acc"]
    assert ours >= theirs + 5, (f"RotNet block 2: {ours:.1f}%, random: {theirs:.1f}% "
                                f"(histories {[m['test_acc'] for m in rotnet.history]} / "
                                f"{[m['test_acc'] for m in random.history]})")
    assert ours >= 20  # and well above chance (10 classes)


# ---- frozen probes and fine-tuning ----------------------------------------------------


@pytest.mark.parametrize("head", ["nonlinear", "conv"])
def test_frozen_probe_leaves_the_backbone_unchanged(tmp_path, make_config, tiny_pretrained,
                                                    tiny_data, head):
    backbone = experiments.load_backbone(tiny_pretrained)
    before = snapshot_of(backbone.module)
    result = experiments.probe(make_config(), backbone, head=head, block=2, out_dir=tmp_path,
                               tracker=NullTracker(), data=tiny_data)
    after = backbone.module.state_dict()
    for key, value in before.items():  # weights and BatchNorm statistics (eval mode)
        assert torch.equal(after[key], value), key
    assert result.history and (tmp_path / "metrics.json").exists()
    saved = load(tmp_path / "checkpoint.pt")
    assert saved["task"] == "probe"
    # only the head is trained and saved; the backbone stays in the pretraining file
    head = experiments.classifier_head(head, backbone.module, 2, 3, 10, 0.125)
    assert saved["model"].keys() == head.state_dict().keys()
    assert all(not p.requires_grad for p in backbone.module.truncated(2).parameters())


def test_fine_tuning_changes_the_backbone_weights(tmp_path, make_config, tiny_pretrained,
                                                 tiny_data):
    backbone = experiments.load_backbone(tiny_pretrained)
    before = snapshot_of(backbone.module)
    result = experiments.probe(make_config(), backbone, head="nonlinear", block=2, finetune=True,
                               out_dir=tmp_path, tracker=NullTracker(), data=tiny_data)
    after = backbone.module.state_dict()
    for block in (0, 1):  # the two blocks under the head were trained
        conv = f"blocks.{block}.0.weight"
        assert not torch.equal(after[conv], before[conv]), conv
    for key in before:  # the blocks above the probed one are not part of the model
        if key.startswith(("blocks.2.", "blocks.3.")):
            assert torch.equal(after[key], before[key]), key
    saved = load(tmp_path / "checkpoint.pt")
    assert saved["task"] == "finetune"
    assert any(k.startswith("0.") for k in saved["model"])  # the trunk is part of what is saved
    pretrained_weights = load(tiny_pretrained)["model"]
    assert not torch.equal(saved["model"]["0.0.0.weight"],
                           pretrained_weights["backbone.blocks.0.0.weight"])
    assert result.metrics["epochs"] == 1
    # the head at the schedule's lr (logged), the pretrained blocks at lr × backbone_lr_scale
    config = make_config()
    head_group, trunk_group = saved["optimizer"]["param_groups"]
    scale = config.finetune.backbone_lr_scale
    assert 0 < scale < 1 and trunk_group["initial_lr"] == pytest.approx(scale * head_group["initial_lr"])
    assert head_group["initial_lr"] == config.finetune.optim.lr == result.history[0]["lr"]
    assert len(trunk_group["params"]) == len(list(backbone.module.truncated(2).parameters()))


def test_probe_lineage_points_at_the_pretraining(tmp_path, make_config, tiny_pretrained,
                                                 tiny_data):
    backbone = experiments.load_backbone(tiny_pretrained)
    assert backbone.lineage["pretrain_checkpoint_sha256"] == checkpoint.file_sha256(tiny_pretrained)
    assert backbone.lineage["blocks"] == 4 and backbone.lineage["variant"] == "b4-r4"
    result = experiments.probe(make_config(), backbone, block=1, out_dir=tmp_path,
                               tracker=NullTracker(), data=tiny_data)
    tags = json.loads((tmp_path / "metrics.json").read_text())["tags"]
    assert tags["pretrain_checkpoint_sha256"] == checkpoint.file_sha256(tiny_pretrained)
    assert tags["block"] == "1" and tags["task"] == "probe"
    assert result.metrics["epochs"] == 1


def test_random_backbone_is_seeded_and_not_the_pretraining_init(make_config, tiny_data):
    config = make_config()
    a = experiments.random_backbone(config, tiny_data).module.state_dict()
    b = experiments.random_backbone(config, tiny_data).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(config.runtime.seed)  # the init a pretraining with this seed starts from
    init = NINClassifier(4, 4, 3, config.pretrain.width).backbone.state_dict()
    assert not torch.equal(a["blocks.0.0.weight"], init["blocks.0.0.weight"])


def test_random_backbone_batchnorm_is_calibrated_on_the_data(make_config, tiny_data):
    """Frozen (eval-mode) random features at block 2 have the scale the data gives them in
    train mode, not the ~100× smaller scale of uncalibrated BatchNorm statistics."""
    backbone = experiments.random_backbone(make_config(), tiny_data).module
    x = normalize(tiny_data.train_images[:128], tiny_data.mean, tiny_data.std)
    with torch.no_grad():
        frozen = backbone.eval()(x, upto=2).std().item()
        batch_stats = backbone.train()(x, upto=2).std().item()
        torch.manual_seed(0)
        uncalibrated = NINBackbone(4, 3, make_config().pretrain.width).eval()(x, upto=2).std().item()
    assert 0.7 < frozen / batch_stats < 1.4, (frozen, batch_stats)
    assert uncalibrated < frozen / 10, (uncalibrated, frozen)


def test_the_as_initialised_random_backbone_keeps_initial_batchnorm_statistics(make_config,
                                                                               tiny_data):
    """'Random init + conv' as the paper most likely ran it: BatchNorm running mean 0 and
    variance 1, as built; the calibrated backbone has the same weights, other statistics."""
    config = make_config()
    initial = experiments.random_backbone(config, tiny_data, calibrated=False)
    calibrated = experiments.random_backbone(config, tiny_data)
    norms = [m for m in initial.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.running_mean.any() and bool((m.running_var == 1).all())
                         for m in norms)
    a, b = initial.module.state_dict(), calibrated.module.state_dict()
    assert torch.equal(a["blocks.0.0.weight"], b["blocks.0.0.weight"])
    assert not torch.equal(a["blocks.0.1.running_mean"], b["blocks.0.1.running_mean"])
    assert (initial.lineage["backbone"], calibrated.lineage["backbone"]) == ("random-initial-bn", "random")
    assert "variant" not in initial.lineage  # a variant is a pretraining's
    assert (initial.label, calibrated.label) == ("random-initial-bn", "random")
    assert initial.protocol != calibrated.protocol


def test_classifier_runs_log_per_class_test_accuracy_at_the_final_epoch(tmp_path, make_config,
                                                                       tiny_data, tracking_store):
    config = make_config({"supervised": {"optim": {"epochs": 2}}})
    result = experiments.supervised(config, out_dir=tmp_path, data=tiny_data)
    per_class = result.metrics["test_acc_per_class"]
    counts = torch.bincount(tiny_data.test_labels, minlength=tiny_data.num_classes).tolist()
    assert list(per_class) == [c for c, n in zip(tiny_data.classes, counts) if n]
    # weighted by the test images of each class, the per-class numbers give the overall one
    overall = sum(acc * n for acc, n in zip(per_class.values(), counts) if n) / sum(counts)
    assert overall == pytest.approx(result.metrics["test_acc"])
    run = tracking_store.run(result.run_id)
    for name, acc in per_class.items():
        assert run.data.metrics[f"test_acc_class_{name}"] == pytest.approx(acc)
        assert tracking_store.history(result.run_id, f"test_acc_class_{name}")[0][0] == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["test_acc_per_class"] == per_class


def test_classifier_runs_keep_their_test_predictions_beside_metrics_and_in_mlflow(
        tmp_path, make_config, tiny_pretrained, tiny_data, tracking_store):
    """One predicted class per test image, in test order: they give the final accuracy, and
    the copy logged to the run is what the claims read."""
    from rotnet import tracking
    from rotnet.data import test_set_digest

    backbone = experiments.load_backbone(tiny_pretrained)
    result = experiments.probe(make_config(), backbone, block=2, out_dir=tmp_path, data=tiny_data)
    saved = json.loads((tmp_path / files.PREDICTIONS).read_text())
    assert saved["labels"] == tiny_data.test_labels.tolist()
    assert saved["test_set_sha256"] == test_set_digest(tiny_data)
    correct = [p == y for p, y in zip(saved["predicted"], saved["labels"])]
    assert 100 * sum(correct) / len(correct) == pytest.approx(result.metrics["test_acc"])
    assert tracking.read_json_artifact(result.run_id, files.PREDICTIONS) == saved
    pretrained = json.loads((tiny_pretrained.parent / "metrics.json").read_text())
    assert not (tiny_pretrained.parent / files.PREDICTIONS).exists()  # a pretext run
    assert pretrained["tags"]["task"] == "pretrain"


def strict_json(text: str):
    """json.loads refusing NaN / Infinity (Python's accepts them; JSON has no such values)."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_class_without_test_images_has_no_accuracy_and_metrics_json_stays_json(
        tmp_path, make_config, tiny_data):
    import dataclasses

    from rotnet.tracking import NullTracker

    keep = tiny_data.test_labels != 0
    data = dataclasses.replace(tiny_data, test_images=tiny_data.test_images[keep],
                               test_labels=tiny_data.test_labels[keep])
    result = experiments.supervised(make_config(), out_dir=tmp_path, data=data,
                                    tracker=NullTracker())
    metrics = strict_json((tmp_path / "metrics.json").read_text())
    assert data.classes[0] not in metrics["test_acc_per_class"]
    assert metrics["test_acc_per_class"] == result.metrics["test_acc_per_class"]
    with pytest.raises(RotnetError, match="NaN or infinite"):
        experiments.metrics_json({"test_acc": float("nan")})


# ---- bad input: a RotnetError, and nothing that looks like a finished run ---------------


def test_probing_block_5_of_a_4_block_checkpoint(tmp_path, make_config, tiny_pretrained,
                                                 tiny_data, tracking_store):
    backbone = experiments.load_backbone(tiny_pretrained)
    with pytest.raises(RotnetError, match="block 5"):
        experiments.probe(make_config(), backbone, block=5, out_dir=tmp_path / "out",
                          data=tiny_data)
    assert not (tmp_path / "out").exists()
    assert tracking_store.runs() == []


def test_unknown_probe_head(tmp_path, make_config, tiny_pretrained, tiny_data, tracking_store):
    backbone = experiments.load_backbone(tiny_pretrained)
    with pytest.raises(RotnetError, match="linear-svm"):
        experiments.probe(make_config(), backbone, head="linear-svm", out_dir=tmp_path / "out",
                          data=tiny_data)
    with pytest.raises(RotnetError):
        experiments.classifier_head("linear-svm", backbone.module, 2, 3, 10, 0.125)
    assert not (tmp_path / "out").exists()
    assert tracking_store.runs() == []


def test_missing_checkpoint(tmp_path):
    with pytest.raises(RotnetError, match="not found"):
        experiments.load_backbone(tmp_path / "nope" / "checkpoint.pt")


def test_a_file_that_is_not_a_rotnet_checkpoint(tmp_path):
    weights = tmp_path / "resnet.pt"
    torch.save(NINClassifier(4, 4, 3, 0.125).state_dict(), weights)
    with pytest.raises(RotnetError, match="not a rotnet checkpoint"):
        experiments.load_backbone(weights)
    junk = tmp_path / "junk.pt"
    junk.write_text("definitely not a checkpoint\n")
    with pytest.raises(RotnetError):
        experiments.load_backbone(junk)


def test_a_probe_checkpoint_is_not_a_backbone(tmp_path, make_config, tiny_pretrained, tiny_data):
    experiments.probe(make_config(), experiments.load_backbone(tiny_pretrained), out_dir=tmp_path,
                      tracker=NullTracker(), data=tiny_data)
    with pytest.raises(RotnetError, match="pretrain"):
        experiments.load_backbone(tmp_path / "checkpoint.pt")


def test_backbone_for_other_input_channels(tiny_pretrained):
    with pytest.raises(RotnetError, match="channel"):
        experiments.check_backbone(experiments.load_backbone(tiny_pretrained), channels=1)


def test_pretraining_into_a_directory_of_another_architecture(tmp_path, make_config, tiny_data,
                                                              tiny_pretrained, tracking_store):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(tiny_pretrained, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(RotnetError, match="blocks"):
        experiments.pretrain(make_config({"pretrain": {"blocks": 5}}), out, data=tiny_data)
    with pytest.raises(RotnetError, match="rotations"):
        experiments.pretrain(make_config({"pretrain": {"rotations": "8"}}), out, data=tiny_data)
    assert (out / "checkpoint.pt").read_bytes() == before  # untouched
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"]
    assert tracking_store.runs() == []


def test_resuming_with_other_training_settings_is_refused(tmp_path, make_config, tiny_data,
                                                          tiny_pretrained, tracking_store):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copyfile(tiny_pretrained, out / "checkpoint.pt")
    with pytest.raises(RotnetError, match="lr"):
        experiments.pretrain(make_config({"pretrain": {"optim": {"lr": 0.05}}}), out,
                             data=tiny_data)
    assert_nothing_finished(out, tracking_store)
    assert tracking_store.runs() == []


def test_probe_into_a_directory_of_another_backbone(tmp_path, make_config, tiny_pretrained,
                                                    tiny_data, tracking_store):
    config = make_config()
    experiments.probe(config, experiments.load_backbone(tiny_pretrained), out_dir=tmp_path,
                      tracker=NullTracker(), data=tiny_data)
    (tmp_path / "metrics.json").unlink()
    with pytest.raises(RotnetError, match="backbone"):
        experiments.probe(config, experiments.random_backbone(config, tiny_data), out_dir=tmp_path,
                          data=tiny_data)
    assert_nothing_finished(tmp_path, tracking_store)
    assert tracking_store.runs() == []


def test_label_subset_larger_than_a_class(tmp_path, make_config, tiny_pretrained,
                                          tracking_store):
    config = make_config({"semisup": {"per_class": [5, 1000]}})
    with pytest.raises(RotnetError, match="1000"):
        figure5.write_subsets(config, tmp_path / "subsets")
    assert list((tmp_path / "subsets").glob("*")) == []  # not even the size that fits
    with pytest.raises(RotnetError):
        figure5.semisup_run(config, "conv", 1000, tmp_path / "subsets",
                            backbone=experiments.load_backbone(tiny_pretrained),
                            out_dir=tmp_path / "semisup")
    assert not (tmp_path / "semisup").exists()
    assert tracking_store.runs() == []


def test_semisup_run_trains_on_the_subset_only(tmp_path, make_config, tiny_pretrained):
    config = make_config({"semisup": {"per_class": [2],
                                      "optim": {"epochs": 1, "batch_size": 10, "milestones": [],
                                                "epoch_samples": 40}}})
    (path,) = figure5.write_subsets(config, tmp_path / "subsets")
    backbone = experiments.load_backbone(tiny_pretrained)
    result = figure5.semisup_run(config, "conv", 2, tmp_path / "subsets", backbone=backbone,
                                 out_dir=tmp_path / "semisup", tracker=NullTracker())
    tags = json.loads((result.out_dir / "metrics.json").read_text())["tags"]
    assert tags["subset_per_class"] == "2" and tags["subset_size"] == "20"
    assert tags["subset_file_sha256"] == checkpoint.file_sha256(path)
    assert result.out_dir == tmp_path / "semisup" / "conv-k2"
    with pytest.raises(RotnetError, match="method"):
        figure5.semisup_run(config, "k-means", 2, tmp_path / "subsets", backbone=backbone,
                            out_dir=tmp_path / "semisup", tracker=NullTracker())


def test_read_result_needs_a_finished_run(tmp_path):
    with pytest.raises(RotnetError, match="metrics.json"):
        experiments.read_result(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"test_acc": 1.0}))
    assert experiments.read_result(tmp_path) == {"test_acc": 1.0}


def test_probe_epochs_follow_the_probe_schedule(tmp_path, make_config, tiny_pretrained, tiny_data):
    config = make_config({"probe": {"optim": {"epochs": 2, "milestones": [1]}},
                          "conv_probe": {"optim": {"epochs": 1}}})
    backbone = experiments.load_backbone(tiny_pretrained)
    result = experiments.probe(config, backbone, head="nonlinear", out_dir=tmp_path / "nl",
                               tracker=NullTracker(), data=tiny_data)
    assert [m["lr"] for m in result.history] == pytest.approx([0.1, 0.02])
    conv = experiments.probe(config, backbone, head="conv", out_dir=tmp_path / "conv",
                             tracker=NullTracker(), data=tiny_data)
    assert len(conv.history) == 1
    copied = copy.deepcopy(config.probe.optim)
    copied.epochs = 1
    own = experiments.probe(config, backbone, optim=copied, out_dir=tmp_path / "own",
                            tracker=NullTracker(), data=tiny_data)
    assert len(own.history) == 1
