"""The pipeline's names, each defined once and looked up by name: the rotation sets, the
pretraining variants of Tables 1 and 2, the baseline RotNet, the random backbones and the
probe heads. A "variant" is always a pretraining (blocks, rotation set); a probe's
backbone is a pretrained one (its pretraining's variant) or a random one.

Config validation, the stage scripts, the report and the CLI take their choices from here;
`tests/test_registry.py` checks dvc.yaml's matrices against it. Plain data only (no torch),
so the CLI can offer the choices without importing the training code.
"""

from __future__ import annotations

import re

from rotnet.errors import RotnetError

# Rotation set name -> its angles in degrees, counter-clockwise; label k is angles[k].
ROTATION_SETS: dict[str, tuple[int, ...]] = {
    "4": (0, 90, 180, 270),
    "8": (0, 45, 90, 135, 180, 225, 270, 315),
    "2": (0, 180),
    "2-perp": (90, 270),
}
BLOCK_CHOICES = (3, 4, 5)  # NIN depths a RotNet (or the supervised NIN) may have
HEADS = ("nonlinear", "conv")  # probe heads: 3 FC layers | a fresh NIN block + linear
# NIN block -> the power p of its attention map Σ_c |a_c|^p (rotnet.attention): the paper's
# p = 1, 2, 4 for layers 1, 2, 3 (Figure 3), and its largest, 4, for the deeper blocks 4, 5.
ATTENTION_POWERS = {1: 1, 2: 2, 3: 4, 4: 4, 5: 4}

# The paper's pretraining variants, (blocks, rotation set): NIN depth with 4 rotations
# (Table 1, probed on every block), rotation sets at 4 blocks (Table 2, probed on block 2).
DEPTH_VARIANTS = ((3, "4"), (4, "4"), (5, "4"))
ROTATION_VARIANTS = ((4, "8"), (4, "2"), (4, "2-perp"))
BASELINE_BLOCKS, BASELINE_ROTATIONS = 4, "4"  # the paper's main RotNet: Table 3, Figure 5


def variant_name(blocks: int, rotations: str) -> str:
    """(4, "2-perp") -> "b4-r2-perp"."""
    return f"b{blocks}-r{rotations}"


VARIANTS = tuple(variant_name(b, r) for b, r in DEPTH_VARIANTS + ROTATION_VARIANTS)
# The `backbone` tag of a probe (or fine-tuned classifier) run: the blocks of a pretraining
# (whose `variant` tag names it), or a seeded random NIN (Table 3's "random init + conv"),
# named by whether its BatchNorm statistics were calibrated on training images.
PRETRAINED_BACKBONE = "pretrained"
RANDOM_BACKBONES = {True: "random", False: "random-initial-bn"}
BASELINE = variant_name(BASELINE_BLOCKS, BASELINE_ROTATIONS)
# What the probe stages probe: every block of the depth variants, block 2 of the rotation
# variants; "<variant>-block<N>" (a Table 1/2 cell of the variant) -> (variant, block).
PROBES: dict[str, tuple[str, int]] = {
    **{f"{variant_name(b, r)}-block{block}": (variant_name(b, r), block)
       for b, r in DEPTH_VARIANTS for block in range(1, b + 1)},
    **{f"{variant_name(b, r)}-block2": (variant_name(b, r), 2) for b, r in ROTATION_VARIANTS},
}
# The table3 stages besides `supervised` (the block-2 non-linear probe is a probe stage):
# method -> (probe head, fine-tuned). The random-conv ones probe a random backbone.
TABLE3_PROBES: dict[str, tuple[str, bool]] = {
    "conv": ("conv", False),
    "nonlinear-finetuned": ("nonlinear", True),
    "conv-finetuned": ("conv", True),
    "random-conv": ("conv", False),
    "random-conv-initial-bn": ("conv", False),
}
_VARIANT_PATTERN = re.compile(r"b(\d+)-r(.+)")


def parse_variant(name: str) -> tuple[int, str]:
    """"b4-r2-perp" -> (4, "2-perp"): any depth with any rotation set, not only the paper's."""
    match = _VARIANT_PATTERN.fullmatch(name)
    if not match or int(match.group(1)) not in BLOCK_CHOICES or match.group(2) not in ROTATION_SETS:
        blocks, sets = "|".join(map(str, BLOCK_CHOICES)), "|".join(ROTATION_SETS)
        raise RotnetError(f"unknown variant {name!r}: expected b<{blocks}>-r<{sets}>, "
                          f"e.g. {', '.join(VARIANTS)}")
    return int(match.group(1)), match.group(2)


def probe_blocks(variant: str) -> list[int]:
    """The blocks the `probe@<variant>-<seed>` stage probes (one MLflow run each)."""
    return [block for v, block in PROBES.values() if v == variant]


def stage_name(stage: str, *values) -> str:
    """A dvc.yaml matrix stage's name: its values joined with "-" (variant or method or K,
    then seed), e.g. `pretrain@b4-r8-0`, `snapshots@1`."""
    return f"{stage}@{'-'.join(map(str, values))}"


def variant_stages(variant: str, seed: int = 0) -> list[str]:
    """The DVC stages of a variant for `seed`: its pretraining and its probe stage."""
    return [stage_name("pretrain", variant, seed), stage_name("probe", variant, seed)]


def baseline_stages(seed: int = 0) -> list[str]:
    """The DVC stages of the baseline RotNet an ablation is compared with."""
    return variant_stages(BASELINE, seed)


def rotation_set_label(name: str) -> str:
    """How the report names a rotation set: "4 rotations (0°, 90°, 180°, 270°)"."""
    angles = ROTATION_SETS[name]
    step = angles[1] - angles[0] if len(angles) > 2 else None
    if step and angles == tuple(range(0, 360, step)) and len(angles) > 4:
        return f"{len(angles)} rotations (multiples of {step}°)"
    return f"{len(angles)} rotations ({', '.join(f'{a}°' for a in angles)})"


def rotation_set_help() -> str:
    """The rotation sets for --help: "4, 8, 2 (0/180) or 2-perp (90/270)"-like."""
    named = [f"{name} ({'/'.join(map(str, angles))})" for name, angles in ROTATION_SETS.items()]
    return ", ".join(named[:-1]) + " or " + named[-1]
