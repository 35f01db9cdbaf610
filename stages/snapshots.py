"""DVC stage `snapshots`: a non-linear probe on every pretraining snapshot of the 4-block
RotNet (Figure 5a)."""

from rotnet import studies
from rotnet.pipeline import (BASELINE_VARIANT, run_stage, stage_config, stage_outputs, stage_tracker,
                             write_run_metrics)
from rotnet.progress import progress_hooks


def main():
    config = stage_config()
    tracker = stage_tracker("snapshots")
    results = {}
    with stage_outputs("runs/snapshots") as out_dir:
        for snapshot in studies.snapshot_files(f"runs/pretrain/{BASELINE_VARIANT}"):
            epoch = int(snapshot.stem.removeprefix("snapshot-epoch"))
            if epoch % config.snapshots.every:
                continue  # snapshots are kept more often than Figure 5a samples them
            with progress_hooks(f"snapshots {snapshot.stem}") as hooks:
                results[f"epoch{epoch:03d}"] = studies.snapshot_probe(
                    config, snapshot, out_dir=out_dir / BASELINE_VARIANT, tracker=tracker,
                    hooks=hooks)
    for name, result in results.items():
        write_run_metrics(f"metrics/snapshots/{name}.json", result)


if __name__ == "__main__":
    run_stage(main)
