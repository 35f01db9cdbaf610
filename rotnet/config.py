"""One typed configuration for every experiment, with the profiles paper / paper-authors /
quick / smoke.

The defaults of the dataclasses ARE the paper protocol on CIFAR-10 (Gidaris et al., ICLR
2018); the other profiles are override dicts on top of them (`PROFILE_OVERRIDES`, the one
registry of named configurations), so the CLI, `params.yaml` and the tests all describe a
run the same way. `Config.from_dict` validates once,
strictly: an unknown key or a wrong type is a one-line `RotnetError`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field

from rotnet.errors import RotnetError
from rotnet.registry import BLOCK_CHOICES, ROTATION_SETS, VARIANTS, parse_variant

PROFILES = ("paper", "paper-authors", "quick", "smoke")
DATASETS = ("generated", "cifar10", "fashion-mnist", "imagefolder")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # generated | cifar10 | fashion-mnist | imagefolder
    root: str = "data"
    train_size: int | None = None  # None: the whole split
    test_size: int | None = None
    download: bool = True
    # Which draw of the data: the generated set's images, the train_size / test_size cut,
    # an image folder's split. Not runtime.seed: every training seed of the pipeline sees the
    # same training and test images, as on CIFAR-10, so the seeds' spread is training noise
    # and two cells are compared image by image on one test set (rotnet.significance).
    seed: int = 0


@dataclass
class OptimConfig:
    """SGD with a step schedule: lr, multiplied by lr_decay at each milestone epoch."""

    epochs: int = 100
    batch_size: int = 128  # images per step (a pretext step sees batch_size × K)
    lr: float = 0.1
    milestones: list[int] = field(default_factory=lambda: [30, 60, 80])
    lr_decay: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    # Samples per epoch; None means one pass over the training set. The
    # semi-supervised protocol holds it at 50k so every subset size gets the same steps.
    epoch_samples: int | None = None
    # Epochs over which the lr rises linearly, step by step, from lr/steps to lr (0: none,
    # as in the paper). No profile sets it: on the quick profile it did not narrow the seed
    # spread (README's "Sizing the quick profile").
    warmup_epochs: int = 0


@dataclass
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 where the device computes it natively, else fp32) | bf16 | fp32
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms + fixed cuDNN choices
    seed: int = 0
    log_every: int = 20  # steps between progress updates (each costs one host sync)


@dataclass
class PretrainConfig:
    blocks: int = 4
    rotations: str = "4"
    width: float = 1.0  # channel multiplier; 1.0 is the paper's NIN
    snapshot_every: int = 20  # keep a checkpoint every N epochs (Figure 5a); 0: none
    # Score the test set every N epochs (and at the last and at every snapshot): the
    # rotation accuracy of the epochs between is not measured (1: every epoch, the paper's).
    eval_every: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class ProbeConfig:
    """The non-linear probe (3 FC layers) on frozen features; the stage or command names
    the block."""

    hidden: int = 200  # units of its two hidden layers (also the fine-tuned non-linear head's)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(milestones=[20, 40, 45]))


@dataclass
class ConvProbeConfig:
    """The conv probe (NIN block 3 + linear) on frozen features."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(milestones=[35, 70, 85]))


@dataclass
class FinetuneConfig:
    """Either probe with the backbone trained too. Its schedule is not published: the conv
    probe's, with the pretrained blocks at lr × backbone_lr_scale (a freshly initialised
    head at the full lr 0.1 would otherwise wreck them in the first steps)."""

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(milestones=[35, 70, 85]))
    backbone_lr_scale: float = 0.1


@dataclass
class SupervisedConfig:
    """The supervised NIN baseline: 3 blocks trained from scratch on labels."""

    blocks: int = 3
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(epochs=200, milestones=[60, 120, 160]))


@dataclass
class SemisupConfig:
    per_class: list[int] = field(default_factory=lambda: [20, 100, 400, 1000, 5000])
    # The conv probe on RotNet block 2 trains with this schedule; the supervised NIN with
    # `supervised.optim` (see `Config.semisup_optim`). For both an epoch is epoch_samples
    # draws from the subset, wrapping around it.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        milestones=[35, 70, 85], epoch_samples=50_000))


@dataclass
class SnapshotConfig:
    """Figure 5a: a non-linear probe on block 2 of pretraining snapshots."""

    every: int = 20
    block: int = 2


@dataclass
class AttentionConfig:
    """attention@<variant>-<seed>: the pretraining variants whose Figures 3, 4, 6 and attention
    measures the pipeline draws (dvc.yaml's matrix reads this list; no stage trains on it).
    claims.md's attention section reads the baseline b4-r4's."""

    variants: list[str] = field(default_factory=lambda: list(VARIANTS))


@dataclass
class AblationConfig:
    """`rotnet ablate`: one more variant run through DVC (pretraining + a probe per block)."""

    blocks: int = 4
    rotations: str = "8"


