"""DVC stage `probe@<variant>-block<N>`: the non-linear probe on block N (Tables 1 and 2)."""

from rotnet import experiments
from rotnet.pipeline import (run_stage, stage_config, stage_outputs, stage_tracker, write_history_csv,
                             write_run_metrics)
from rotnet.progress import progress_hooks


def main(variant, block):
    name = f"{variant}-block{block}"
    backbone = experiments.load_backbone(f"runs/pretrain/{variant}/checkpoint.pt")
    with stage_outputs(f"runs/probe/{name}") as out_dir, progress_hooks(f"probe@{name}") as hooks:
        result = experiments.probe(stage_config(), backbone, kind="nonlinear", block=int(block),
                                   out_dir=out_dir, hooks=hooks,
                                   tracker=stage_tracker(f"probe@{name}"))
    write_run_metrics(f"metrics/probe/{name}.json", result)
    write_history_csv(f"plots/probe/{name}.csv", result.history)


if __name__ == "__main__":
    run_stage(main)
