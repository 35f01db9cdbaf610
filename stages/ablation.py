"""DVC stage `ablation`: the variant in params `ablation` (set by `rotnet ablate`):
pretraining, then the non-linear probe on every block."""

from rotnet import experiments
from rotnet.pipeline import run_stage, stage_config, stage_tracker, with_variant, write_run_metrics
from rotnet.progress import progress_hooks


def main():
    config = stage_config()
    variant = experiments.variant_name(config.ablation.blocks, config.ablation.rotations)
    config = with_variant(config, variant)
    tracker = stage_tracker("ablation")
    with progress_hooks(f"ablation {variant} pretrain") as hooks:
        result = experiments.pretrain(config, f"runs/ablation/{variant}/pretrain", tracker=tracker,
                                      hooks=hooks)
    write_run_metrics("metrics/ablation/pretrain.json", result)
    backbone = experiments.load_backbone(f"runs/ablation/{variant}/pretrain/checkpoint.pt")
    for block in range(1, config.ablation.blocks + 1):
        with progress_hooks(f"ablation {variant} probe block {block}") as hooks:
            result = experiments.probe(config, backbone, kind="nonlinear", block=block, hooks=hooks,
                                       out_dir=f"runs/ablation/{variant}/probe-block{block}",
                                       tracker=tracker)
        write_run_metrics(f"metrics/ablation/block{block}.json", result)


if __name__ == "__main__":
    run_stage(main)