@dataclass
class Config:
    profile: str = "paper"
    # The DVC pipeline runs every training stage once per seed (dvc.yaml's matrices expand
    # `seeds`; each stage sets runtime.seed to its own). Single runs use runtime.seed.
    seeds: list[int] = field(default_factory=lambda: [0])
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    conv_probe: ConvProbeConfig = field(default_factory=ConvProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    semisup: SemisupConfig = field(default_factory=SemisupConfig)
    snapshots: SnapshotConfig = field(default_factory=SnapshotConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Paper defaults, then the named profile, then `values` on top; strict."""
        values = copy.deepcopy(values or {})
        profile = values.get("profile", "paper")
        if profile not in PROFILES:
            raise RotnetError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        merged = merge(PROFILE_OVERRIDES[profile], values)
        config = build(cls, merged, "")
        config.validate()
        return config

    @classmethod
    def profile_defaults(cls, profile: str) -> Config:
        return cls.from_dict({"profile": profile})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        check = _checker()
        for name, blocks in (("pretrain", self.pretrain.blocks), ("supervised", self.supervised.blocks),
                             ("ablation", self.ablation.blocks)):
            check(blocks in BLOCK_CHOICES, f"{name}.blocks must be one of "
                  f"{', '.join(map(str, BLOCK_CHOICES))} (got {blocks})")
        check(self.ablation.rotations in ROTATION_SETS,
              f"unsupported rotation set {self.ablation.rotations!r}; "
              f"choose one of {', '.join(ROTATION_SETS)}")
        check(self.pretrain.rotations in ROTATION_SETS,
              f"unsupported rotation set {self.pretrain.rotations!r}; "
              f"choose one of {', '.join(ROTATION_SETS)}")
        check(self.pretrain.width > 0 and math.isfinite(self.pretrain.width),
              f"pretrain.width must be a finite number > 0 (got {self.pretrain.width})")
        check(0 < self.finetune.backbone_lr_scale <= 1,
              f"finetune.backbone_lr_scale must be in (0, 1] (got {self.finetune.backbone_lr_scale})")
        check(self.probe.hidden >= 1, f"probe.hidden must be >= 1 (got {self.probe.hidden})")
        for name, optim in self.optim_sections():
            check(optim.epochs >= 1, f"{name}.epochs must be >= 1 (got {optim.epochs})")
            check(optim.batch_size >= 1, f"{name}.batch_size must be >= 1 (got {optim.batch_size})")
            check(optim.lr > 0 and math.isfinite(optim.lr),
                  f"{name}.lr must be a finite number > 0 (got {optim.lr})")
            check(optim.weight_decay >= 0 and math.isfinite(optim.weight_decay),
                  f"{name}.weight_decay must be a finite number >= 0 (got {optim.weight_decay})")
            check(optim.momentum >= 0 and math.isfinite(optim.momentum),
                  f"{name}.momentum must be a finite number >= 0 (got {optim.momentum})")
            check(optim.momentum > 0 or not optim.nesterov,  # torch's SGD refuses the pair
                  f"{name}.nesterov needs {name}.momentum > 0 (got {optim.momentum})")
            check(optim.lr_decay > 0 and math.isfinite(optim.lr_decay),
                  f"{name}.lr_decay must be a finite number > 0 (got {optim.lr_decay})")
            check(optim.epoch_samples is None or optim.epoch_samples >= 1,
                  f"{name}.epoch_samples must be >= 1")
            check(0 <= optim.warmup_epochs <= optim.epochs,
                  f"{name}.warmup_epochs must be in [0, {name}.epochs] (got {optim.warmup_epochs})")
        check(self.pretrain.eval_every >= 1,
              f"pretrain.eval_every must be >= 1 (got {self.pretrain.eval_every})")
        check(len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds)
              and all(seed >= 0 for seed in self.seeds),
              f"seeds must be a non-empty list of distinct integers >= 0 (got {self.seeds})")
        check(all(k >= 1 for k in self.semisup.per_class), "semisup.per_class values must be >= 1")
        check(self.snapshots.every >= 1, "snapshots.every must be >= 1")
        check(len(self.attention.variants) == len(set(self.attention.variants))
              and set(self.attention.variants) <= set(VARIANTS),
              f"attention.variants must be distinct variants of {', '.join(VARIANTS)} "
              f"(got {self.attention.variants})")
        check(self.runtime.log_every >= 1, f"runtime.log_every must be >= 1 (got {self.runtime.log_every})")
        check(DEVICE_PATTERN.fullmatch(self.runtime.device) is not None,
              f"runtime.device must be auto, cpu, cuda or cuda:N (got {self.runtime.device!r})")
        check(self.runtime.precision in PRECISIONS,
              f"runtime.precision must be one of {', '.join(PRECISIONS)} (got {self.runtime.precision!r})")
        for size_name in ("train_size", "test_size"):
            size = getattr(self.data, size_name)
            check(size is None or size >= 1, f"data.{size_name} must be >= 1 (got {size})")

    def semisup_optim(self, method: str) -> OptimConfig:
        """Figure 5b's schedule for `method`, as the authors trained it: "conv" as the
        conv probe (`semisup.optim`), "supervised" as the supervised NIN (`supervised.optim`),
        both on epochs of `semisup.optim.epoch_samples` images."""
        if method == "supervised":
            return dataclasses.replace(self.supervised.optim,
                                       epoch_samples=self.semisup.optim.epoch_samples)
        return self.semisup.optim

    def with_seed(self, seed: int) -> "Config":
        """This config for one seed of `seeds` (each training stage's runtime.seed)."""
        return dataclasses.replace(self, runtime=dataclasses.replace(self.runtime, seed=seed))

    def with_variant(self, variant: str) -> "Config":
        """This config pretraining the RotNet `variant` names (blocks and rotation set)."""
        blocks, rotations = parse_variant(variant)
        return dataclasses.replace(self, pretrain=dataclasses.replace(
            self.pretrain, blocks=blocks, rotations=rotations))

    def optim_sections(self):
        return [("pretrain.optim", self.pretrain.optim), ("probe.optim", self.probe.optim),
                ("conv_probe.optim", self.conv_probe.optim), ("finetune.optim", self.finetune.optim),
                ("supervised.optim", self.supervised.optim), ("semisup.optim", self.semisup.optim)]


def _checker():
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise RotnetError(message)
    return check


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge; `override` wins."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(values: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested sections as dotted keys, values unchanged."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def build(cls, values: dict, path: str):
    """Instantiate dataclass `cls` from a nested dict, rejecting unknown keys and bad types."""
    if not isinstance(values, dict):
        raise RotnetError(f"{path or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {path}" if path else ""
        raise RotnetError(f"unknown key {unknown[0]!r}{where}; expected one of {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in values.items():
        key = f"{path}.{name}" if path else name
        kwargs[name] = _coerce(hints[name], value, key)
    return cls(**kwargs)


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(h for h in options if h is not type(None))
        origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise RotnetError(f"{key} must be a list, got {value!r}")
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # rotations: 4 in YAML means the set "4"
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise RotnetError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


# Small profiles: the generated offline data set and a narrow network, so the whole
# pipeline runs on a CPU. Milestones are scaled with the epochs.
PROFILE_OVERRIDES: dict[str, dict] = {
    "paper": {},
    # The authors' public code pretrains for 200 epochs, lr ×0.2 after 60, 120, 160 (the
    # paper says 100 epochs, ×0.2 after 30, 60, 80); everything else as the paper.
    "paper-authors": {"pretrain": {"optim": {"epochs": 200, "milestones": [60, 120, 160]}}},
    # quick: three seeds on the generated data set, sized by its training curves and its
    # budget (README's "Sizing the quick profile"), aimed at `make run` within 15 min on 2
    # AVX512-BF16 cores and 20 on 2 AVX2-only ones (fp32 there, about half the speed; README's
    # Results give the times measured). Batch 32: on so
    # few images the number of steps, not of images, decides how far a run gets. Lower lrs
    # than the paper's 0.1 (set for batch 128) for the networks trained from scratch: at
    # batch 32 it left single seeds at chance (the runs are in README's "Sizing the quick
    # profile"). Pretraining scores its test set every other epoch (the snapshot epochs),
    # which leaves every result as it was.
    # Attention figures for the baseline only (one command for any other: `rotnet attention`).
    "quick": {
        "seeds": [0, 1, 2],
        "data": {"dataset": "generated", "train_size": 1000, "test_size": 800},
        "pretrain": {"width": 0.25, "snapshot_every": 2, "eval_every": 2,
                     "optim": {"epochs": 8, "batch_size": 32, "milestones": [5, 7], "lr": 0.05}},
        "probe": {"optim": {"epochs": 7, "batch_size": 32, "milestones": [4, 6]}},
        "conv_probe": {"optim": {"epochs": 7, "batch_size": 32, "milestones": [4, 6]}},
        "finetune": {"optim": {"epochs": 7, "batch_size": 32, "milestones": [4, 6]}},
        "supervised": {"optim": {"epochs": 10, "batch_size": 32, "milestones": [6, 8],
                                 "lr": 0.025}},
        "semisup": {"per_class": [20, 50],
                    "optim": {"epochs": 7, "batch_size": 32, "milestones": [4, 6],
                              "epoch_samples": 1000}},
        "snapshots": {"every": 2},
        "attention": {"variants": ["b4-r4"]},
    },
    "smoke": {
        "data": {"dataset": "generated", "train_size": 256, "test_size": 128},
        "runtime": {"log_every": 1},
        "pretrain": {"width": 0.125, "snapshot_every": 1,
                     "optim": {"epochs": 2, "batch_size": 32, "milestones": [1]}},
        "probe": {"optim": {"epochs": 1, "batch_size": 32, "milestones": []}},
        "conv_probe": {"optim": {"epochs": 1, "batch_size": 32, "milestones": []}},
        "finetune": {"optim": {"epochs": 1, "batch_size": 32, "milestones": []}},
        "supervised": {"optim": {"epochs": 1, "batch_size": 32, "milestones": []}},
        "semisup": {"per_class": [5, 10],
                    "optim": {"epochs": 1, "batch_size": 32, "milestones": [], "epoch_samples": 256}},
        "snapshots": {"every": 1},
    },
}
