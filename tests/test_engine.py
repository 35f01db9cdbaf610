"""The training loop: determinism, resuming, schedule, hooks and the per-epoch sample order."""

from __future__ import annotations

import pytest
import torch

from rotnet import checkpoint, experiments
from rotnet.backbones import load_backbone
from rotnet.config import OptimConfig
from rotnet.engine import Hooks, epoch_generator, epoch_order, make_optimizer
from rotnet.tracking import NullTracker

DETERMINISTIC = {"runtime": {"deterministic": True}}
COMPARED = ("epoch", "lr", "train_loss", "train_acc", "test_acc")  # not the timings


def metrics_of(history):
    return [{k: m[k] for k in COMPARED} for m in history]


def final_state(out_dir):
    return torch.load(out_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_data):
    """A deterministic 2-epoch tiny pretraining, seed 0."""
    from helpers import tiny_config

    out = tmp_path_factory.mktemp("reference")
    calls = {"start": [], "epoch_end": [], "step": []}
    hooks = Hooks(on_start=lambda *a: calls["start"].append(a),
                  on_step=lambda *a: calls["step"].append(a),
                  on_epoch_end=lambda m: calls["epoch_end"].append(dict(m)))
    result = experiments.pretrain(tiny_config(DETERMINISTIC), out, tracker=NullTracker(),
                                  hooks=hooks, data=tiny_data)
    return out, result, calls


def test_same_seed_gives_identical_runs(tmp_path, reference, make_config, tiny_data):
    ref_dir, ref, _ = reference
    again = experiments.pretrain(make_config(DETERMINISTIC), tmp_path / "again",
                                 tracker=NullTracker(), data=tiny_data)
    assert metrics_of(again.history) == metrics_of(ref.history)
    assert again.metrics["test_acc"] == ref.metrics["test_acc"]
    assert_same_weights(final_state(tmp_path / "again"), final_state(ref_dir))


def test_different_seed_gives_a_different_run(tmp_path, reference, make_config, tiny_data):
    ref_dir, ref, _ = reference
    other = experiments.pretrain(make_config({**DETERMINISTIC, "runtime": {"deterministic": True,
                                                                           "seed": 1}}),
                                 tmp_path / "other", tracker=NullTracker(), data=tiny_data)
    assert [m["train_loss"] for m in other.history] != [m["train_loss"] for m in ref.history]
    a, b = final_state(tmp_path / "other"), final_state(ref_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_history_has_one_entry_per_epoch_and_follows_the_schedule(reference):
    _, result, _ = reference
    history = result.history
    assert [m["epoch"] for m in history] == [1, 2]
    # TINY: lr 0.1, × 0.2 after epoch 1 (milestones [1]); lr is the one each epoch trained with.
    assert [m["lr"] for m in history] == pytest.approx([0.1, 0.02])
    for m in history:
        assert m["train_loss"] > 0 and 0 <= m["train_acc"] <= 100 and 0 <= m["test_acc"] <= 100
        # 32 test images × 4 rotations: accuracy is counted per rotated image
        assert (m["test_acc"] * 128 / 100) == pytest.approx(round(m["test_acc"] * 128 / 100))
    assert result.metrics["test_acc"] == history[-1]["test_acc"]
    assert result.metrics["best_test_acc"] == max(m["test_acc"] for m in history)
    assert result.metrics["epochs"] == 2


def test_hooks_see_start_steps_and_epochs(reference):
    _, result, calls = reference
    # 64 images, batch 16: 4 steps per epoch; starting from epoch 0 of 2.
    assert calls["start"] == [(0, 2, 4)]
    assert [m["epoch"] for m in calls["epoch_end"]] == [1, 2]
    assert [m["test_acc"] for m in calls["epoch_end"]] == [m["test_acc"] for m in result.history]
    # log_every is larger than an epoch: one progress update, at each epoch's last step
    assert [(epoch, step) for epoch, step, *_ in calls["step"]] == [(0, 4), (1, 4)]


def test_crash_then_resume_equals_an_uninterrupted_run(tmp_path, reference, make_config,
                                                       tiny_data):
    """In-process: a run that dies after epoch 1 and is rerun ends where an uninterrupted
    run ends (the SIGKILL version is in test_experiments)."""
    ref_dir, ref, _ = reference
    config = make_config(DETERMINISTIC)

    def die_at_the_end_of_epoch_2(metrics):  # the hook runs before that epoch's checkpoint
        if metrics["epoch"] == 2:
            raise RuntimeError("simulated crash")

    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        experiments.pretrain(config, out, tracker=NullTracker(),
                             hooks=Hooks(on_epoch_end=die_at_the_end_of_epoch_2), data=tiny_data)
    crashed = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert crashed["epoch"] == 1
    assert not (out / "metrics.json").exists()

    starts = []
    resumed = experiments.pretrain(config, out, tracker=NullTracker(),
                                   hooks=Hooks(on_start=lambda *a: starts.append(a)),
                                   data=tiny_data)
    assert starts == [(1, 2, 4)]  # it continued after epoch 1
    assert resumed.history[0] == crashed["history"][0]  # epoch 1 is the saved one, timings too
    assert metrics_of(resumed.history) == metrics_of(ref.history)
    assert_same_weights(final_state(out), final_state(ref_dir))


def test_rerunning_a_finished_run_trains_nothing_more(tmp_path, make_config, tiny_data):
    config = make_config({"pretrain": {"optim": {"epochs": 1}}})
    first = experiments.pretrain(config, tmp_path, tracker=NullTracker(), data=tiny_data)
    weights = final_state(tmp_path)
    starts = []
    again = experiments.pretrain(config, tmp_path, tracker=NullTracker(), data=tiny_data,
                                 hooks=Hooks(on_start=lambda *a: starts.append(a)))
    assert starts == [(1, 1, 4)]
    assert again.history == first.history
    assert_same_weights(final_state(tmp_path), weights)


def test_snapshots_are_kept_every_n_epochs(tmp_path, make_config, tiny_data):
    config = make_config({"pretrain": {"snapshot_every": 1}})
    experiments.pretrain(config, tmp_path, tracker=NullTracker(), data=tiny_data)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))  # .lock
    assert names == ["checkpoint.pt", "metrics.json", "snapshot-epoch001.pt",
                     "snapshot-epoch002.pt"]
    last = torch.load(tmp_path / "snapshot-epoch002.pt", weights_only=True)
    assert last["epoch"] == 2
    assert (tmp_path / "snapshot-epoch002.pt").read_bytes() == (tmp_path / "checkpoint.pt").read_bytes()
    assert torch.load(tmp_path / "snapshot-epoch001.pt", weights_only=True)["epoch"] == 1


