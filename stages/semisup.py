"""DVC stage `semisup@<K>-<seed>` (one seed of `seeds`): with K labelled images per class, the conv probe on the
4-block RotNet's block 2 vs a supervised NIN trained on those images alone (Figure 5b).
Where the subset is the whole training set the supervised point is `table3@supervised`.
dvc.yaml passes the paths it declares: the subsets folder, the pretraining folder, the run
folder, the metrics folder."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from pathlib import Path

from rotnet import experiments, figure5, files
from rotnet.progress import progress_hooks
from rotnet.registry import stage_name
from rotnet.stage_io import (run_stage, stage_config, stage_outputs, stage_tracker,
                             write_run_metrics)


def main(per_class, seed, subsets_dir, pretrain_dir, out, metrics):
    k = int(per_class)
    config = stage_config(seed)
    stage = stage_name("semisup", k, seed)
    tracker = stage_tracker(stage)
    backbone = experiments.load_backbone(files.checkpoint_in(pretrain_dir))
    data = experiments.load_dataset(config)  # once for both methods
    results = {}
    with stage_outputs(out) as out_dir:
        for method in figure5.semisup_methods(k, subsets_dir):
            with progress_hooks(f"{stage} {method}") as hooks:
                results[method] = figure5.semisup_run(config, method, k, subsets_dir, data=data,
                                                      backbone=backbone, out_dir=out_dir,
                                                      tracker=tracker, hooks=hooks)
    for method, result in results.items():
        write_run_metrics(Path(metrics) / f"{method}.json", result)


if __name__ == "__main__":
    run_stage(main)
