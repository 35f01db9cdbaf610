"""DVC stage `probe@<variant>-block<N>`: the non-linear probe on block N (Tables 1 and 2).
dvc.yaml passes the paths it declares: the pretraining folder, the run folder, the metrics
file, the plot file."""

from pathlib import Path

from rotnet import experiments
from rotnet.progress import progress_hooks
from rotnet.stage_io import (run_stage, stage_config, stage_outputs, stage_tracker, write_history_csv,
                             write_run_metrics)


def main(variant, block, pretrain_dir, out, metrics, plot):
    name = f"{variant}-block{block}"
    backbone = experiments.load_backbone(Path(pretrain_dir) / "checkpoint.pt")
    with stage_outputs(out) as out_dir, progress_hooks(f"probe@{name}") as hooks:
        result = experiments.probe(stage_config(), backbone, head="nonlinear", block=int(block),
                                   out_dir=out_dir, hooks=hooks,
                                   tracker=stage_tracker(f"probe@{name}"))
    write_run_metrics(metrics, result)
    write_history_csv(plot, result.history)


if __name__ == "__main__":
    run_stage(main)