def test_scoring_the_test_set_every_other_epoch_changes_no_result(tmp_path, make_config,
                                                                  tiny_data):
    """pretrain.eval_every: the epochs between are trained exactly as when every epoch is
    scored, the scored ones score the same, and the checkpoint loads as a backbone."""
    three = {**DETERMINISTIC, "pretrain": {"optim": {"epochs": 3, "milestones": [2]}}}
    every = experiments.pretrain(make_config(three), tmp_path / "every", tracker=NullTracker(),
                                 data=tiny_data)
    sparse = {**three, "pretrain": {**three["pretrain"], "eval_every": 2}}
    other = experiments.pretrain(make_config(sparse), tmp_path / "other", tracker=NullTracker(),
                                 data=tiny_data)
    trained = ("epoch", "lr", "train_loss", "train_acc")
    assert [{k: m[k] for k in trained} for m in other.history] == \
        [{k: m[k] for k in trained} for m in every.history]
    assert ["test_acc" in m for m in other.history] == [False, True, True]  # 2nd and the last
    assert [m["test_acc"] for m in other.history[1:]] == [m["test_acc"] for m in every.history[1:]]
    assert_same_weights(final_state(tmp_path / "other"), final_state(tmp_path / "every"))
    assert other.metrics["best_test_acc"] == max(m["test_acc"] for m in every.history[1:])
    backbone = load_backbone(tmp_path / "other" / "checkpoint.pt")
    assert backbone.rotation_acc == every.history[-1]["test_acc"]
    assert checkpoint.last_test_acc(other.history[:1]) is None


def test_warm_up_raises_the_lr_step_by_step_then_follows_the_schedule(tmp_path, make_config,
                                                                      tiny_data, monkeypatch):
    stepped = []
    step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        stepped.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    config = make_config({"pretrain": {"optim": {"warmup_epochs": 1}}})
    result = experiments.pretrain(config, tmp_path, tracker=NullTracker(), data=tiny_data)
    # TINY: 4 steps per epoch, lr 0.1, × 0.2 after epoch 1
    assert stepped == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.02, 0.02, 0.02, 0.02])
    assert [m["lr"] for m in result.history] == pytest.approx([0.1, 0.02])


def test_epoch_order_wraps_around_a_small_pool_as_whole_shuffles():
    pool = torch.tensor([3, 8, 13, 21, 34])
    order = epoch_order(pool, 12, epoch_generator(0, 0))
    assert len(order) == 12
    assert sorted(order[:5].tolist()) == sorted(pool.tolist())
    assert sorted(order[5:10].tolist()) == sorted(pool.tolist())
    assert set(order[10:].tolist()) <= set(pool.tolist()) and len(set(order[10:].tolist())) == 2
    # one pass when the epoch is the pool
    assert sorted(epoch_order(pool, 5, epoch_generator(0, 0)).tolist()) == sorted(pool.tolist())


