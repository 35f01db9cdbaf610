"""The one training / evaluation loop that every experiment uses.

What differs between experiments is the `Task` handed to it: the module that is trained,
an optional frozen feature extractor in front of it (probes: no gradient, eval mode, so
the backbone's backward pass is never paid for), and whether targets are rotation
labels (the pretext) or class labels.

The hot path has no per-sample Python: the data set lives on the device as uint8,
crops/flips/rotations are batched tensor ops, and all randomness of an epoch is drawn
up front from a generator seeded by (seed, epoch) — which is also what makes a resumed
run identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rotnet import checkpoint, files
from rotnet.augment import apply_crop_flip, draw_crop_flip, normalize
from rotnet.config import OptimConfig
from rotnet.data import ImageData
from rotnet.errors import RotnetError
from rotnet.faults import crash_point
from rotnet.rotations import RotationSet, rotate_batch
from rotnet.runtime import Runtime

FROZEN_FEATURES_BYTES = 2 ** 30  # a probe keeps its frozen test features up to this size
CROP_PADDING = 4


@dataclass
class Task:
    """What one run trains. `model` maps inputs to logits and is the only thing optimised;
    `frozen`, if given, runs first without gradients and in eval mode."""

    name: str  # the task: pretrain | probe | finetune | supervised (a checkpoint records it)
    model: nn.Module
    frozen: nn.Module | None = None
    rotations: RotationSet | None = None  # set: the rotation pretext (targets = rotation labels)
    arch: dict = field(default_factory=dict)  # what a checkpoint must match to resume
    # (submodule of `model`, factor): trained at lr × factor (fine-tuning's pretrained blocks)
    lr_scales: list[tuple[nn.Module, float]] = field(default_factory=list)


@dataclass
class Hooks:
    """Progress and tracking plug in here, so the loop imports neither Rich nor MLflow."""

    on_start: Callable[[int, int, int], None] | None = None  # (start_epoch, epochs, steps_per_epoch)
    on_step: Callable[[int, int, float | None, float], None] | None = None  # (epoch, step, loss, img/s)
    on_epoch_end: Callable[[dict], None] | None = None  # the epoch's metrics


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """All randomness of epoch `epoch`: independent of how many epochs ran before."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def epoch_order(pool: torch.Tensor, epoch_samples: int, generator: torch.Generator) -> torch.Tensor:
    """`epoch_samples` indices drawn from `pool` as consecutive shuffles (wrapping around a
    pool smaller than the epoch, as the semi-supervised protocol requires)."""
    repeats = math.ceil(epoch_samples / len(pool))
    order = torch.cat([pool[torch.randperm(len(pool), generator=generator)] for _ in range(repeats)])
    return order[:epoch_samples]


