"""Labelled subsets for the semi-supervised protocol (Figure 5b), stored as index files.

The subset with K images per class is the first K training images of each class, in
data-set order (the authors' choice). The training set does not depend on the training seed
(`data.seed` draws it), so one file per K serves every seed; each file records a digest of
the labels it was cut from, and a training set with other labels is refused. Subsets are therefore nested — the 20-per-class
subset is inside the 100-per-class one — and identical on every rerun. Writing them to
files lets every method, and every rerun, read exactly the same labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rotnet.files import atomic_write_text
from rotnet.data import tensors_digest
from rotnet.errors import RotnetError


def label_subset(labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices (sorted) of the first `per_class` examples of every class."""
    labels = labels.cpu()
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        if per_class > len(members):
            raise RotnetError(f"class {cls} has only {len(members)} training images; "
                              f"cannot take {per_class} per class")
        chosen.append(members[:per_class])
    return torch.sort(torch.cat(chosen)).values


def subset_path(directory: str | Path, per_class: int) -> Path:
    return Path(directory) / f"per_class_{per_class}.json"


def write_label_subset(directory: str | Path, labels: torch.Tensor, per_class: int,
                       dataset: str) -> Path:
    indices = label_subset(labels, per_class)
    path = subset_path(directory, per_class)
    record = {"dataset": dataset, "per_class": per_class, "train_images": len(labels),
              "labels_sha256": tensors_digest(labels.cpu()), "indices": indices.tolist()}
    atomic_write_text(path, json.dumps(record))
    return path


def read_label_subset(path: str | Path, labels: torch.Tensor) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise RotnetError(f"label subset file not found: {path}")
    try:
        record = json.loads(path.read_text())
        indices = torch.tensor(record["indices"], dtype=torch.long)
    except (ValueError, KeyError, TypeError):
        raise RotnetError(f"{path} is not a label subset file") from None
    if record.get("train_images") != len(labels) or (len(indices) and indices.max() >= len(labels)):
        raise RotnetError(f"{path} was made for a training set of {record.get('train_images')} "
                          f"images, this one has {len(labels)}")
    if record.get("labels_sha256", tensors_digest(labels.cpu())) != tensors_digest(labels.cpu()):
        raise RotnetError(f"{path} was cut from another training set (its labels differ: "
                          "another data.seed or data set); rerun the subsets stage")
    return indices


def covers_training_set(path: str | Path) -> bool:
    """Whether the subset file at `path` holds every training image (K × classes = all)."""
    record = json.loads(Path(path).read_text())
    return len(record["indices"]) == record["train_images"]
