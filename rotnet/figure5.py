"""Figure 5's runs: the semi-supervised sweep (Figure 5b) and the probes on pretraining
snapshots (Figure 5a). Each run inside is an ordinary experiment run, tagged `figure5`
(semisup | snapshots) so the report keeps it out of the tables."""

from __future__ import annotations

from pathlib import Path

from rotnet import checkpoint
from rotnet.config import Config
from rotnet.engine import Hooks
from rotnet.errors import RotnetError
from rotnet.registry import BASELINE, probe_blocks
from rotnet.experiments import (Backbone, RunResult, load_backbone, load_dataset, output_root, probe,
                                supervised)
from rotnet.subsets import covers_training_set, read_label_subset, subset_path, write_label_subset
from rotnet.tracking import Study, Tracker


def figure_study(figure: str, config: Config, backbone: Backbone | None) -> Study:
    """The parent run of one figure's runs on one backbone (its pretraining run), protocol and
    seed: every stage and rerun of the figure nests its runs there."""
    lineage = backbone.lineage if backbone else {}
    pretrain_run = lineage.get("pretrain_run_id") or "none"
    variant = lineage.get("variant", "none")
    parts = [figure, config.data.dataset, config.profile, f"s{config.runtime.seed}", variant]
    return Study(key=":".join(parts + [pretrain_run]), name="-".join(parts + [pretrain_run[:6]]),
                 tags={"dataset": config.data.dataset, "profile": config.profile,
                       "variant": variant, "study_of": figure})


def _nested(tracker: Tracker | None, study: Study) -> Tracker:
    return (tracker if tracker is not None else Tracker()).nest_under(study)


def write_subsets(config: Config, directory: str | Path) -> list[Path]:
    """The label-subset index files for every size in `config.semisup.per_class`."""
    data = load_dataset(config)
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
                tracker: Tracker | None = None, hooks: Hooks | None = None) -> RunResult:
    """One cell of Figure 5b: `method` is "conv" (conv probe on frozen block 2 of
    the RotNet) or "supervised" (a NIN trained on the subset alone)."""
    data = load_dataset(config)
    path = subset_path(subsets_dir, per_class)
    indices = read_label_subset(path, data.train_labels)
    tags = {"figure5": "semisup", "subset_per_class": per_class, "subset_size": len(indices),
            "subset_file_sha256": checkpoint.file_sha256(path)}
    root = Path(out_dir) if out_dir else output_root(config) / "semisup"
    optim = config.semisup_optim(method)
    tracker = _nested(tracker, figure_study("figure5b", config, backbone))
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


def snapshots_to_probe(config: Config, pretrain_dir: str | Path) -> list[Path]:
    """The snapshots Figure 5a probes (every `snapshots.every`-th epoch) that no other stage
    probes: the last one is the fully pretrained baseline, whose probe on that block is
    Table 1's (`probe@b4-r4`, the same fingerprint), trained once and reused by the report."""
    final = config.pretrain.optim.epochs if config.snapshots.block in probe_blocks(BASELINE) else None
    return [path for path in snapshot_files(pretrain_dir)
            if (epoch := snapshot_epoch(path)) % config.snapshots.every == 0 and epoch != final]


def snapshot_epoch(path: Path) -> int:
    return int(path.stem.removeprefix("snapshot-epoch"))


def snapshot_files(pretrain_dir: str | Path) -> list[Path]:
    files = sorted(Path(pretrain_dir).glob("snapshot-epoch*.pt"))
    if not files:
        raise RotnetError(f"no pretraining snapshots (snapshot-epochNNN.pt) in {pretrain_dir}; "
                          "pretrain with pretrain.snapshot_every > 0")
    return files


def snapshot_probe(config: Config, snapshot: str | Path, *, out_dir: str | Path | None = None,
                   tracker: Tracker | None = None, hooks: Hooks | None = None) -> RunResult:
    """One point of Figure 5a: a non-linear probe on a pretraining snapshot, tagged with
    the snapshot's epoch and its rotation accuracy on the test set."""
    state = checkpoint.load_checkpoint(snapshot, task="pretrain")
    epoch = state["epoch"]
    rotation_acc = state["history"][-1]["test_acc"]
    backbone = load_backbone(snapshot)
    block = config.snapshots.block
    root = Path(out_dir) if out_dir else output_root(config) / "snapshots" / backbone.lineage["variant"]
    tracker = _nested(tracker, figure_study("figure5a", config, backbone))
    return probe(config, backbone, head="nonlinear", block=block, out_dir=root / f"epoch{epoch:03d}",
                 extra_tags={"figure5": "snapshots", "snapshot_epoch": epoch,
                             "snapshot_rotation_acc": f"{rotation_acc:.4f}"},
                 tracker=tracker, hooks=hooks)
