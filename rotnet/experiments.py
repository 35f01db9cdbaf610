"""One function per task — the only orchestration in the project.

Each composes data + task + the one training loop + checkpointing + tracking from a
`Config`. The CLI and the DVC stage scripts both call these functions, so they cannot
drift apart. Bad input is rejected (as `RotnetError`) before any MLflow run or output
file exists; a run that fails after it started is marked FAILED and writes no
`metrics.json`, the file that says a run finished.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rotnet import checkpoint, files, outdir, protocol
from rotnet.augment import normalize
from rotnet.config import Config, OptimConfig
from rotnet.data import ImageData, load_data, test_set_digest
from rotnet.distributed import check_batch, join
from rotnet.engine import Hooks, StopRun, Task, class_accuracy, fit, make_optimizer
from rotnet.errors import RotnetError
from rotnet.faults import crash_point
from rotnet.backbones import Backbone, check_backbone, load_backbone, random_backbone  # noqa: F401
from rotnet.models import NINBackbone, NINClassifier, block_output_shape, conv_probe, nonlinear_probe
from rotnet.registry import HEADS, variant_name
from rotnet.rotations import rotation_set
from rotnet.runtime import Runtime
from rotnet.tracked_run import TrackedRun
from rotnet.tracking import ATTEMPT_TAG, NullTracker, Tracker, as_params, class_metric

ATTEMPT_PREFIX = "attempt:"  # files.RUN_ID before the run exists: the token its ATTEMPT_TAG holds


@dataclass
class RunResult:
    run_id: str
    out_dir: Path
    metrics: dict  # test_acc (final epoch), best_test_acc, epochs, checkpoint_sha256
    history: list[dict]


def output_root(config: Config) -> Path:
    return Path("outputs") / f"{config.data.dataset}-{config.profile}"


def load_dataset(config: Config) -> ImageData:
    d = config.data
    return load_data(d.dataset, d.root, seed=d.seed, train_size=d.train_size,
                     test_size=d.test_size, download=d.download)


def unique_run_name(base: str, tags: dict) -> str:
    """What tells sibling runs apart first (the MLflow UI truncates names): the snapshot
    epoch or label subset of a Figure 5 run, then `base` (the backbone's variant or random
    backbone, block, method), then the
    seed, e.g. `k100-b4-r4-B2-conv-s0`; `Tracker.start` appends the run id's first 8
    characters, which the reports cite."""
    parts = []
    if "snapshot_epoch" in tags:
        parts.append(f"ep{int(tags['snapshot_epoch']):03d}")
    if "subset_per_class" in tags:
        parts.append(f"k{tags['subset_per_class']}")
    return "-".join([*parts, base, f"s{tags['seed']}"])


def _seeded(seed: int):
    torch.manual_seed(seed)


def execute(task: Task, data: ImageData, optim: OptimConfig, config: Config, *, out_dir: str | Path,
            run_name: str, tags: dict, model: dict, tracker: Tracker | None = None,
            hooks: Hooks | None = None, train_indices: torch.Tensor | None = None,
            snapshot_every: int = 0, eval_every: int = 1) -> RunResult:
    """Train `task` as a tracked, resumable run in `out_dir`; `model` names what it trains
    for the run's protocol fingerprint (see `rotnet.protocol`).

    Everything that can be refused (device, checkpoint, the folder itself and its lock, then
    the MLflow store) is checked before metrics.json is removed or a run is opened or
    reopened, so a failing rerun leaves a finished result as it was."""
    runtime = Runtime(config.runtime)
    check_batch(optim.batch_size, runtime.world)  # before joining the process group
    join(runtime.world, runtime.device.type)  # torchrun's process group, joined here explicitly
    tracker = tracker if tracker is not None else Tracker()
    if not runtime.world.is_main:  # under torchrun only rank 0 logs and writes results
        tracker, hooks = NullTracker(), None
    out_dir = Path(out_dir)
    state = _open_checkpoint(out_dir, task, optim, config)  # refused before anything is logged
    with outdir.claim(out_dir) if runtime.world.is_main else contextlib.nullcontext():
        tracker.connect()  # a new store is created only once the folder is this run's
        (out_dir / files.METRICS).unlink(missing_ok=True)
        resolved = runtime.describe()  # what ran, never "auto": tagged resolved.<key>
        tags = {k: str(v) for k, v in {"task": task.name, "dataset": config.data.dataset,
                                       "profile": config.profile, "seed": config.runtime.seed,
                                       "fingerprint": protocol.fingerprint(config, optim, model,
                                                                       runtime.precision),
                                       "test_images": len(data.test_labels),  # its standard error's n
                                       **{f"resolved.{k}": v for k, v in resolved.items()},
                                       **tags}.items()}
        user_hooks, run = hooks or Hooks(), None

        def on_epoch_end(metrics: dict) -> None:
            run.log_epoch(metrics)  # fit starts after the run is open
            if user_hooks.on_epoch_end:
                user_hooks.on_epoch_end(metrics)

        try:
            run = _open_run(tracker, out_dir, unique_run_name(run_name, tags),
                            as_params(protocol.run_params(config, optim, model)), tags, state,
                            runtime.world.is_main)
            log_training_data(run, data, config, train_indices)
            fitted = fit(task, data, optim, runtime, out_dir=out_dir,
                         config=config.to_dict(), train_indices=train_indices,
                         snapshot_every=snapshot_every, extra={"run_id": run.run_id, "tags": tags},
                         state=state, eval_every=eval_every,
                         hooks=Hooks(user_hooks.on_start, user_hooks.on_step, on_epoch_end))
            history = fitted.history
            per_class = _save_predictions(fitted.predictions, data, run, out_dir,
                                          runtime.world.is_main)
            metrics = _finish(run, out_dir, history, resolved, tags, per_class,
                              runtime.world.is_main)
            if task.name == "pretrain":  # the backbone every probe reads, once, when final
                run.log_artifact(files.checkpoint_in(out_dir))
                log_network(run, task.model, data)
        except BaseException as err:
            if run is not None:
                run.finish("KILLED" if isinstance(err, (KeyboardInterrupt, StopRun)) else "FAILED")
            raise
        run.finish("FINISHED")
    return RunResult(run.run_id, out_dir, metrics, history)


def _open_checkpoint(out_dir: Path, task: Task, optim: OptimConfig, config: Config) -> dict | None:
    """The folder's checkpoint to resume from (None: none), refused if it is another task's,
    architecture's or settings', or if its content would not restore into `task`."""
    outdir.check_path(out_dir)  # before `exists()`, which raises on a name too long
    path = files.checkpoint_in(out_dir)
    state = checkpoint.open_for_resume(path, task=task.name, arch=task.arch,
                                       config=config.to_dict())
    if state is not None:
        optimizer, scheduler = make_optimizer(task.model, optim, task.lr_scales)  # thrown away
        checkpoint.check_restorable(state, model=task.model, optimizer=optimizer,
                                    scheduler=scheduler, path=path)
    return state


def _open_run(tracker: Tracker, out_dir: Path, run_name: str, params: dict, tags: dict,
              state: dict | None, is_main: bool) -> TrackedRun:
    """Reopen the checkpoint's run (re-logging epochs a kill kept out of MLflow), or start a
    new one. `mlflow-run-id` names the attempt before the run exists (`attempt:<token>`, the
    run's ATTEMPT_TAG) and the run once it does, so a rerun closes (KILLED) any run a kill
    left RUNNING before this folder's first checkpoint, however early the kill."""
    resume_id = state["extra"].get("run_id") if state else None
    record = out_dir / files.RUN_ID
    recorded = record.read_text().strip() if record.is_file() else ""
    if recorded.startswith(ATTEMPT_PREFIX):
        tracker.close_attempt(recorded[len(ATTEMPT_PREFIX):], keep=resume_id)
    elif recorded and recorded != resume_id:
        tracker.close_orphan(recorded)
    attempt = uuid.uuid4().hex
    if is_main:
        files.atomic_write_text(record, f"{ATTEMPT_PREFIX}{attempt}\n")
    run = tracker.start(run_name, params, {**tags, ATTEMPT_TAG: attempt}, resume_run_id=resume_id)
    if is_main and run.run_id:
        files.atomic_write_text(record, run.run_id + "\n")
    elif is_main:  # untracked: no run to record
        record.unlink(missing_ok=True)
    crash_point("started", 0)
    if state:
        run.log_missing_epochs(state["history"])
    return run


def recorded_run_id(out_dir: str | Path) -> str:
    """The MLflow run a run folder records (`files.RUN_ID`): "" for none, or while only its
    attempt is recorded (the run was not made yet)."""
    record = Path(out_dir) / files.RUN_ID
    recorded = record.read_text().strip() if record.is_file() else ""
    return "" if recorded.startswith(ATTEMPT_PREFIX) else recorded


def log_network(run: TrackedRun, model: nn.Module, data: ImageData) -> None:
    """The trained network as the run's MLflow model ("Logged models"), with the signature of
    a normalised test image: what `mlflow.pytorch.load_model` gives back. Once per run, after
    training."""
    example = normalize(data.test_images[:1], data.mean, data.std).numpy()
    run.log_model(model.cpu().float().eval(), example, name="rotnet")


def log_training_data(run: TrackedRun, data: ImageData, config: Config,
                      train_indices: torch.Tensor | None) -> None:
    """The images a run trains on (a label subset's only), with MLflow's digest of them."""
    images, labels, name = data.train_images, data.train_labels, data.name
    if train_indices is not None:
        images, labels, name = images[train_indices], labels[train_indices], f"{name}-subset"
    source = str(Path(config.data.root).resolve())
    run.log_dataset(name, images.numpy(), labels.numpy(), source=source, context="training")


def _save_predictions(predicted: torch.Tensor | None, data: ImageData, run: TrackedRun,
                      out_dir: Path, is_main: bool) -> dict[str, float]:
    """A classifier's final predictions, written to predictions.json and logged to its run;
    returns its test accuracy per class name (Table 9). Nothing for the pretext task."""
    if predicted is None:
        return {}
    if is_main:
        path = out_dir / files.PREDICTIONS
        files.atomic_write_text(path, json.dumps(
            {"test_set_sha256": test_set_digest(data), "labels": data.test_labels.tolist(),
             "predicted": predicted.tolist()}, separators=(",", ":")) + "\n")
        run.log_artifact(path)
    tested = torch.bincount(data.test_labels, minlength=data.num_classes).tolist()
    # A class without test images (a small test split) has no accuracy, not NaN.
    return {name: acc for name, acc, n in zip(
        data.classes, class_accuracy(predicted, data.test_labels, data.num_classes), tested) if n}


def _finish(run: TrackedRun, out_dir: Path, history: list[dict], resolved: dict, tags: dict,
            per_class: dict[str, float], is_main: bool) -> dict:
    """The final metrics: logged, tagged, and written to metrics.json (the finished mark)."""
    ckpt_path = files.checkpoint_in(out_dir)
    best = max(checkpoint.scored(history), key=lambda m: m["test_acc"])
    metrics = {"test_acc": history[-1]["test_acc"], "best_test_acc": best["test_acc"],
               "best_epoch": best["epoch"], "epochs": history[-1]["epoch"],
               "checkpoint_sha256": checkpoint.file_sha256(ckpt_path), "run_id": run.run_id}
    if per_class:
        metrics["test_acc_per_class"] = per_class
    text = metrics_json({**metrics, "runtime": resolved, "tags": tags})  # before anything is logged
    if per_class:
        run.log_metrics({class_metric(name): acc for name, acc in per_class.items()},
                        step=metrics["epochs"])
    run.log_metrics({"best_test_acc": best["test_acc"]}, step=best["epoch"])
    run.set_tags({"checkpoint_path": str(ckpt_path.resolve()),
                  "checkpoint_sha256": metrics["checkpoint_sha256"]})
    if is_main:
        files.atomic_write_text(out_dir / files.METRICS, text)
    return metrics


def metrics_json(values: dict) -> str:
    """metrics.json's text: always valid JSON, so a NaN or infinite value is refused (a
    one-line RotnetError, the run FAILED), never written as a bare NaN."""
    try:
        return json.dumps(values, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError:
        raise RotnetError("a final metric is NaN or infinite; metrics.json not written") from None


def pretrain(config: Config, out_dir: str | Path | None = None, *, tracker: Tracker | None = None,
             hooks: Hooks | None = None, data: ImageData | None = None) -> RunResult:
    """RotNet pretraining: predict which of K rotations was applied."""
    p = config.pretrain
    rset = rotation_set(p.rotations)
    data = data or load_dataset(config)
    _seeded(config.runtime.seed)
    model = NINClassifier(p.blocks, len(rset), data.channels, p.width)
    arch = {"model": "rotnet", "blocks": p.blocks, "rotations": p.rotations, "width": p.width,
            "in_channels": data.channels}
    variant = variant_name(p.blocks, p.rotations)
    out_dir = out_dir or output_root(config) / "pretrain" / variant
    return execute(Task("pretrain", model, rotations=rset, arch=arch), data, p.optim, config,
                   out_dir=out_dir, run_name=f"{variant}-pretrain", hooks=hooks, tracker=tracker,
                   tags={"variant": variant, "blocks": p.blocks, "rotations": p.rotations,
                         "width": p.width}, model=protocol.rotnet_model(p),
                   snapshot_every=p.snapshot_every, eval_every=p.eval_every)


# ---- classifiers on a pretrained (or random) backbone ---------------------------------


def classifier_head(head: str, backbone: NINBackbone, block: int, in_channels: int,
                    num_classes: int, width: float, hidden: int = 200) -> nn.Module:
    if head == "nonlinear":
        c, h, w = block_output_shape(backbone, block, in_channels)
        return nonlinear_probe(c * h * w, num_classes, hidden)
    if head == "conv":
        return conv_probe(backbone.out_channels[block - 1], num_classes, width)
    raise RotnetError(f"unknown probe head {head!r}; choose {' or '.join(HEADS)}")


def probe(config: Config, backbone: Backbone, *, head: str = "nonlinear", block: int = 2,
          finetune: bool = False, optim: OptimConfig | None = None, out_dir: str | Path | None = None,
          train_indices: torch.Tensor | None = None, subset_per_class: int | None = None,
          extra_tags: dict | None = None, tracker: Tracker | None = None,
          hooks: Hooks | None = None, data: ImageData | None = None) -> RunResult:
    """A classifier on block `block` of `backbone`: frozen (a probe) or trained with it
    (on `train_indices` only, when given: the label subset of `subset_per_class` per class)."""
    if head not in HEADS:
        raise RotnetError(f"unknown probe head {head!r}; choose {' or '.join(HEADS)}")
    data = data or load_dataset(config)
    check_backbone(backbone, channels=data.channels, block=block)
    _seeded(config.runtime.seed)
    width = backbone.lineage["width"]
    classifier = classifier_head(head, backbone.module, block, data.channels, data.num_classes,
                                 width, config.probe.hidden)
    trunk = backbone.module.truncated(block)
    if finetune:
        task = Task("finetune", nn.Sequential(trunk, classifier),
                    lr_scales=[(trunk, config.finetune.backbone_lr_scale)])
        optim = optim or config.finetune.optim
    else:
        task = Task("probe", classifier, frozen=trunk)
        optim = optim or (config.conv_probe.optim if head == "conv" else config.probe.optim)
    task.arch = {"model": f"{head}-probe", "block": block, "finetune": finetune,
                 "backbone_sha256": backbone.lineage["pretrain_checkpoint_sha256"],
                 "num_classes": data.num_classes}
    method = f"{head}{'-finetuned' if finetune else ''}"
    out_dir = out_dir or output_root(config) / "probe" / backbone.label / f"{method}-block{block}"
    tags = {**{k: v for k, v in backbone.lineage.items()}, "head": head, "block": block,
            "finetune": finetune, "method": method, **(extra_tags or {})}
    model = protocol.classifier_model(head, block, finetune, config.probe.hidden, backbone.protocol,
                                      subset_per_class, config.finetune.backbone_lr_scale)
    return execute(task, data, optim, config, out_dir=out_dir, tracker=tracker, hooks=hooks,
                   run_name=f"{backbone.label}-B{block}-{method}", tags=tags, model=model,
                   train_indices=train_indices)


def supervised(config: Config, *, out_dir: str | Path | None = None, optim: OptimConfig | None = None,
               train_indices: torch.Tensor | None = None, subset_per_class: int | None = None,
               extra_tags: dict | None = None, tracker: Tracker | None = None,
               hooks: Hooks | None = None, data: ImageData | None = None) -> RunResult:
    """The supervised NIN baseline (3 blocks by default, the pretraining's width), on
    `train_indices` only when given (the label subset of `subset_per_class` per class)."""
    data = data or load_dataset(config)
    blocks, width = config.supervised.blocks, config.pretrain.width
    _seeded(config.runtime.seed)
    model = NINClassifier(blocks, data.num_classes, data.channels, width)
    arch = {"model": "supervised-nin", "blocks": blocks, "width": width,
            "in_channels": data.channels, "num_classes": data.num_classes}
    out_dir = out_dir or output_root(config) / "supervised" / f"nin-b{blocks}"
    # The report places a run on the whole training set at its images per class in Figure 5b.
    train_images = len(train_indices) if train_indices is not None else len(data.train_labels)
    tags = {"method": "supervised", "blocks": blocks, "width": width,
            "train_images": train_images, "num_classes": data.num_classes, **(extra_tags or {})}
    return execute(Task("supervised", model, arch=arch), data, optim or config.supervised.optim,
                   config, out_dir=out_dir, run_name=f"supervised-nin-b{blocks}", tags=tags,
                   model=protocol.supervised_model(blocks, width, subset_per_class),
                   train_indices=train_indices, tracker=tracker, hooks=hooks)


def read_result(out_dir: str | Path) -> dict:
    """The metrics.json of a finished run."""
    path = Path(out_dir) / files.METRICS
    if not path.is_file():
        raise RotnetError(f"no finished run in {out_dir} (missing {files.METRICS})")
    return json.loads(path.read_text())


__all__ = ["Backbone", "NullTracker", "RunResult", "check_backbone", "execute", "load_backbone",
           "load_dataset", "output_root", "pretrain", "probe", "random_backbone", "read_result", "supervised"]