class DeviceData:
    """The data set moved to the device once, plus its normalisation constants."""

    def __init__(self, data: ImageData, device: torch.device):
        self.train_images = data.train_images.to(device)
        self.train_labels = data.train_labels.to(device)
        self.test_images = data.test_images.to(device)
        self.test_labels = data.test_labels.to(device)
        self.mean = torch.tensor(data.mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(data.std, dtype=torch.float32, device=device)


def make_inputs(task: Task, images: torch.Tensor, labels: torch.Tensor, data: DeviceData,
                runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (already augmented) → normalised, rotated if pretext, with targets."""
    x = normalize(images, data.mean, data.std)
    if task.rotations is not None:
        x, labels = rotate_batch(x, task.rotations)
    return runtime.to_memory_format(x), labels


def forward(task: Task, x: torch.Tensor) -> torch.Tensor:
    if task.frozen is not None:
        with torch.no_grad():
            x = task.frozen(x)
    return task.model(x)


def train_one_epoch(task: Task, data: DeviceData, optimizer, runtime: Runtime, epoch: int,
                    optim: OptimConfig, pool: torch.Tensor, hooks: Hooks) -> dict:
    generator = epoch_generator(runtime.config.seed, epoch)
    samples = optim.epoch_samples or len(pool)
    order = epoch_order(pool, samples, generator)
    augment = draw_crop_flip(len(order), CROP_PADDING, generator).to(runtime.device)
    batch = optim.batch_size
    # Drop a last partial batch (BatchNorm on a handful of images is noise), unless
    # the whole epoch is smaller than one batch.
    steps = max(1, len(order) // batch)
    order = order.to(data.train_images.device, non_blocking=True)
    world = runtime.world

    task.model.train()
    if task.frozen is not None:
        task.frozen.eval()
    scheduled = [group["lr"] for group in optimizer.param_groups]
    warmup_steps = optim.warmup_epochs * steps if epoch < optim.warmup_epochs else 0
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    seen = 0
    start = time.perf_counter()
    for step in range(steps):
        lo, hi = world.share(step * batch, min((step + 1) * batch, len(order)))
        index = order[lo:hi]
        images = apply_crop_flip(data.train_images[index], augment[lo:hi])
        x, y = make_inputs(task, images, data.train_labels[index], data, runtime)
        if warmup_steps:
            _warm_up(optimizer, scheduled, (epoch * steps + step + 1) / warmup_steps)
        with runtime.autocast():
            logits = forward(task, x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if hooks.on_step and ((step + 1) % runtime.config.log_every == 0 or step + 1 == steps):
            # The only host sync inside the epoch, every log_every steps.
            rate = seen / (time.perf_counter() - start)
            hooks.on_step(epoch, step + 1, loss.item(), rate)
    elapsed = time.perf_counter() - start
    if warmup_steps:  # back to the schedule's lr, which the scheduler steps from
        _warm_up(optimizer, scheduled, 1.0)
    loss_sum, correct, seen = world.sum(loss_sum, correct, torch.tensor(seen, device=runtime.device))
    seen = int(seen.item())
    metrics = {"train_loss": loss_sum.item() / seen, "train_acc": 100.0 * correct.item() / seen,
               "images_per_s": seen / elapsed, "epoch_seconds": elapsed}
    if runtime.device.type == "cuda":
        metrics["peak_memory_mib"] = torch.cuda.max_memory_allocated(runtime.device) / 2 ** 20
    return metrics


def _warm_up(optimizer, scheduled: list[float], fraction: float) -> None:
    """Every parameter group at `fraction` of its scheduled lr (one warm-up step)."""
    for group, lr in zip(optimizer.param_groups, scheduled):
        group["lr"] = lr * fraction


def _scored(epoch: int, epochs: int, eval_every: int, snapshot_every: int) -> bool:
    """Whether epoch `epoch` (1-based) scores the test set: every `eval_every`-th, the
    last (a run's result) and every snapshot (Figure 5a reads a snapshot's accuracy)."""
    return (epoch == epochs or epoch % eval_every == 0
            or bool(snapshot_every and epoch % snapshot_every == 0))


class FrozenTestFeatures:
    """A probe's frozen trunk on the test batches, computed at the first evaluation and
    reused by the next ones: in eval mode, without gradients, it gives the same features
    every epoch (on the quick profile recomputing them was 60 % of the probes' time). Keeps
    at most `limit_bytes`; batches beyond are computed each time."""

    def __init__(self, limit_bytes: int = FROZEN_FEATURES_BYTES):
        self.limit_bytes = limit_bytes
        self.stored = 0
        self.batches: dict[int, torch.Tensor] = {}

    def __call__(self, frozen: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
        if batch not in self.batches:
            features = frozen(x)
            if self.stored + features.nbytes > self.limit_bytes:
                return features
            self.batches[batch], self.stored = features, self.stored + features.nbytes
        return self.batches[batch]


def test_predictions(task: Task, data: DeviceData, runtime: Runtime,
                     frozen_features: FrozenTestFeatures | None = None):
    """(predicted, target) per test batch of this rank's share, models in eval mode."""
    task.model.eval()
    if task.frozen is not None:
        task.frozen.eval()
    world, size = runtime.world, runtime.eval_batch
    for start in range(world.rank * size, len(data.test_labels), size * world.world_size):
        x, y = make_inputs(task, data.test_images[start:start + size],
                           data.test_labels[start:start + size], data, runtime)
        with runtime.autocast():
            if task.frozen is not None and frozen_features is not None:
                predicted = task.model(frozen_features(task.frozen, x, start)).argmax(1)
            else:
                predicted = forward(task, x).argmax(1)
        yield predicted, y


@torch.no_grad()
def evaluate(task: Task, data: DeviceData, runtime: Runtime,
             frozen_features: FrozenTestFeatures | None = None,
             kept: list[torch.Tensor] | None = None) -> float:
    """Top-1 accuracy (%) on the test split, per image (per rotated image for the pretext);
    `kept`, if given, receives this rank's predicted classes batch by batch."""
    correct = torch.zeros((), device=runtime.device, dtype=torch.long)
    total = 0
    for predicted, y in test_predictions(task, data, runtime, frozen_features):
        correct += (predicted == y).sum()
        total += len(y)
        if kept is not None:
            kept.append(predicted)
    correct, total = runtime.world.sum(correct, torch.tensor(total, device=runtime.device))
    return 100.0 * correct.item() / total.item()


@torch.no_grad()
def test_set_predictions(task: Task, device_data: DeviceData, runtime: Runtime) -> torch.Tensor:
    """The predicted class of every test image, in the data set's test order (int64, on the
    CPU), by one pass over the whole test set on every rank (nothing to gather): what
    `fit` returns for a classifier when no epoch's evaluation kept them."""
    task.model.eval()
    if task.frozen is not None:
        task.frozen.eval()
    size, predicted = runtime.eval_batch, []
    for start in range(0, len(device_data.test_labels), size):
        x, _ = make_inputs(task, device_data.test_images[start:start + size],
                           device_data.test_labels[start:start + size], device_data, runtime)
        with runtime.autocast():
            predicted.append(forward(task, x).argmax(1).cpu())
    return torch.cat(predicted)


def class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Top-1 accuracy (%) per class (class index order; NaN for a class with no test image)."""
    labels = labels.cpu()
    correct = torch.bincount(labels[predicted == labels], minlength=classes)
    total = torch.bincount(labels, minlength=classes)
    return (100.0 * correct.double() / total.double()).tolist()


def make_optimizer(model: nn.Module, optim: OptimConfig, lr_scales=()):
    """SGD over `model`'s trainable parameters; those of a submodule in `lr_scales` form
    their own group at lr × its factor (the step schedule scales every group alike)."""
    scaled = {id(p): factor for module, factor in lr_scales for p in module.parameters()}
    groups: dict[float, list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(scaled.get(id(p), 1.0), []).append(p)
    # the unscaled group first: param_groups[0]["lr"] is the schedule's lr, the one logged
    params = [{"params": groups[factor], "lr": optim.lr * factor}
              for factor in sorted(groups, key=lambda factor: factor != 1.0)]
    optimizer = torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum,
                                nesterov=optim.nesterov, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, optim.milestones, gamma=optim.lr_decay)
    return optimizer, scheduler


@dataclass
class Fitted:
    history: list[dict]  # per epoch
    predictions: torch.Tensor | None  # a classifier's final predicted class per test image


def _wrapped(task: Task, runtime: Runtime) -> tuple[Task, Task]:
    """The task as trained (DDP, compiled) and as evaluated."""
    model, frozen = task.model, task.frozen
    trained = model
    if runtime.world.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # Gradients are averaged over ranks: the same step as one process on the global batch.
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
    compiled = Task(task.name, runtime.maybe_compile(trained),
                    runtime.maybe_compile(frozen) if frozen is not None else None,
                    task.rotations, task.arch)
    # DDP's forward is a collective; ranks evaluate different shards, so evaluate unwrapped.
    evaluated = Task(task.name, model, frozen, task.rotations) if runtime.world.enabled else compiled
    return compiled, evaluated


def fit(task: Task, data: ImageData, optim: OptimConfig, runtime: Runtime, *, out_dir: str | Path,
        config: dict, hooks: Hooks | None = None, train_indices: torch.Tensor | None = None,
        snapshot_every: int = 0, extra: dict | None = None, state: dict | None = None,
        eval_every: int = 1) -> Fitted:
    """Train `task` for `optim.epochs`, resuming from `state`: `out_dir/checkpoint.pt` as
    `checkpoint.open_for_resume` opened and checked it (None: start afresh). The caller has
    validated the run (`experiments.execute`: batch size, world, checkpoint).

    A checkpoint is written atomically after every epoch (and kept as `snapshot-epochNNN.pt`
    every `snapshot_every` epochs). The test set is scored after the epochs `_scored` names
    (`eval_every`: 1, every epoch); the others' history has no test_acc. Returns the
    per-epoch history and, for a classifier, the final predictions: the last epoch's
    evaluation kept them (one process), else one pass.
    """
    hooks = hooks or Hooks()
    out_dir = Path(out_dir)
    ckpt_path = files.checkpoint_in(out_dir)
    runtime.prepare_module(task.model)
    if task.frozen is not None:
        runtime.prepare_module(task.frozen)
        task.frozen.requires_grad_(False)
    optimizer, scheduler = make_optimizer(task.model, optim, task.lr_scales)
    start_epoch, history, saved_extra = checkpoint.restore(state, model=task.model,
                                                           optimizer=optimizer, scheduler=scheduler)
    extra = {**saved_extra, **(extra or {})}
    compiled, evaluated = _wrapped(task, runtime)
    keep = task.rotations is None and not runtime.world.enabled  # a classifier's predictions
    kept: list[torch.Tensor] = []
    device_data = DeviceData(data, runtime.device)
    frozen_features = FrozenTestFeatures()
    pool = train_indices if train_indices is not None else torch.arange(len(data.train_labels))
    samples = optim.epoch_samples or len(pool)
    if hooks.on_start:
        hooks.on_start(start_epoch, optim.epochs, max(1, samples // optim.batch_size))
    save = functools.partial(checkpoint.save_checkpoint, ckpt_path, task=task.name, arch=task.arch,
                             config=config, model=task.model, optimizer=optimizer, scheduler=scheduler,
                             history=history, extra=extra)
    if runtime.world.is_main:  # a kill between checkpoint and snapshot lost the snapshot
        _keep_snapshot(out_dir, start_epoch, snapshot_every, replace=False)
    for epoch in range(start_epoch, optim.epochs):
        lr = optimizer.param_groups[0]["lr"]
        metrics = train_one_epoch(compiled, device_data, optimizer, runtime, epoch, optim, pool, hooks)
        scheduler.step()
        metrics.update(epoch=epoch + 1, lr=lr)
        if _scored(epoch + 1, optim.epochs, eval_every, snapshot_every):
            eval_start, kept = time.perf_counter(), []
            test_acc = evaluate(evaluated, device_data, runtime, frozen_features,  # ends in a host sync
                                kept if keep else None)
            metrics.update(test_acc=test_acc, eval_seconds=time.perf_counter() - eval_start)
        check_finite(metrics)
        history.append(metrics)
        if runtime.world.is_main:  # one writer; every rank resumes from the same file
            _record_epoch(metrics, hooks, save, out_dir, snapshot_every)
        runtime.world.barrier()
    if task.rotations is not None:
        return Fitted(history, None)
    predictions = torch.cat(kept).cpu() if kept else test_set_predictions(evaluated, device_data, runtime)
    return Fitted(history, predictions)


def _record_epoch(metrics: dict, hooks: Hooks, save: Callable[..., None], out_dir: Path,
                  snapshot_every: int) -> None:
    """Metrics first (the epoch-end hook logs them), then the checkpoint, then the snapshot:
    the checkpoint says the epoch is done, so what it records must already be logged, and a
    resumed run re-logs or re-copies only what a kill cut off."""
    epoch = metrics["epoch"]
    if hooks.on_epoch_end:
        hooks.on_epoch_end(metrics)
    crash_point("metrics", epoch)
    save(epoch=epoch)
    crash_point("checkpoint", epoch)
    _keep_snapshot(out_dir, epoch, snapshot_every, replace=True)
    crash_point("snapshot", epoch)


def check_finite(metrics: dict) -> None:
    """Stop a diverged run (NaN/inf loss) instead of recording it FINISHED at chance."""
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise NonFiniteError(f"epoch {metrics['epoch']}: {', '.join(f'{k}={metrics[k]}' for k in bad)}"
                             " is not finite (the run diverged; lower the learning rate)")


def _keep_snapshot(out_dir: Path, epoch: int, snapshot_every: int, *, replace: bool) -> None:
    """Copy the checkpoint of a snapshot epoch to `snapshot-epochNNN.pt` (if `replace` is
    False, only where it is missing)."""
    snapshot = out_dir / files.snapshot_name(epoch)
    due = snapshot_every and epoch and epoch % snapshot_every == 0
    if due and (replace or not snapshot.exists()):
        ckpt_path = files.checkpoint_in(out_dir)
        files.atomic_write(snapshot, lambda tmp: shutil.copyfile(ckpt_path, tmp))


class NonFiniteError(RotnetError):
    """A loss or metric became NaN/inf: the run is marked FAILED with this one line."""


class StopRun(Exception):
    """Raised by a hook to stop a run early on purpose (e.g. a pruned tuning trial):
    `experiments.execute` marks its MLflow run KILLED, not FAILED, and writes no metrics.json."""
