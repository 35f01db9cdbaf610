"""What a network looks at: attention maps, first-layer filters, and two numbers on them.

Attention map (Gidaris et al., ICLR 2018, Figure 3): for the output a (C×h×w) of a block,

    A(u, v) = Σ_c |a_c(u, v)|^p        (the sum over channels, as the paper; not the mean)

upsampled bilinearly to the image's size. The paper uses p = 1, 2, 4 for conv layers 1, 2, 3:
the deeper the layer, the more a high p lets the strongest cells stand out. The NIN's blocks
take the same mapping, p = 1, 2, 4 for blocks 1, 2, 3, and blocks 4 and 5 keep p = 4, the
paper's largest (it gives none beyond; doubling again would leave one cell per map).
A block's output is read after its ReLU (and block 1's / block 2's pooling), so |a| = a there.

Two measures no reference reports, both a Pearson correlation between two maps over the
image's pixels, averaged over images:
- equivariance (the paper's Figure 6): A(rot_r(x)) turned back by -r against A(x), for
  r = 90, 180, 270 degrees; 1 when the network looks at the same places whatever the turn;
- similarity (Figure 3): one network's A(x) against another's, block by block.
Each comes with a control: the same correlation between maps of two different images
(image i against image i+1), which is what shared position biases alone (the centre, the
borders) would score. A constant map (no variation) correlates 0 with anything.

Torch only: no MLflow, no DVC, no files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rotnet.registry import ATTENTION_POWERS
from rotnet.rotations import rotate

TURNS = (90, 180, 270)  # the rotations equivariance is measured for, degrees counter-clockwise
EPS = 1e-6  # a map whose centred, max-scaled values have a smaller norm is constant


def attention_power(block: int) -> int:
    """p of block `block` (1-based)."""
    return ATTENTION_POWERS[block]


def attention_from_activations(activations: torch.Tensor, power: int) -> torch.Tensor:
    """N×C×h×w activations -> N×h×w: Σ_c |a_c|^p at each cell."""
    return activations.abs().pow(power).sum(dim=1)


@torch.no_grad()
def attention_maps(backbone, images: torch.Tensor) -> list[torch.Tensor]:
    """N×H×W attention map of every block of `backbone` (a `NINBackbone`, or anything with
    `block_outputs`) on normalised N×C×H×W `images`, upsampled to H×W; eval mode."""
    was_training = backbone.training
    backbone.eval()
    try:
        outputs = backbone.block_outputs(images)
    finally:
        backbone.train(was_training)
    size = images.shape[-2:]
    maps = []
    for block, activations in enumerate(outputs, start=1):
        cells = attention_from_activations(activations.float(), attention_power(block))
        maps.append(F.interpolate(cells[:, None], size=size, mode="bilinear",
                                  align_corners=False)[:, 0])
    return maps


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of N×H×W maps over their pixels (N values)."""
    a, b = (_centred(m.flatten(1).double()) for m in (a, b))
    denominator = a.norm(dim=1) * b.norm(dim=1)
    return torch.where(denominator > EPS, (a * b).sum(dim=1) / denominator.clamp_min(EPS),
                       torch.zeros_like(denominator))


def _centred(maps: torch.Tensor) -> torch.Tensor:
    """Each row scaled by its largest magnitude (so tiny maps are not taken for constant
    ones), then minus its mean."""
    maps = maps / maps.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    return maps - maps.mean(dim=1, keepdim=True)


def turn_maps(maps: torch.Tensor, degrees: int) -> torch.Tensor:
    """N×H×W maps turned counter-clockwise by a multiple of 90 degrees (as `rotate`)."""
    return rotate(maps[:, None], degrees)[:, 0]


@dataclass(frozen=True)
class Score:
    """One measure of one block: its mean correlation and the different-images control."""

    mean: float
    control: float
    images: int


def _score(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Score:
    """Mean correlation over (map, map) pairs; the control pairs image i with image i+1."""
    matched = torch.cat([correlation(a, b) for a, b in pairs])
    control = torch.cat([correlation(a, b.roll(1, dims=0)) for a, b in pairs])
    return Score(float(matched.mean()), float(control.mean()) if len(pairs[0][0]) > 1 else math.nan,
                 len(pairs[0][0]))


def rotated_back_maps(backbone, images: torch.Tensor) -> dict[int, list[torch.Tensor]]:
    """For each angle 0, 90, 180, 270: every block's maps of the turned images, turned back."""
    return {angle: [turn_maps(m, -angle % 360) for m in
                    attention_maps(backbone, rotate(images, angle) if angle else images)]
            for angle in (0, *TURNS)}


def equivariance(backbone, images: torch.Tensor, batch: int = 250) -> list[Score]:
    """Per block: correlation of A(rot_r(x)) turned back with A(x), over images and r in TURNS."""
    pairs_per_block: list[list] = []
    for chunk in images.split(batch):
        turned = rotated_back_maps(backbone, chunk)
        for block, upright in enumerate(turned[0]):
            if block == len(pairs_per_block):
                pairs_per_block.append([])
            pairs_per_block[block] += [(turned[r][block], upright) for r in TURNS]
    return [_score(pairs) for pairs in pairs_per_block]


def similarity(first, second, images: torch.Tensor, batch: int = 250) -> list[Score]:
    """Per block both backbones have: correlation of `first`'s maps with `second`'s."""
    pairs_per_block: list[list] = []
    for chunk in images.split(batch):
        shared = list(zip(attention_maps(first, chunk), attention_maps(second, chunk)))
        for block, pair in enumerate(shared):
            if block == len(pairs_per_block):
                pairs_per_block.append([])
            pairs_per_block[block].append(pair)
    return [_score(pairs) for pairs in pairs_per_block]


def normalised_map(attention: torch.Tensor) -> torch.Tensor:
    """One H×W map scaled to [0, 1] (a constant map: all 0), for display."""
    low, high = attention.min(), attention.max()
    return (attention - low) / (high - low) if high > low else torch.zeros_like(attention)


def filter_tiles(weight: torch.Tensor, columns: int | None = None, gap: int = 1) -> torch.Tensor:
    """First-layer filters (O×C×k×k) as one H×W×C mosaic in [0, 1]: each filter scaled on its
    own min..max (so weak and strong filters both show), `columns` per row (default: a square),
    `gap` pixels of white between them."""
    count, channels, k, _ = weight.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    step = k + gap
    mosaic = torch.ones(rows * step - gap, columns * step - gap, channels)
    for index, kernel in enumerate(weight.detach().float().cpu()):
        row, column = divmod(index, columns)
        tile = normalised_map(kernel).permute(1, 2, 0)
        mosaic[row * step:row * step + k, column * step:column * step + k] = tile
    return mosaic


def one_per_class(labels: torch.Tensor, seed: int) -> list[int]:
    """One index per class present in `labels` (in class order), drawn with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    chosen: dict[int, int] = {}
    for index in order.tolist():
        chosen.setdefault(int(labels[index]), index)
    return [chosen[label] for label in sorted(chosen)]


def seeded_sample(count: int, size: int, seed: int) -> torch.Tensor:
    """`size` of `count` indices (all when fewer), drawn with `seed`, in ascending order."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:size].sort().values
