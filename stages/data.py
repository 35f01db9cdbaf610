"""DVC stage `data`: fetch (CIFAR-10, checksummed) or generate the data set once, and
record what it is, so every later stage reruns when the data change."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

import json

from rotnet.files import atomic_write_text
from rotnet.data import tensors_digest
from rotnet.experiments import load_dataset
from rotnet.stage_io import run_stage, stage_config


def main(out):
    config = stage_config()
    data = load_dataset(config)
    summary = {"dataset": data.name, "train": len(data.train_labels), "test": len(data.test_labels),
               "channels": data.channels, "classes": list(data.classes),
               "mean": [round(m, 6) for m in data.mean], "std": [round(s, 6) for s in data.std],
               "sha256": tensors_digest(data.train_images, data.train_labels, data.test_images,
                                         data.test_labels)}
    atomic_write_text(out, json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
