"""A generated offline data set: ten kinds of simple drawn objects that stand upright.

It is the project's default and test data, since CIFAR-10 needs a download. Every
class has a clear "up" (roof, canopy, head, wheels at the bottom...), and no shape
is symmetric under a 90° or 180° turn, nor under a vertical mirror (the training
augmentation flips horizontally, and a horizontal flip followed by a 180° turn is a
vertical mirror). So telling a 0/90/180/270° rotation apart is well posed, and
the class labels mean something for the probes.

Each shape is a union of primitives (rectangles, trapezoids, ellipses, thick line
segments), minus a few holes, in object coordinates: x to the right, y up, the
object inside [-0.85, 0.85]². An image draws it with a random scale, shift and
small tilt, random foreground and background colours of guaranteed contrast, a
random lighting gradient and mild pixel noise. Rendering evaluates the shapes on a
2× supersampled pixel grid for all images of a class at once, then averages each
2×2 block, which anti-aliases the edges.
"""

from __future__ import annotations

import numpy as np
import torch

CLASSES = ("house", "tree", "person", "car", "mushroom", "lamp", "umbrella", "cup", "rocket", "letter-F")

SUPERSAMPLE = 2
CHUNK = 1024  # images rendered at a time: bounds memory; fixed, so output never depends on it
MAX_TILT_DEG = 12.0  # far from 90°, so the tilt never looks like a rotation label
MAX_SHIFT = 0.15  # in units of half the image width: about 2.4 px at 32×32
NOISE_STD = 0.03


# Primitives: boolean masks over arrays x, y of object coordinates.

def _rect(x, y, x0, x1, y0, y1):
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _trapezoid(x, y, y0, y1, half_bottom, half_top, cx=0.0):
    """Horizontal parallel sides at y0 (bottom) and y1 (top); a triangle when one half-width is 0."""
    half = half_bottom + (half_top - half_bottom) * (y - y0) / (y1 - y0)
    return (y >= y0) & (y <= y1) & (np.abs(x - cx) <= half)


def _bar(x, y, x0, y0, x1, y1, half_width):
    """A thick line segment from (x0, y0) to (x1, y1) with round ends."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2 <= half_width ** 2


# The ten classes, in the order of CLASSES.

def _house(x, y):
    walls = _rect(x, y, -0.55, 0.55, -0.8, 0.1)
    roof = _trapezoid(x, y, 0.1, 0.8, 0.8, 0.0)
    door = _rect(x, y, -0.12, 0.12, -0.8, -0.35)
    return (walls | roof) & ~door


def _tree(x, y):
    trunk = _rect(x, y, -0.1, 0.1, -0.85, -0.2)
    canopy = _ellipse(x, y, 0.0, 0.25, 0.6, 0.55)
    return trunk | canopy


def _person(x, y):
    head = _ellipse(x, y, 0.0, 0.62, 0.2, 0.2)
    torso = _bar(x, y, 0.0, 0.4, 0.0, -0.25, 0.09)
    arms = _bar(x, y, -0.55, 0.3, 0.55, 0.3, 0.07)
    legs = _bar(x, y, 0.0, -0.25, -0.4, -0.8, 0.08) | _bar(x, y, 0.0, -0.25, 0.4, -0.8, 0.08)
    return head | torso | arms | legs


def _car(x, y):
    body = _rect(x, y, -0.85, 0.85, -0.4, 0.05)
    cabin = _trapezoid(x, y, 0.05, 0.42, 0.5, 0.3, cx=-0.05)
    wheels = _ellipse(x, y, -0.5, -0.42, 0.22, 0.22) | _ellipse(x, y, 0.5, -0.42, 0.22, 0.22)
    hubs = _ellipse(x, y, -0.5, -0.42, 0.08, 0.08) | _ellipse(x, y, 0.5, -0.42, 0.08, 0.08)
    return (body | cabin | wheels) & ~hubs


def _mushroom(x, y):
    cap = _ellipse(x, y, 0.0, 0.0, 0.82, 0.72) & (y >= 0.0)
    stem = _trapezoid(x, y, -0.8, 0.0, 0.3, 0.2)
    return cap | stem


def _lamp(x, y):
    shade = _trapezoid(x, y, 0.15, 0.8, 0.55, 0.25)
    pole = _rect(x, y, -0.06, 0.06, -0.65, 0.15)
    base = _rect(x, y, -0.45, 0.45, -0.82, -0.65)
    return shade | pole | base


def _umbrella(x, y):
    canopy = _ellipse(x, y, 0.0, 0.05, 0.85, 0.75) & (y >= 0.05)
    scallops = _ellipse(x, y, -0.57, 0.05, 0.24, 0.14) | _ellipse(x, y, 0.57, 0.05, 0.24, 0.14)
    shaft = _rect(x, y, -0.05, 0.05, -0.6, 0.1)
    hook = _ellipse(x, y, 0.17, -0.6, 0.22, 0.22) & ~_ellipse(x, y, 0.17, -0.6, 0.12, 0.12) & (y <= -0.6)
    return (canopy & ~scallops) | shaft | hook


def _cup(x, y):
    body = _trapezoid(x, y, -0.55, 0.6, 0.3, 0.48, cx=-0.15)
    opening = _ellipse(x, y, -0.15, 0.6, 0.36, 0.08)
    handle = _ellipse(x, y, 0.3, 0.05, 0.35, 0.3) & ~_ellipse(x, y, 0.3, 0.05, 0.2, 0.16)
    saucer = _rect(x, y, -0.7, 0.45, -0.75, -0.6)
    return (body & ~opening) | (handle & (x >= 0.2)) | saucer


def _rocket(x, y):
    hull = _rect(x, y, -0.18, 0.18, -0.55, 0.35)
    nose = _trapezoid(x, y, 0.35, 0.85, 0.18, 0.0)
    fins = _trapezoid(x, y, -0.82, -0.3, 0.5, 0.18)
    window = _ellipse(x, y, 0.0, 0.1, 0.09, 0.09)
    return (hull | nose | fins) & ~window


def _letter_f(x, y):
    stem = _rect(x, y, -0.45, -0.2, -0.85, 0.8)
    top = _rect(x, y, -0.45, 0.5, 0.55, 0.8)
    middle = _rect(x, y, -0.45, 0.3, -0.05, 0.18)
    return stem | top | middle


SHAPES = (_house, _tree, _person, _car, _mushroom, _lamp, _umbrella, _cup, _rocket, _letter_f)


def _pixel_centres(size: int) -> np.ndarray:
    """Pixel centres across [-1, 1], float32."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)


