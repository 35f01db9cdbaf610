"""DVC stage `probe@<variant>-<seed>`: the non-linear probe on every block the registry
probes of that variant (Tables 1 and 2), one MLflow run per block, with one seed of `seeds`.
dvc.yaml passes the paths it declares: the pretraining folder, the run folder, the metrics
folder and the plot folder (block<N>.json, block<N>.csv)."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from pathlib import Path

from rotnet import experiments, files
from rotnet.progress import progress_hooks
from rotnet.registry import probe_blocks, stage_name
from rotnet.stage_io import (run_stage, stage_config, stage_outputs, stage_tracker, write_history_csv,
                             write_run_metrics)


def main(variant, seed, pretrain_dir, out, metrics, plots):
    config = stage_config(seed)
    stage = stage_name("probe", variant, seed)
    tracker, data = stage_tracker(stage), experiments.load_dataset(config)  # once for every block
    backbone = experiments.load_backbone(files.checkpoint_in(pretrain_dir))
    results = {}
    with stage_outputs(out) as out_dir:
        for block in probe_blocks(variant):
            with progress_hooks(f"{stage} block{block}") as hooks:
                results[block] = experiments.probe(
                    config, backbone, head="nonlinear", block=block, out_dir=out_dir / f"block{block}",
                    hooks=hooks, tracker=tracker, data=data)
    for block, result in results.items():
        write_run_metrics(Path(metrics) / f"block{block}.json", result)
        write_history_csv(Path(plots) / f"block{block}.csv", result.history)


if __name__ == "__main__":
    run_stage(main)
