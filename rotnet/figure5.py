"""Figure 5's runs: the semi-supervised sweep (Figure 5b) and the probes on pretraining
snapshots (Figure 5a). Each run inside is an ordinary experiment run, tagged `figure5`
(semisup | snapshots) so the report keeps it out of the tables."""

from __future__ import annotations

from pathlib import Path

from rotnet import checkpoint, files
from rotnet.config import Config
from rotnet.data import ImageData
from rotnet.engine import Hooks
from rotnet.errors import RotnetError
from rotnet.registry import BASELINE, probe_blocks
from rotnet.experiments import (Backbone, RunResult, load_backbone, load_dataset, output_root, probe,
                                supervised)
from rotnet.subsets import (covers_training_set, label_subset, read_label_subset, subset_path,
                            write_label_subset)
from rotnet.run_groups import RunGroup
from rotnet.tracking import Tracker


def figure_group(figure: str, config: Config, backbone: Backbone | None) -> RunGroup:
    """The parent run of one figure's runs on one backbone (its pretraining run), protocol and
    seed: every stage and rerun of the figure nests its runs there."""
    lineage = backbone.lineage if backbone else {}
    pretrain_run = lineage.get("pretrain_run_id") or "none"
    variant = lineage.get("variant", "none")
    parts = [figure, config.data.dataset, config.profile, f"s{config.runtime.seed}", variant]
    return RunGroup(key=":".join(parts + [pretrain_run]), name="-".join(parts + [pretrain_run[:6]]),
                 tags={"dataset": config.data.dataset, "profile": config.profile,
                       "variant": variant, "group_of": figure})


def _nested(tracker: Tracker | None, group: RunGroup) -> Tracker:
    return (tracker if tracker is not None else Tracker()).nest_under(group)


def write_subsets(config: Config, directory: str | Path,
                  data: ImageData | None = None) -> list[Path]:
    """The label-subset index files for every size in `config.semisup.per_class`."""
    data = data or load_dataset(config)
    for k in config.semisup.per_class:  # every size is checked before any file is written
        label_subset(data.train_labels, k)
    return [write_label_subset(directory, data.train_labels, k, data.name)
            for k in config.semisup.per_class]


def semisup_methods(per_class: int, subsets_dir: str | Path) -> tuple[str, ...]:
    """The Figure 5b runs to train for `per_class`: both methods, except that a supervised NIN
    on the whole training set (K = 5000 on CIFAR-10) is the Table 3 supervised run, which the
    report reuses rather than training it twice."""
    if covers_training_set(subset_path(subsets_dir, per_class)):
        return ("conv",)
    return ("conv", "supervised")


def semisup_run(config: Config, method: str, per_class: int, subsets_dir: str | Path, *,
                backbone: Backbone | None = None, out_dir: str | Path | None = None,
                tracker: Tracker | None = None, hooks: Hooks | None = None,
                data: ImageData | None = None) -> RunResult:
    """One cell of Figure 5b: `method` is "conv" (conv probe on frozen block 2 of
    the RotNet) or "supervised" (a NIN trained on the subset alone)."""
    data = data or load_dataset(config)
    path = subset_path(subsets_dir, per_class)
    indices = read_label_subset(path, data.train_labels)
    tags = {"figure5": "semisup", "subset_per_class": per_class, "subset_size": len(indices),
            "subset_file_sha256": checkpoint.file_sha256(path)}
    root = Path(out_dir) if out_dir else output_root(config) / "semisup"
    optim = config.semisup_optim(method)
    tracker = _nested(tracker, figure_group("figure5b", config, backbone))
    if method == "conv":
        if backbone is None:
            raise RotnetError("the conv method needs a pretrained checkpoint")
        return probe(config, backbone, head="conv", block=2, optim=optim, train_indices=indices,
                     subset_per_class=per_class, out_dir=root / f"conv-k{per_class}", extra_tags=tags, tracker=tracker,
                     hooks=hooks, data=data)
    if method == "supervised":
        return supervised(config, optim=optim, train_indices=indices, subset_per_class=per_class,
                          out_dir=root / f"supervised-k{per_class}", extra_tags=tags,
                          tracker=tracker, hooks=hooks, data=data)
    raise RotnetError(f"unknown semi-supervised method {method!r}; choose conv or supervised")


def snapshot_backbones(pretrain_dir: str | Path) -> list[Backbone]:
    """The folder's snapshots as backbones, in epoch order: every one read and checked once,
    before the first probe runs, so a damaged one is refused before anything is written."""
    found = sorted(Path(pretrain_dir).glob(files.SNAPSHOT_PATTERN))
    if not found:
        raise RotnetError(f"no pretraining snapshots ({files.snapshot_name(1)}, ...) in "
                          f"{pretrain_dir}; pretrain with pretrain.snapshot_every > 0")
    return [load_backbone(snapshot) for snapshot in found]


def probed_snapshot_epochs(config: Config, epochs: list[int]) -> list[int]:
    """The snapshot epochs Figure 5a probes (every `snapshots.every`-th) that no other stage
    probes: the last one is the fully pretrained baseline, whose probe on that block is
    Table 1's (`probe@b4-r4`, the same fingerprint), trained once and reused by the report."""
    final = config.pretrain.optim.epochs if config.snapshots.block in probe_blocks(BASELINE) else None
    return [epoch for epoch in epochs if epoch % config.snapshots.every == 0 and epoch != final]


def snapshots_to_probe(config: Config, pretrain_dir: str | Path) -> list[Backbone]:
    """The snapshots of `probed_snapshot_epochs`, as backbones (all checked first)."""
    snapshots = snapshot_backbones(pretrain_dir)
    keep = set(probed_snapshot_epochs(config, [s.lineage["pretrain_epoch"] for s in snapshots]))
    return [s for s in snapshots if s.lineage["pretrain_epoch"] in keep]


def snapshot_probe(config: Config, snapshot: Backbone, *, out_dir: str | Path | None = None,
                   tracker: Tracker | None = None, hooks: Hooks | None = None,
                   data: ImageData | None = None) -> RunResult:
    """One point of Figure 5a: a non-linear probe on a pretraining snapshot, tagged with
    the snapshot's epoch and its rotation accuracy on the test set."""
    epoch = snapshot.lineage["pretrain_epoch"]
    root = Path(out_dir) if out_dir else output_root(config) / "snapshots" / snapshot.lineage["variant"]
    tracker = _nested(tracker, figure_group("figure5a", config, snapshot))
    return probe(config, snapshot, head="nonlinear", block=config.snapshots.block,
                 out_dir=root / f"epoch{epoch:03d}",
                 extra_tags={"figure5": "snapshots", "snapshot_epoch": epoch,
                             "snapshot_rotation_acc": f"{snapshot.rotation_acc:.4f}"},
                 tracker=tracker, hooks=hooks, data=data)
