"""DVC stage `ablation`: the variant in params `ablation` (set by `rotnet ablate`):
pretraining, then the non-linear probe on every block, once per seed of params' `seeds`.
ablation/dvc.yaml passes the paths it declares: the run folder, the metrics folder."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from pathlib import Path

from rotnet import experiments, files
from rotnet.progress import progress_hooks
from rotnet.registry import variant_name
from rotnet.stage_io import (ablation_group, run_stage, stage_config, stage_outputs, stage_tracker,
                             write_run_metrics)


def main(out, metrics):
    base = stage_config()
    variant = variant_name(base.ablation.blocks, base.ablation.rotations)
    data = experiments.load_dataset(base)  # data.seed's: once for every seed and block
    results = {}
    with stage_outputs(out) as out_dir:
        for seed in base.seeds:  # every seed of `seeds`, as the main pipeline's stages
            config = base.with_variant(variant).with_seed(seed)
            tracker = stage_tracker("ablation").nest_under(ablation_group(config, variant))
            run_dir, label = out_dir / f"{variant}-s{seed}", f"ablation {variant} s{seed}"
            with progress_hooks(f"{label} pretrain") as hooks:
                results[f"s{seed}/pretrain"] = experiments.pretrain(
                    config, run_dir / "pretrain", tracker=tracker, hooks=hooks, data=data)
            backbone = experiments.load_backbone(files.checkpoint_in(run_dir / "pretrain"))
            for block in range(1, config.ablation.blocks + 1):
                with progress_hooks(f"{label} probe block {block}") as hooks:
                    results[f"s{seed}/block{block}"] = experiments.probe(
                        config, backbone, head="nonlinear", block=block, hooks=hooks,
                        out_dir=run_dir / f"probe-block{block}", tracker=tracker, data=data)
    for name, result in results.items():
        write_run_metrics(Path(metrics) / f"{name}.json", result)


if __name__ == "__main__":
    run_stage(main)
