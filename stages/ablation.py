"""DVC stage `ablation`: the variant in params `ablation` (set by `rotnet ablate`):
pretraining, then the non-linear probe on every block."""

from rotnet import experiments
from rotnet.pipeline import (run_stage, stage_config, stage_outputs, stage_tracker, with_variant,
                             write_stage_metrics)


def main():
    config = stage_config()
    variant = experiments.variant_name(config.ablation.blocks, config.ablation.rotations)
    config = with_variant(config, variant)
    tracker = stage_tracker("ablation")
    with stage_outputs("runs/ablation") as out_dir:
        out_dir = out_dir / variant
        results = {"rotation": experiments.pretrain(config, out_dir / "pretrain", tracker=tracker)}
        backbone = experiments.load_backbone(out_dir / "pretrain" / "checkpoint.pt")
        for block in range(1, config.ablation.blocks + 1):
            results[f"block{block}"] = experiments.probe(
                config, backbone, kind="nonlinear", block=block,
                out_dir=out_dir / f"probe-block{block}", tracker=tracker)
    write_stage_metrics("metrics/ablation.json", results)


if __name__ == "__main__":
    run_stage(main)
