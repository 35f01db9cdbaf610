"""DVC stage `semisup@<K>`: with K labelled images per class, the conv probe on the
4-block RotNet's block 2 vs a supervised NIN trained on those images alone (Figure 5b).
Where the subset is the whole training set the supervised point is `table3@supervised`."""

from rotnet import experiments, studies
from rotnet.pipeline import (BASELINE_VARIANT, run_stage, stage_config, stage_outputs, stage_tracker,
                             write_stage_metrics)


def main(per_class):
    k = int(per_class)
    config = stage_config()
    tracker = stage_tracker(f"semisup@{k}")
    backbone = experiments.load_backbone(f"runs/pretrain/{BASELINE_VARIANT}/checkpoint.pt")
    with stage_outputs(f"runs/semisup/{k}") as out_dir:
        results = {method: studies.semisup_run(config, method, k, "runs/subsets", backbone=backbone,
                                               out_dir=out_dir, tracker=tracker)
                   for method in studies.semisup_methods(k, "runs/subsets")}
    write_stage_metrics(f"metrics/semisup/{k}.json", results)


if __name__ == "__main__":
    run_stage(main)
