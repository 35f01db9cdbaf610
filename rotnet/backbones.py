"""Backbones: where a probe's features come from — a pretraining checkpoint's NIN blocks
(checked against the architecture the checkpoint declares before any weight is loaded) or
a seeded random NIN (Table 3's "random init + conv"), each with the lineage its probe runs
record and the protocol its fingerprints chain."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn

from rotnet import checkpoint, protocol
from rotnet.augment import normalize
from rotnet.config import Config
from rotnet.data import ImageData
from rotnet.errors import RotnetError
from rotnet.models import NINBackbone, NINClassifier
from rotnet.registry import (BLOCK_CHOICES, PRETRAINED_BACKBONE, RANDOM_BACKBONES, ROTATION_SETS,
                             variant_name)
from rotnet.rotations import rotation_set


@dataclass
class Backbone:
    """A NIN backbone plus where it came from (the lineage every probe run records)."""

    module: NINBackbone
    # Tagged on every probe run: backbone (registry.PRETRAINED_BACKBONE or a RANDOM_BACKBONES
    # name), pretrain_run_id, pretrain_checkpoint(_sha256), pretrain_fingerprint, variant
    # (a pretrained one's), blocks, width, ...
    lineage: dict
    protocol: dict  # what its weights are, for a probe's fingerprint (rotnet.protocol)
    profile: str | None = None  # the pretraining's profile (a command's default for its probes)
    rotation_acc: float | None = None  # its rotation accuracy on the test set when saved

    @property
    def label(self) -> str:
        """What its probes' run names and default folders start with: the pretraining's
        variant (b4-r4), or the random backbone's name (random, random-initial-bn)."""
        return self.lineage.get("variant") or self.lineage["backbone"]


def load_backbone(path: str | Path) -> Backbone:
    """The backbone of a pretraining checkpoint (its rotation head is dropped); what it can
    serve is checked where it is used (`check_backbone`)."""
    state = checkpoint.load_checkpoint(path, task="pretrain")
    arch = state["arch"]
    with torch.device("meta"):  # its shapes, allocating nothing whatever width it declares
        checkpoint.check_weights(state["model"], declared_rotnet(arch, path), path)
    model = declared_rotnet(arch, path)
    model.load_state_dict(state["model"])
    tags = state["extra"].get("tags")
    tags = tags if isinstance(tags, dict) else {}
    # The pretraining run's own fingerprint (with its resolved precision); checkpoints older
    # than the fingerprint tag: computed from the checkpoint's config.
    pretrain_fp = tags.get("fingerprint")
    if not protocol.is_fingerprint(pretrain_fp):
        pretrain_fp = protocol.pretrain_fingerprint(Config.from_dict(state["config"]),
                                                    str(tags.get("resolved.precision", "fp32")))
    lineage = {"backbone": PRETRAINED_BACKBONE, "pretrain_run_id": state["extra"].get("run_id", ""),
               "pretrain_fingerprint": pretrain_fp,
               "pretrain_checkpoint": str(Path(path).resolve()),
               "pretrain_checkpoint_sha256": checkpoint.file_sha256(path),
               "pretrain_epoch": state["epoch"],
               "variant": variant_name(arch["blocks"], arch["rotations"]),  # from its architecture, not a tag
               "blocks": arch["blocks"], "rotations": arch["rotations"], "width": arch["width"]}
    return Backbone(model.backbone, lineage, protocol.pretrained_backbone(pretrain_fp, state["epoch"]),
                    state["config"].get("profile"), checkpoint.last_test_acc(state["history"]))


def declared_rotnet(arch: dict, path: str | Path) -> NINClassifier:
    """The RotNet a pretraining checkpoint's `arch` declares, refused unless every field is
    one a RotNet can have."""
    fields = {k: arch.get(k) for k in ("blocks", "rotations", "in_channels", "width")}
    blocks, rotations, channels, width = fields.values()
    if not (type(blocks) is int and blocks in BLOCK_CHOICES and isinstance(rotations, str)
            and rotations in ROTATION_SETS and type(channels) is int and channels >= 1
            and type(width) in (int, float) and 0 < width < 1e3):
        raise RotnetError(f"checkpoint {path} declares an architecture a RotNet cannot have: "
                          f"{fields}")
    return NINClassifier(blocks, len(rotation_set(rotations)), channels, width)


def check_backbone(backbone: Backbone, *, channels: int, block: int | None = None) -> None:
    """Refuse a probe that `backbone` cannot serve: on a block it does not have, or on
    images of another number of channels than it was built for."""
    n_blocks = len(backbone.module.blocks)
    if block is not None and not 1 <= block <= n_blocks:
        raise RotnetError(f"cannot probe block {block}: the checkpoint has {n_blocks} blocks")
    takes = backbone.module.blocks[0][0].in_channels
    if takes != channels:
        raise RotnetError(f"the backbone ({backbone.lineage['pretrain_checkpoint']}) takes "
                          f"{takes}-channel images, the data set has {channels}")


def random_backbone(config: Config, data: ImageData, *, calibrated: bool = True,
                    calibration_images: int = 2048) -> Backbone:
    """A randomly initialised backbone (the 'random init + conv' baseline, test controls).

    The weights stay random. `calibrated`: BatchNorm's running statistics are estimated on
    the first `calibration_images` training images, since a frozen backbone runs in eval
    mode and with the initial statistics (mean 0, variance 1) PyTorch's default init shrinks
    activations ~10× per block. Otherwise they stay as initialised, which is what the paper
    most likely ran (its code builds the network and loads no weights)."""
    torch.manual_seed(config.runtime.seed + 7919)  # not the init a pretraining run with this seed had
    p = config.pretrain
    module = NINBackbone(p.blocks, data.channels, p.width)
    name = RANDOM_BACKBONES[calibrated]
    lineage = {"backbone": name, "pretrain_run_id": "", "pretrain_checkpoint": name,
               "pretrain_checkpoint_sha256": "", "blocks": p.blocks, "width": p.width}
    if calibrated:
        start, images = time.perf_counter(), data.train_images[:calibration_images]
        with torch.no_grad():  # forward passes only: no graph to keep
            update_bn((normalize(chunk, data.mean, data.std) for chunk in images.split(256)), module)
        # work of the method, not start-up: bench/dag_time.py counts it with the epochs
        lineage["calibration_seconds"] = f"{time.perf_counter() - start:.3f}"
    return Backbone(module.eval(), lineage, protocol.random_backbone(config, calibrated))
