"""DVC stage `snapshots`: a non-linear probe on every pretraining snapshot of the 4-block
RotNet (Figure 5a)."""

from rotnet import studies
from rotnet.pipeline import BASELINE_VARIANT, run_stage, stage_config, stage_tracker, write_run_metrics
from rotnet.progress import progress_hooks


def main():
    config = stage_config()
    tracker = stage_tracker("snapshots")
    for snapshot in studies.snapshot_files(f"runs/pretrain/{BASELINE_VARIANT}"):
        epoch = int(snapshot.stem.removeprefix("snapshot-epoch"))
        if epoch % config.snapshots.every:
            continue  # snapshots are kept more often than Figure 5a samples them
        with progress_hooks(f"snapshots {snapshot.stem}") as hooks:
            result = studies.snapshot_probe(config, snapshot, tracker=tracker, hooks=hooks,
                                            out_dir=f"runs/snapshots/{BASELINE_VARIANT}")
        write_run_metrics(f"metrics/snapshots/epoch{epoch:03d}.json", result)


if __name__ == "__main__":
    run_stage(main)