def _coverage(label: int, scale, tilt, shift_x, shift_y, size: int) -> np.ndarray:
    """Fraction of each pixel that the class's shape covers: float32 m×size×size."""
    fine = _pixel_centres(size * SUPERSAMPLE)
    x = fine[None, None, :]  # columns, left to right
    y = -fine[None, :, None]  # rows, top to bottom: y up
    cos, sin = np.cos(tilt)[:, None, None], np.sin(tilt)[:, None, None]
    scale = scale[:, None, None]
    dx, dy = x - shift_x[:, None, None], y - shift_y[:, None, None]
    # Undo the image's tilt, shift and scale to land in object coordinates.
    x_obj = (cos * dx + sin * dy) / scale
    y_obj = (cos * dy - sin * dx) / scale
    inside = SHAPES[label](x_obj, y_obj).astype(np.float32)
    m = inside.shape[0]
    return inside.reshape(m, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))


def generate_objects(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8 n×3×size×size) and labels (int64 n), balanced over CLASSES.

    Bit-identical for the same (n, seed, size).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    scale = rng.uniform(0.6, 1.0, n).astype(np.float32)
    tilt = np.deg2rad(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG, n)).astype(np.float32)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, (2, n)).astype(np.float32)
    # One colour light and one dark, each channel at least 0.2 apart: always visible,
    # and which one is the object is a coin toss, so brightness says nothing of class.
    light = rng.uniform(0.6, 1.0, (n, 3)).astype(np.float32)
    dark = rng.uniform(0.0, 0.4, (n, 3)).astype(np.float32)
    dark_object = rng.random(n) < 0.5
    foreground = np.where(dark_object[:, None], dark, light)
    background = np.where(dark_object[:, None], light, dark)
    # Lighting from a uniformly random direction, so it hints nothing about "up".
    light_angle = rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)
    light_strength = rng.uniform(0.0, 0.1, n).astype(np.float32)

    images = np.empty((n, 3, size, size), dtype=np.uint8)
    centres = _pixel_centres(size)
    for start in range(0, n, CHUNK):
        chunk = slice(start, min(start + CHUNK, n))
        alpha = np.empty((chunk.stop - start, size, size), dtype=np.float32)
        for label in range(len(CLASSES)):
            members = np.flatnonzero(labels[chunk] == label)
            if members.size:
                i = members + start
                alpha[members] = _coverage(label, scale[i], tilt[i], shift[0, i], shift[1, i], size)
        ramp = (np.cos(light_angle[chunk])[:, None, None] * centres[None, None, :]
                - np.sin(light_angle[chunk])[:, None, None] * centres[None, :, None])
        shade = (light_strength[chunk][:, None, None] * ramp)[:, None]
        alpha = alpha[:, None]
        pixels = (alpha * foreground[chunk][:, :, None, None]
                  + (1.0 - alpha) * background[chunk][:, :, None, None] + shade)
        pixels += NOISE_STD * rng.standard_normal(pixels.shape, dtype=np.float32)
        images[chunk] = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
