"""Batched train-time augmentation on the device: random crop with zero padding,
horizontal flip, and normalisation.

The randomness is passed in: `draw_crop_flip` draws the parameters from a
(seeded, CPU) generator, `apply_crop_flip` only applies them. The training loop
can so draw a whole epoch's parameters up front, slice them per batch, and
resume exactly from a checkpoint.

Augment BEFORE `rotnet.rotations.rotate_batch`: the K rotated copies of an image
are then made from the same cropped and flipped image, so they share the crop
and flip as the protocol asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropFlip:
    """Per-sample crop offsets into the padded image and flip flags (CPU tensors)."""

    padding: int
    dy: torch.Tensor  # int64 in [0, 2 * padding]; dy == padding is no shift
    dx: torch.Tensor
    flip: torch.Tensor  # bool: flip horizontally after cropping

    def __len__(self) -> int:
        return self.dy.shape[0]

    def __getitem__(self, index) -> CropFlip:
        """The parameters of some samples, e.g. `params[start:stop]` for one batch."""
        return CropFlip(self.padding, self.dy[index], self.dx[index], self.flip[index])

    def to(self, device) -> CropFlip:
        """Move once per epoch, so batches slice device tensors (no copy per step)."""
        return CropFlip(self.padding, self.dy.to(device), self.dx.to(device), self.flip.to(device))


def draw_crop_flip(n: int, padding: int, generator: torch.Generator | None = None) -> CropFlip:
    """Draw crop offsets and flips for n samples (like RandomCrop(padding) + RandomHorizontalFlip)."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    return CropFlip(padding, dy, dx, flip)


def apply_crop_flip(images: torch.Tensor, params: CropFlip) -> torch.Tensor:
    """Crop and flip N x C x H x W images (any dtype, uint8 included) as `params` say.

    The images are zero-padded by `params.padding` on each side (zero is black in
    raw pixel space, as torchvision's RandomCrop pads), then each sample's H x W
    window at (dy, dx) is taken by one batched gather.
    """
    n, c, h, w = images.shape
    if len(params) != n:
        raise ValueError(f"{len(params)} crop/flip parameters for {n} images")
    device = images.device
    p = params.padding
    padded = F.pad(images, (p, p, p, p)) if p else images
    dy = params.dy.to(device, non_blocking=True)
    dx = params.dx.to(device, non_blocking=True)
    flip = params.flip.to(device, non_blocking=True)

    rows = dy[:, None] + torch.arange(h, device=device)  # N x H
    cols = dx[:, None] + torch.arange(w, device=device)  # N x W
    # A horizontal flip of the window is the same columns read right to left.
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    chans = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """float32 (x / 255 - mean) / std per channel, for raw pixels in [0, 255].

    mean and std are in [0, 1] units, one value per channel.
    """
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {images.shape[1]} channels")
    # as_tensor: no copy when the caller already holds device tensors (the training loop does).
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).reshape(-1, 1, 1)
    return (images.to(torch.float32) / 255 - m) / s
