"""DVC stage `attention@<variant>-<seed>`: the paper's Figures 3, 4 and 6 and the attention
measures (equivariance, similarity) of a RotNet variant beside the supervised NIN of the same
seed, from their checkpoints: no training, rerun when either checkpoint changes. The
measures and figures also go on both networks' MLflow runs. dvc.yaml passes the paths it
declares: the pretraining folder, the supervised run's folder, the report folder, the
metrics file."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

import json
from pathlib import Path

from rotnet import files
from rotnet.attention_report import attention_report, load_network, test_images
from rotnet.files import atomic_write_text
from rotnet.errors import RotnetError
from rotnet.experiments import load_dataset
from rotnet.registry import stage_name
from rotnet.stage_io import run_stage, stage_config, stage_tracker


def main(variant, seed, pretrain_dir, supervised_dir, out, metrics):
    config = stage_config(seed)
    rotnet = load_network(files.checkpoint_in(pretrain_dir))
    supervised = load_network(files.checkpoint_in(supervised_dir))
    if rotnet.name != f"RotNet {variant}" or supervised.kind != "supervised":
        raise RotnetError(f"expected RotNet {variant} and a supervised NIN, got {rotnet.name} "
                          f"and {supervised.name}")
    context = f"{variant}, seed {seed}, {config.data.dataset} data, {config.profile} profile"
    values = attention_report([rotnet, supervised], test_images(load_dataset(config), int(seed)),
                              out, context=context, tracker=stage_tracker(stage_name("attention", variant, seed)))
    atomic_write_text(metrics, json.dumps({"rotnet": values[0], "supervised": values[1]},
                                          indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    run_stage(main)
