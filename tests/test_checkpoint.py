"""Checkpoints: atomic writes, refusing files that are not (matching) rotnet checkpoints,
and a resume that restores model, optimiser, scheduler and RNG state."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rotnet import checkpoint, files
from rotnet.errors import RotnetError
from rotnet.models import NINClassifier

ARCH = {"model": "rotnet", "blocks": 4, "rotations": "4", "width": 0.125, "in_channels": 3}


def make_training_state(blocks=4, seed=0):
    torch.manual_seed(seed)
    model = NINClassifier(blocks, 4, 3, 0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], gamma=0.2)
    return model, optimizer, scheduler


def one_step(model, optimizer, scheduler):
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def save(path, model, optimizer, scheduler, arch=ARCH, task="pretrain", epoch=1, config=None):
    checkpoint.save_checkpoint(path, task=task, arch=arch, config=config or {"a": {"b": 1}},
                               model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                               history=[{"epoch": 1, "test_acc": 50.0}], extra={"run_id": "r1"})


def test_atomic_write_replaces_the_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    files.atomic_write_text(target, "first")
    files.atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_interrupted_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old contents")
    seen = {}

    def half_write(tmp):
        seen["tmp"] = Path(tmp)
        Path(tmp).write_bytes(b"half of the new")
        assert Path(tmp).parent == target.parent and Path(tmp) != target
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, half_write)
    assert target.read_bytes() == b"old contents"
    assert not seen["tmp"].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_interrupted_first_write_leaves_nothing(tmp_path):
    def fail(tmp):
        Path(tmp).write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "metrics.json", fail)
    assert list(tmp_path.iterdir()) == []


def test_save_then_load_round_trips(tmp_path):
    model, optimizer, scheduler = make_training_state()
    one_step(model, optimizer, scheduler)
    path = tmp_path / "checkpoint.pt"
    save(path, model, optimizer, scheduler, epoch=3)
    state = checkpoint.load_checkpoint(path, task="pretrain")
    assert state["format"] == checkpoint.FORMAT
    assert state["epoch"] == 3 and state["task"] == "pretrain" and state["arch"] == ARCH
    assert state["history"] == [{"epoch": 1, "test_acc": 50.0}]
    assert state["extra"] == {"run_id": "r1"}
    for key, value in model.state_dict().items():
        assert torch.equal(state["model"][key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_missing_checkpoint_is_a_rotnet_error(tmp_path):
    with pytest.raises(RotnetError, match="not found"):
        checkpoint.load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(RotnetError):
        checkpoint.load_checkpoint(tmp_path)  # a directory is not a checkpoint either


def test_random_bytes_are_a_rotnet_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(RotnetError, match=str(path.name)):
        checkpoint.load_checkpoint(path)


def test_empty_and_truncated_files_are_rotnet_errors(tmp_path):
    model, optimizer, scheduler = make_training_state()
    good = tmp_path / "good.pt"
    save(good, model, optimizer, scheduler)
    data = good.read_bytes()
    for name, contents in (("empty.pt", b""), ("half.pt", data[: len(data) // 2])):
        path = tmp_path / name
        path.write_bytes(contents)
        with pytest.raises(RotnetError):
            checkpoint.load_checkpoint(path)


@pytest.mark.parametrize("payload", [
    {"model": {}, "epoch": 3},  # a dict, but not a rotnet checkpoint
    {"format": "something-else/1", "model": {}},
    [1, 2, 3],
])
def test_a_torch_file_that_is_not_a_rotnet_checkpoint_is_a_rotnet_error(tmp_path, payload):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(RotnetError, match="not a rotnet checkpoint"):
        checkpoint.load_checkpoint(path)


def test_a_plain_state_dict_is_a_rotnet_error(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(NINClassifier(4, 4, 3, 0.125).state_dict(), path)
    with pytest.raises(RotnetError):
        checkpoint.load_checkpoint(path)


def test_wrong_task_is_a_rotnet_error(tmp_path):
    model, optimizer, scheduler = make_training_state()
    path = tmp_path / "checkpoint.pt"
    save(path, model, optimizer, scheduler, task="probe")
    with pytest.raises(RotnetError, match="probe"):
        checkpoint.load_checkpoint(path, task="pretrain")
    assert checkpoint.load_checkpoint(path)["task"] == "probe"


def test_resume_into_a_different_architecture_is_a_rotnet_error(tmp_path):
    model, optimizer, scheduler = make_training_state(blocks=4)
    path = tmp_path / "checkpoint.pt"
    save(path, model, optimizer, scheduler)
    other, other_opt, other_sched = make_training_state(blocks=5, seed=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(RotnetError, match="blocks"):
        checkpoint.resume(path, task="pretrain", arch={**ARCH, "blocks": 5}, model=other,
                          optimizer=other_opt, scheduler=other_sched)
    # nothing was loaded into the model
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    for key, value in (("rotations", "8"), ("width", 0.25), ("in_channels", 1)):
        with pytest.raises(RotnetError, match=key):
            checkpoint.resume(path, task="pretrain", arch={**ARCH, key: value}, model=model,
                              optimizer=optimizer, scheduler=scheduler)


def test_resume_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = make_training_state(seed=0)
    one_step(model, optimizer, scheduler)
    path = tmp_path / "checkpoint.pt"
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    save(path, model, optimizer, scheduler, epoch=1)
    expected_draws = (torch.rand(3), np.random.rand(2), random.random())

    fresh, fresh_opt, fresh_sched = make_training_state(seed=99)
    epoch, history, extra = checkpoint.resume(path, task="pretrain", arch=ARCH, model=fresh,
                                              optimizer=fresh_opt, scheduler=fresh_sched)
    assert (epoch, history, extra) == (1, [{"epoch": 1, "test_acc": 50.0}], {"run_id": "r1"})
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert fresh_sched.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"] == 1
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.02)
    momentum = [fresh_opt.state[p]["momentum_buffer"] for p in fresh.parameters()]
    original = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, original))
    # the RNG streams continue where the checkpoint left them
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert np.array_equal(np.random.rand(2), expected_draws[1])
    assert random.random() == expected_draws[2]


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path):
    model, optimizer, scheduler = make_training_state()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert checkpoint.resume(tmp_path / "checkpoint.pt", task="pretrain", arch=ARCH, model=model,
                             optimizer=optimizer, scheduler=scheduler) == (0, [], {})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_check_config_refuses_changed_training_settings_but_not_the_device(tmp_path):
    config = {"pretrain": {"optim": {"lr": 0.1}}, "runtime": {"device": "cpu", "log_every": 20}}
    state = {"config": config}
    moved = {"pretrain": {"optim": {"lr": 0.1}}, "runtime": {"device": "cuda", "log_every": 5}}
    checkpoint.check_config(state, moved, "ckpt")  # no error
    changed = {"pretrain": {"optim": {"lr": 0.05}}, "runtime": {"device": "cpu", "log_every": 20}}
    with pytest.raises(RotnetError, match="pretrain.optim.lr"):
        checkpoint.check_config(state, changed, "ckpt")


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    data = os.urandom(3 << 20)  # more than one read chunk
    path.write_bytes(data)
    assert checkpoint.file_sha256(path) == hashlib.sha256(data).hexdigest()
