"""DVC stage `ablation`: the variant in params `ablation` (set by `rotnet ablate`):
pretraining, then the non-linear probe on every block. ablation/dvc.yaml passes the paths it
declares: the run folder, the metrics folder."""

from pathlib import Path

from rotnet import experiments, files
from rotnet.progress import progress_hooks
from rotnet.registry import variant_name
from rotnet.stage_io import (ablation_group, run_stage, stage_config, stage_outputs, stage_tracker,
                             write_run_metrics)


def main(out, metrics):
    config = stage_config()
    variant = variant_name(config.ablation.blocks, config.ablation.rotations)
    config = config.with_variant(variant)
    tracker = stage_tracker("ablation").nest_under(ablation_group(config, variant))
    data = experiments.load_dataset(config)  # once for the pretraining and every probe
    results = {}
    with stage_outputs(out) as out_dir:
        out_dir = out_dir / variant
        with progress_hooks(f"ablation {variant} pretrain") as hooks:
            results["pretrain"] = experiments.pretrain(config, out_dir / "pretrain",
                                                       tracker=tracker, hooks=hooks, data=data)
        backbone = experiments.load_backbone(files.checkpoint_in(out_dir / "pretrain"))
        for block in range(1, config.ablation.blocks + 1):
            with progress_hooks(f"ablation {variant} probe block {block}") as hooks:
                results[f"block{block}"] = experiments.probe(
                    config, backbone, head="nonlinear", block=block, hooks=hooks,
                    out_dir=out_dir / f"probe-block{block}", tracker=tracker, data=data)
    for name, result in results.items():
        write_run_metrics(Path(metrics) / f"{name}.json", result)


if __name__ == "__main__":
    run_stage(main)
