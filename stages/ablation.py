"""DVC stage `ablation`: the variant in params `ablation` (set by `rotnet ablate`):
pretraining, then the non-linear probe on every block."""

from rotnet import experiments
from rotnet.pipeline import run_stage, stage_config, stage_tracker, with_variant, write_stage_metrics
from rotnet.progress import progress_hooks


def main():
    config = stage_config()
    variant = experiments.variant_name(config.ablation.blocks, config.ablation.rotations)
    config = with_variant(config, variant)
    tracker = stage_tracker("ablation")
    with progress_hooks(f"ablation {variant} pretrain") as hooks:
        results = {"rotation": experiments.pretrain(config, f"runs/ablation/{variant}/pretrain",
                                                    tracker=tracker, hooks=hooks)}
    backbone = experiments.load_backbone(f"runs/ablation/{variant}/pretrain/checkpoint.pt")
    for block in range(1, config.ablation.blocks + 1):
        with progress_hooks(f"ablation {variant} probe block {block}") as hooks:
            results[f"block{block}"] = experiments.probe(
                config, backbone, kind="nonlinear", block=block, hooks=hooks,
                out_dir=f"runs/ablation/{variant}/probe-block{block}", tracker=tracker)
    write_stage_metrics("metrics/ablation.json", results)


if __name__ == "__main__":
    run_stage(main)
