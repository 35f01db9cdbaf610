"""DVC stage `snapshots@<seed>` (one seed of `seeds`): a non-linear probe on every sampled
pretraining snapshot of the 4-block RotNet (Figure 5a) but the last, whose probe is Table
1's. dvc.yaml passes the paths it declares: the pretraining folder, the run folder, the
metrics folder."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from pathlib import Path

from rotnet import experiments, figure5
from rotnet.progress import progress_hooks
from rotnet.registry import stage_name
from rotnet.stage_io import (run_stage, stage_config, stage_outputs, stage_tracker,
                             write_run_metrics)


def main(seed, pretrain_dir, out, metrics):
    pretrain_dir = Path(pretrain_dir)
    config = stage_config(seed)
    stage = stage_name("snapshots", seed)
    tracker = stage_tracker(stage)
    results = {}
    data = experiments.load_dataset(config)  # once for every snapshot
    with stage_outputs(out) as out_dir:
        for snapshot in figure5.snapshots_to_probe(config, pretrain_dir):
            epoch = snapshot.lineage["pretrain_epoch"]
            with progress_hooks(f"{stage} epoch {epoch}") as hooks:
                results[f"epoch{epoch:03d}"] = figure5.snapshot_probe(
                    config, snapshot, out_dir=out_dir / pretrain_dir.name, tracker=tracker,
                    hooks=hooks, data=data)
    for name, result in results.items():
        write_run_metrics(Path(metrics) / f"{name}.json", result)


if __name__ == "__main__":
    run_stage(main)
