"""DVC stage `table3@<method>-<seed>` (one seed of `seeds`): the Table 3 runs besides the
block-2 non-linear probe (which the `probe` stage makes): RotNet + conv, both fine-tuned
variants, the supervised NIN, and the conv probe on a random backbone: with BatchNorm
statistics calibrated on training images (`random-conv`) or as initialised
(`random-conv-initial-bn`).
dvc.yaml passes the paths it declares: the pretraining folder, the run folder, the metrics
file, the plot file."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from pathlib import Path

from rotnet import experiments, files
from rotnet.errors import RotnetError
from rotnet.progress import progress_hooks
from rotnet.registry import TABLE3_PROBES, stage_name
from rotnet.stage_io import (run_stage, stage_config, stage_outputs, stage_tracker,
                             write_history_csv, write_run_metrics)


def main(method, seed, pretrain_dir, out, metrics, plot):
    with stage_outputs(out) as out_dir, progress_hooks(stage_name("table3", method, seed)) as hooks:
        result = train(method, seed, Path(pretrain_dir), out_dir, hooks)
    write_run_metrics(metrics, result)
    write_history_csv(plot, result.history)


def train(method, seed, pretrain_dir, out_dir, hooks):
    config = stage_config(seed)
    tracker = stage_tracker(stage_name("table3", method, seed))
    if method == "supervised":
        return experiments.supervised(config, out_dir=out_dir, tracker=tracker, hooks=hooks)
    if method not in TABLE3_PROBES:
        raise RotnetError(f"unknown Table 3 method {method!r}; choose supervised or "
                          f"{', '.join(TABLE3_PROBES)}")
    head, finetune = TABLE3_PROBES[method]
    data = experiments.load_dataset(config)
    if method.startswith("random-conv"):
        backbone = experiments.random_backbone(config, data, calibrated=method == "random-conv")
    else:
        backbone = experiments.load_backbone(files.checkpoint_in(pretrain_dir))
    return experiments.probe(config, backbone, head=head, block=2, finetune=finetune,
                             out_dir=out_dir, tracker=tracker, hooks=hooks, data=data)


if __name__ == "__main__":
    run_stage(main)
