"""DVC stage `pretrain@<variant>-<seed>`: RotNet pretraining of one variant (e.g. b4-r8)
with one seed of `seeds`. dvc.yaml passes the paths it declares: the run folder, the
metrics file, the plot file."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from rotnet import experiments
from rotnet.progress import progress_hooks
from rotnet.registry import stage_name
from rotnet.stage_io import (run_stage, stage_config, stage_outputs, stage_tracker,
                             write_history_csv, write_run_metrics)


def main(variant, seed, out, metrics, plot):
    config = stage_config(seed).with_variant(variant)
    stage = stage_name("pretrain", variant, seed)
    with stage_outputs(out) as out_dir, progress_hooks(stage) as hooks:
        result = experiments.pretrain(config, out_dir, hooks=hooks, tracker=stage_tracker(stage))
    write_run_metrics(metrics, result)
    write_history_csv(plot, result.history)


if __name__ == "__main__":
    run_stage(main)
