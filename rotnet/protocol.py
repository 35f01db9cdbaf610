"""Protocol fingerprints: a short hash of what defines a run's result.

A run's fingerprint covers the data set and its sizes, the seed, the optimiser section it
trained with and `model`, a small dict naming what was trained (built by the functions
below: a RotNet, a classifier on a backbone, a supervised NIN). A classifier's backbone is
named by its pretraining run's fingerprint and the epoch its weights were taken at, so a
probe's fingerprint changes with anything that changed its pretraining. Paths, logging,
device and other runtime choices are left out: they say where and how fast a run went,
recorded separately as `resolved.*` tags. The resolved precision is in: bf16 and fp32 runs
of the same params give different numbers, and a cell must not average the two.

`experiments` tags every run with `fingerprint(...)`; `report` computes the same value from
params.yaml for every cell and accepts only runs that carry it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from rotnet.config import Config, OptimConfig, PretrainConfig, RuntimeConfig

FINGERPRINT_CHARS = 12  # 48 bits: a collision among a project's few thousand runs is negligible


def fingerprint(config: Config, optim: OptimConfig, model: dict, precision: str) -> str:
    """The fingerprint of a run of `config` that trained `model` with `optim` in the resolved
    `precision` (bf16 | fp32: the numbers differ, so runs of each never fill one cell)."""
    data = config.data
    optim_fields = dataclasses.asdict(optim)
    if not optim.warmup_epochs:  # added later: runs without warm-up keep their fingerprint
        del optim_fields["warmup_epochs"]
    protocol = {"data": {"dataset": data.dataset, "train_size": data.train_size,
                         "test_size": data.test_size, "seed": data.seed},
                "seed": config.runtime.seed, "optim": optim_fields, "model": model,
                "precision": precision}
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def is_fingerprint(value) -> bool:
    """Whether `value` has a fingerprint's form (a checkpoint's tag may be anything)."""
    return isinstance(value, str) and re.fullmatch(f"[0-9a-f]{{{FINGERPRINT_CHARS}}}", value) is not None


def run_precision(runtime: RuntimeConfig) -> str:
    """The precision a run of `runtime` resolves to on this machine (as `runtime.Runtime`
    resolves it): what a fingerprint computed here, e.g. by the report, assumes."""
    from rotnet import hardware  # torch: only where a precision is resolved

    return hardware.resolve_precision(runtime.precision, hardware.resolve_device(runtime.device))


def run_params(config: Config, optim: OptimConfig, model: dict) -> dict:
    """What a run logs as MLflow params: the sections that apply to it (its data, runtime,
    the optimiser it trained with, the model it trained), not the whole pipeline's config."""
    return {"profile": config.profile, "data": dataclasses.asdict(config.data),
            "runtime": dataclasses.asdict(config.runtime), "optim": dataclasses.asdict(optim),
            "model": model}


def rotnet_model(pretrain: PretrainConfig) -> dict:
    return {"rotnet": {"blocks": pretrain.blocks, "rotations": pretrain.rotations,
                       "width": pretrain.width}}


def pretrain_fingerprint(config: Config, precision: str) -> str:
    """The fingerprint of the RotNet pretraining `config` describes."""
    return fingerprint(config, config.pretrain.optim, rotnet_model(config.pretrain), precision)


def pretrained_backbone(pretrain_fp: str, epoch: int) -> dict:
    """A backbone taken from a pretraining run after `epoch` epochs (a snapshot or the end)."""
    return {"pretrained": pretrain_fp, "epoch": epoch}


def random_backbone(config: Config, calibrated: bool = True) -> dict:
    """The seeded random backbone of `experiments.random_backbone`; the calibrated one keeps
    the fingerprint it had before the as-initialised one existed."""
    random = {"blocks": config.pretrain.blocks, "width": config.pretrain.width,
              "seed": config.runtime.seed}
    if not calibrated:
        random["batchnorm"] = "initial"
    return {"random": random}


def classifier_model(head: str, block: int, finetune: bool, hidden: int, backbone: dict,
                     subset_per_class: int | None = None, backbone_lr_scale: float = 1.0) -> dict:
    """A probe (or fine-tuned classifier) with `head` on `block` of `backbone`; the conv probe
    has no hidden layer size. `subset_per_class`: trained on that label subset only;
    `backbone_lr_scale`: a fine-tuned one's lr factor for the pretrained blocks."""
    classifier = {"head": head, "block": block, "finetune": finetune}
    if finetune:
        classifier["backbone_lr_scale"] = backbone_lr_scale
    if head == "nonlinear":
        classifier["hidden"] = hidden
    return {"classifier": classifier, "backbone": backbone, "subset_per_class": subset_per_class}


def supervised_model(blocks: int, width: float, subset_per_class: int | None = None) -> dict:
    return {"supervised": {"blocks": blocks, "width": width}, "subset_per_class": subset_per_class}


def combined(fingerprints) -> str:
    """One fingerprint for a set of runs (a table): equal sets give equal values."""
    text = ",".join(sorted(fingerprints))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]