def test_epoch_randomness_depends_only_on_seed_and_epoch():
    pool = torch.arange(100)
    a = epoch_order(pool, 100, epoch_generator(0, 3))
    torch.manual_seed(1234)  # the global RNG has no say
    b = epoch_order(pool, 100, epoch_generator(0, 3))
    assert torch.equal(a, b)
    assert not torch.equal(a, epoch_order(pool, 100, epoch_generator(0, 4)))
    assert not torch.equal(a, epoch_order(pool, 100, epoch_generator(1, 3)))


def test_fine_tuning_trains_the_pretrained_blocks_at_a_fraction_of_the_lr():
    trunk, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    optimizer, scheduler = make_optimizer(torch.nn.Sequential(trunk, head),
                                          OptimConfig(lr=0.1, milestones=[1], lr_decay=0.2),
                                          [(trunk, 0.1)])

    def lrs():
        lr = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        return lr[id(trunk.weight)], lr[id(trunk.bias)], lr[id(head.weight)]

    assert lrs() == pytest.approx((0.01, 0.01, 0.1))
    optimizer.step()
    scheduler.step()  # the milestone scales both groups alike
    assert lrs() == pytest.approx((0.002, 0.002, 0.02))


class _Counting(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_a_probe_computes_its_frozen_test_features_once_and_scores_the_same(tiny_data):
    from rotnet.config import RuntimeConfig
    from rotnet.engine import DeviceData, FrozenTestFeatures, Task, evaluate
    from rotnet.runtime import Runtime

    torch.manual_seed(0)
    runtime = Runtime(RuntimeConfig(device="cpu", precision="fp32"))
    frozen = _Counting(torch.nn.Conv2d(tiny_data.channels, 4, 3, padding=1))
    head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(4, tiny_data.num_classes))
    task, data = Task("probe", head, frozen=frozen), DeviceData(tiny_data, runtime.device)
    uncached = evaluate(task, data, runtime)
    batches = frozen.calls
    features = FrozenTestFeatures()
    assert [evaluate(task, data, runtime, features) for _ in range(3)] == [uncached] * 3
    assert frozen.calls == 2 * batches  # computed in the first evaluation only
    torch.nn.init.zeros_(head[2].weight)  # the head changes between epochs; the features do not
    assert evaluate(task, data, runtime, features) == evaluate(task, data, runtime)
    over_limit = FrozenTestFeatures(limit_bytes=0)  # too large to keep: computed every time
    calls = frozen.calls
    evaluate(task, data, runtime, over_limit), evaluate(task, data, runtime, over_limit)
    assert frozen.calls == calls + 2 * batches and not over_limit.batches


def test_the_evaluation_batch_follows_the_device_and_not_the_accuracy(tiny_data):
    from rotnet.config import RuntimeConfig
    from rotnet.engine import DeviceData, Task, evaluate
    from rotnet.runtime import EVAL_BATCH, Runtime
    from rotnet.models import NINClassifier
    from rotnet.rotations import rotation_set

    runtime = Runtime(RuntimeConfig(device="cpu", precision="fp32"))
    assert runtime.eval_batch == EVAL_BATCH["cpu"] < EVAL_BATCH["cuda"]
    assert runtime.describe()["eval_batch"] == EVAL_BATCH["cpu"]  # logged as resolved.eval_batch
    torch.manual_seed(0)
    model = NINClassifier(2, 4, tiny_data.channels, 0.125)
    task, data = Task("pretrain", model, rotations=rotation_set("4")), DeviceData(tiny_data, "cpu")
    accuracies = []
    for size in (5, 500):  # 32 test images: seven batches, then one
        runtime.eval_batch = size
        accuracies.append(evaluate(task, data, runtime))
    assert accuracies[0] == pytest.approx(accuracies[1])


def test_a_classifier_keeps_its_last_evaluations_predictions_and_a_rerun_recomputes_them(
        tmp_path, make_config, tiny_pretrained, tiny_data):
    """The final predictions come from the last epoch's evaluation (no second pass over the
    test set); a rerun of the finished run trains nothing and predicts the same by one pass."""
    import json

    from rotnet import files

    backbone = experiments.load_backbone(tiny_pretrained)
    first = experiments.probe(make_config(), backbone, block=2, out_dir=tmp_path,
                              tracker=NullTracker(), data=tiny_data)
    saved = json.loads((tmp_path / files.PREDICTIONS).read_text())
    (tmp_path / files.PREDICTIONS).unlink()
    again = experiments.probe(make_config(), backbone, block=2, out_dir=tmp_path,
                              tracker=NullTracker(), data=tiny_data)
    assert metrics_of(again.history) == metrics_of(first.history)  # nothing retrained
    assert json.loads((tmp_path / files.PREDICTIONS).read_text()) == saved
    assert again.metrics["test_acc_per_class"] == first.metrics["test_acc_per_class"]
