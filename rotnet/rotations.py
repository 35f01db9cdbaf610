"""Rotation sets and batched rotation of square images.

Convention: angles are in degrees, counter-clockwise as the image is displayed
(row 0 at the top), the same direction as `torch.rot90(x, k, dims=(-2, -1))`.
A rotation set's labels are 0..K-1 in the order of its angles.

Sets whose angles are all multiples of 90 degrees ("4", "2", "2-perp") are
rotated exactly with `torch.rot90`: no interpolation, nothing to give the angle
away but the content.

Sets holding other angles (the "8" set, 45-degree steps) need interpolation,
and a 45-degree turn leaves empty corners. Every view of such a set is treated
alike, so that neither blur nor border reveals the angle:
  1. one bilinear resample (`affine_grid` + `grid_sample`, align_corners=False)
     of the central square of side floor(H / sqrt(2)) pixels, the largest one
     with no empty corner at 45 degrees, turned by the angle's remainder modulo
     90 (0 or 45) and scaled back up to H x W;
  2. then an exact `rot90` by the angle's whole quarter turns.
So 90/180/270 are rot90s of the 0 view and 135/225/315 rot90s of the 45 view:
every image goes through the same crop and exactly one interpolation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rotnet.errors import RotnetError
from rotnet.registry import ROTATION_SETS


@dataclass(frozen=True)
class RotationSet:
    name: str
    angles: tuple[int, ...]  # degrees, counter-clockwise; label k is angles[k]

    def __len__(self) -> int:
        return len(self.angles)

    @property
    def needs_crop(self) -> bool:
        """True when some angle is not a multiple of 90 (so every view is cropped)."""
        return any(angle % 90 for angle in self.angles)


def rotation_set(name: str) -> RotationSet:
    """The rotation set called `name`; RotnetError for an unknown name."""
    if name not in ROTATION_SETS:
        valid = ", ".join(repr(n) for n in ROTATION_SETS)
        raise RotnetError(f"unknown rotation set {name!r}; choose one of {valid}")
    return RotationSet(name, ROTATION_SETS[name])


def central_crop_scale(size: int) -> float:
    """Side of the 45-degree-safe central crop, as a fraction of the image side.

    floor(size / sqrt(2)) pixels, computed with integers so it is exact.
    """
    return math.isqrt(size * size // 2) / size


def _check_square(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise RotnetError(f"rotations need square N x C x H x W images, got shape {tuple(images.shape)}")


def _crop_turn(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Central floor(H/sqrt(2)) square turned counter-clockwise by `degrees`, scaled to H x W."""
    scale = central_crop_scale(images.shape[-1])
    rad = math.radians(degrees)
    cos, sin = math.cos(rad) * scale, math.sin(rad) * scale
    # affine_grid maps output coordinates (x right, y down) to input ones, so it
    # takes the inverse of the counter-clockwise turn.
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype, device=images.device)
    theta = theta.expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # zeros padding: any sample off the image would show as a dark corner
    # (which the tests check never happens).
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def _rotate_with(images: torch.Tensor, angle: int, crop: bool, bases: dict) -> torch.Tensor:
    """One view; `bases` caches the resampled views by remainder so each is computed once."""
    quarters, rest = divmod(angle, 90)
    if rest not in bases:
        bases[rest] = _crop_turn(images, rest) if crop or rest else images
    return torch.rot90(bases[rest], quarters, dims=(-2, -1))


def rotate(images: torch.Tensor, angle: int, crop: bool = False) -> torch.Tensor:
    """Rotate N x C x H x W images counter-clockwise by `angle` degrees.

    Multiples of 90 are exact rot90s unless `crop` is set; any other angle (or
    `crop=True`) takes the central-crop treatment described in the module docstring.
    """
    _check_square(images)
    return _rotate_with(images, angle, crop, {})


def rotate_batch(images: torch.Tensor, rset: RotationSet) -> tuple[torch.Tensor, torch.Tensor]:
    """All K rotations of a batch, rotation-major, on the images' device.

    Returns (rotated, labels): rotated[k * N + n] is image n turned by
    rset.angles[k], labels[k * N + n] == k (int64).
    """
    _check_square(images)
    n = images.shape[0]
    bases: dict = {}
    views = [_rotate_with(images, angle, rset.needs_crop, bases) for angle in rset.angles]
    labels = torch.arange(len(rset), device=images.device).repeat_interleave(n)
    return torch.cat(views), labels
