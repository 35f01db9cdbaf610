"""A generated offline data set: ten kinds of simple drawn objects that stand upright.

It is the project's default and test data, since CIFAR-10 needs a download. Every
class has a clear "up" (roof, canopy, head, wheels at the bottom...), and no shape
is symmetric under a 90° or 180° turn, nor under a vertical mirror (the training
augmentation flips horizontally, and a horizontal flip followed by a 180° turn is a
vertical mirror). So telling a 0/90/180/270° rotation apart is well posed, and
the class labels mean something for the probes.

Each shape is a union of primitives (rectangles, trapezoids, ellipses, thick line
segments), minus a few holes, in object coordinates: x to the right, y up, the
object inside about [-0.85, 0.85]². The part sizes vary per image (four random
numbers in [-1, 1] per image stretch the parts), and so does the aspect ratio.

The set is meant to be hard enough that a small network does not solve it outright:
an image draws its object with a wide range of scale (0.55–1.0), a shift that can
push it partly out of frame, a tilt of up to ±15°, and colours of low and variable
contrast. Behind it lies a cluttered background: a low-frequency colour texture, a
lighting gradient, and a few distractor ellipses and bars in random colours at
random angles; sometimes one more small distractor lies in front of the object,
occluding part of it. Colour jitter and pixel noise go on top. Every distractor and
texture has a random orientation, so only the object tells which way is up.

Rendering evaluates the object shapes on a 2× supersampled pixel grid for all
images of a class at once, then averages each 2×2 block, which anti-aliases the
edges; distractors are anti-aliased from an approximate signed distance instead.
"""

from __future__ import annotations

import numpy as np
import torch

CLASSES = ("house", "tree", "person", "car", "mushroom", "lamp", "umbrella", "cup", "rocket", "letter-F")

SUPERSAMPLE = 2
CHUNK = 1024  # images rendered at a time: bounds memory; fixed, so output never depends on it
MAX_TILT_DEG = 15.0  # far from 90°, so the tilt never looks like a rotation label
MIN_SCALE, MAX_SCALE = 0.55, 1.0
MAX_SHIFT = 0.25  # in units of half the image width: about 4 px at 32×32
MAX_ASPECT = 1.25  # the object is stretched horizontally by a in [1/MAX_ASPECT, MAX_ASPECT], vertically by 1/a
MIN_CONTRAST, MAX_CONTRAST = 0.2, 0.5  # mean foreground/background difference per channel
COLOUR_JITTER = 0.12  # per-channel offsets of foreground and background colours
TEXTURE_GRID = 5  # the background texture is bilinear noise from a TEXTURE_GRID² lattice
MAX_TEXTURE = 0.12
MAX_LIGHT = 0.12
DISTRACTORS = 4  # slots behind the object; each is filled with probability DISTRACTOR_P
DISTRACTOR_P = 0.5
OCCLUDER_P = 0.3  # chance of one small distractor in front of the object
NOISE_STD = 0.04
PARAMS = 4  # random shape-variation numbers per image


# Primitives: boolean masks over arrays x, y of object coordinates. Bounds may be
# arrays broadcasting against x and y (one value per image).

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


# The ten classes, in the order of CLASSES. p0..p3 are per-image numbers in [-1, 1]
# (arrays m×1×1) that vary the parts; the variations keep every class's "up".

def _house(x, y, p0, p1, p2, p3):
    half = 0.55 + 0.12 * p0
    eaves = 0.1 + 0.15 * p1
    walls = _rect(x, y, -half, half, -0.8, eaves)
    roof = _trapezoid(x, y, eaves, 0.8, half + 0.2 + 0.08 * p2, 0.0)
    door_half = 0.12 + 0.05 * p3
    door = _rect(x, y, -door_half + 0.2 * p2, door_half + 0.2 * p2, -0.8, -0.35 + 0.1 * p0)
    return (walls | roof) & ~door


def _tree(x, y, p0, p1, p2, p3):
    top = -0.2 + 0.1 * p1
    trunk_half = 0.1 + 0.04 * p3
    trunk = _rect(x, y, -trunk_half, trunk_half, -0.85, top)
    canopy = _ellipse(x, y, 0.0, 0.25 + 0.08 * p1, 0.6 + 0.18 * p0, 0.55 + 0.12 * p2)
    return trunk | canopy


def _person(x, y, p0, p1, p2, p3):
    head = _ellipse(x, y, 0.0, 0.62, 0.2 + 0.05 * p0, 0.2 + 0.05 * p0)
    torso = _bar(x, y, 0.0, 0.4, 0.0, -0.25, 0.09 + 0.03 * p3)
    arm_y = 0.3 + 0.08 * p1
    arms = _bar(x, y, -0.55, arm_y - 0.15 * p2, 0.55, arm_y - 0.15 * p2 * np.sign(p3 + 1e-6), 0.07)
    spread = 0.4 + 0.12 * p2
    legs = _bar(x, y, 0.0, -0.25, -spread, -0.8, 0.08) | _bar(x, y, 0.0, -0.25, spread, -0.8, 0.08)
    return head | torso | arms | legs


def _car(x, y, p0, p1, p2, p3):
    half = 0.85 - 0.15 * np.abs(p0)
    roof = 0.05 + 0.12 * p1
    body = _rect(x, y, -half, half, -0.4, roof - 0.02)
    cabin = _trapezoid(x, y, roof - 0.02, roof + 0.37, 0.5, 0.3 + 0.1 * p3, cx=0.15 * p2)
    r = 0.22 + 0.05 * p3
    wx = half - 0.35
    wheels = _ellipse(x, y, -wx, -0.42, r, r) | _ellipse(x, y, wx, -0.42, r, r)
    hubs = _ellipse(x, y, -wx, -0.42, 0.08, 0.08) | _ellipse(x, y, wx, -0.42, 0.08, 0.08)
    return (body | cabin | wheels) & ~hubs


def _mushroom(x, y, p0, p1, p2, p3):
    base = 0.0 + 0.12 * p2
    cap = _ellipse(x, y, 0.0, base, 0.82 - 0.15 * np.abs(p0), 0.72 - 0.12 * np.abs(p1)) & (y >= base)
    stem = _trapezoid(x, y, -0.8, base, 0.3 + 0.08 * p3, 0.2 + 0.05 * p3)
    return cap | stem


def _lamp(x, y, p0, p1, p2, p3):
    low = 0.15 + 0.12 * p1
    shade = _trapezoid(x, y, low, 0.8, 0.55 + 0.12 * p0, 0.25 + 0.08 * p2)
    pole = _rect(x, y, -0.06, 0.06, -0.65, low)
    base_half = 0.45 + 0.12 * p3
    base = _rect(x, y, -base_half, base_half, -0.82, -0.65)
    return shade | pole | base


def _umbrella(x, y, p0, p1, p2, p3):
    rx, ry = 0.85 - 0.1 * np.abs(p0), 0.75 - 0.15 * np.abs(p1)
    canopy = _ellipse(x, y, 0.0, 0.05, rx, ry) & (y >= 0.05)
    sx = rx * 0.67
    scallops = _ellipse(x, y, -sx, 0.05, 0.24, 0.14) | _ellipse(x, y, sx, 0.05, 0.24, 0.14)
    shaft = _rect(x, y, -0.05, 0.05, -0.6, 0.1)
    hr = 0.22 + 0.05 * p2
    hook = _ellipse(x, y, hr - 0.05, -0.6, hr, hr) & ~_ellipse(x, y, hr - 0.05, -0.6, hr - 0.1, hr - 0.1) & (y <= -0.6)
    return (canopy & ~scallops) | shaft | hook


def _cup(x, y, p0, p1, p2, p3):
    top = 0.6 - 0.12 * np.abs(p1)
    body = _trapezoid(x, y, -0.55, top, 0.3 + 0.06 * p0, 0.48 + 0.06 * p0, cx=-0.15)
    opening = _ellipse(x, y, -0.15, top, 0.36 + 0.06 * p0, 0.08)
    hx = 0.3 + 0.06 * p0
    hrx, hry = 0.35 + 0.05 * p2, 0.3 + 0.05 * p3
    handle = _ellipse(x, y, hx, 0.05, hrx, hry) & ~_ellipse(x, y, hx, 0.05, hrx - 0.15, hry - 0.14)
    saucer = _rect(x, y, -0.7, 0.45, -0.75, -0.6)
    return (body & ~opening) | (handle & (x >= hx - 0.1)) | saucer


def _rocket(x, y, p0, p1, p2, p3):
    half = 0.18 + 0.05 * p0
    top = 0.35 + 0.1 * p1
    hull = _rect(x, y, -half, half, -0.55, top)
    nose = _trapezoid(x, y, top, 0.85, half, 0.0)
    fins = _trapezoid(x, y, -0.82, -0.3 + 0.1 * p3, 0.5 + 0.12 * p2, half)
    window = _ellipse(x, y, 0.0, 0.1, 0.09, 0.09)
    return (hull | nose | fins) & ~window


def _letter_f(x, y, p0, p1, p2, p3):
    left = -0.45 + 0.1 * p3
    right = -0.2 + 0.08 * p0
    stem = _rect(x, y, left, right, -0.85, 0.8)
    top = _rect(x, y, left, 0.5 + 0.12 * p1, 0.55, 0.8)
    mid = 0.0 + 0.12 * p2
    middle = _rect(x, y, left, 0.3 + 0.12 * p1, mid - 0.08, mid + 0.15)
    return stem | top | middle


SHAPES = (_house, _tree, _person, _car, _mushroom, _lamp, _umbrella, _cup, _rocket, _letter_f)


def _pixel_centres(size: int) -> np.ndarray:
    """Pixel centres across [-1, 1], float32."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0).astype(np.float32)


def _coverage(label: int, scale, aspect, tilt, shift_x, shift_y, params, size: int) -> np.ndarray:
    """Fraction of each pixel that the class's shape covers: float32 m×size×size."""
    fine = _pixel_centres(size * SUPERSAMPLE)
    x = fine[None, None, :]  # columns, left to right
    y = -fine[None, :, None]  # rows, top to bottom: y up
    cos, sin = np.cos(tilt)[:, None, None], np.sin(tilt)[:, None, None]
    scale = scale[:, None, None]
    aspect = aspect[:, None, None]
    dx, dy = x - shift_x[:, None, None], y - shift_y[:, None, None]
    # Undo the image's tilt, shift, scale and stretch to land in object coordinates.
    x_obj = (cos * dx + sin * dy) / (scale * aspect)
    y_obj = (cos * dy - sin * dx) * (aspect / scale)
    p = [params[:, k, None, None] for k in range(PARAMS)]
    inside = SHAPES[label](x_obj, y_obj, *p).astype(np.float32)
    m = inside.shape[0]
    return inside.reshape(m, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))


def _blob_alpha(x, y, blobs, index, chunk, size: int, ellipse: bool) -> np.ndarray:
    """Anti-aliased coverage m×size×size of one rotated ellipse or rectangle per image,
    times whether the slot is used."""
    pick = (lambda key: blobs[key][chunk]) if index is None else (lambda key: blobs[key][index, chunk])
    angle, centre, radii = pick("angle"), pick("centre"), pick("radii")
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx, dy = x - centre[:, 0, None, None], y - centre[:, 1, None, None]
    u = cos * dx + sin * dy
    v = cos * dy - sin * dx
    rx, ry = radii[:, 0, None, None], radii[:, 1, None, None]
    if ellipse:  # (q - 1) / 2 approximates sqrt(q) - 1 near the edge, where it matters
        distance = ((u / rx) ** 2 + (v / ry) ** 2 - 1.0) * (0.5 * np.minimum(rx, ry))
    else:
        distance = np.maximum(np.abs(u) - rx, np.abs(v) - ry)
    alpha = np.clip(0.5 - distance * (size / 2.0), 0.0, 1.0)
    alpha *= pick("used")[:, None, None]
    return alpha


def _random_blobs(rng, n: int, shape: tuple, small: bool) -> dict:
    """Parameters of one distractor per image (drawn whether used or not: fixed stream)."""
    long = rng.uniform(0.08, 0.22 if small else 0.45, shape + (n,)).astype(np.float32)
    thin = long * rng.uniform(0.15, 1.0, shape + (n,)).astype(np.float32)
    return {
        "centre": rng.uniform(-1.0, 1.0, shape + (n, 2)).astype(np.float32),
        "angle": rng.uniform(0.0, np.pi, shape + (n,)).astype(np.float32),
        "radii": np.stack([long, thin], axis=-1),
        "colour": rng.uniform(0.0, 1.0, shape + (n, 3)).astype(np.float32),
        "used": rng.random(shape + (n,)) < (OCCLUDER_P if small else DISTRACTOR_P),
    }


def _bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Upsample m×c×g×g lattices to m×c×size×size, lattice corners at the image corners."""
    g = grid.shape[-1]
    pos = np.linspace(0.0, g - 1.0, size, dtype=np.float32)
    lo = np.minimum(pos.astype(np.int64), g - 2)
    w = (pos - lo).astype(np.float32)
    rows = grid[..., lo, :] * (1 - w)[:, None] + grid[..., lo + 1, :] * w[:, None]
    return rows[..., lo] * (1 - w) + rows[..., lo + 1] * w


def _layer_weights(x, y, labels, chunk: slice, front: dict, behind: dict, shapes: tuple,
                   size: int) -> np.ndarray:
    """Each layer's weight per pixel (m × layers × size²) for the images in `chunk`: its
    alpha times the transparency of all layers above it. `shapes`: the objects' (scale,
    aspect, tilt, shift, params)."""
    scale, aspect, tilt, shift, params = shapes
    m = chunk.stop - chunk.start
    alphas = np.empty((m, DISTRACTORS + 3, size, size), dtype=np.float32)
    alphas[:, 0] = _blob_alpha(x, y, front, None, chunk, size, ellipse=False)
    for label in range(len(CLASSES)):
        members = np.flatnonzero(labels[chunk] == label)
        if members.size:
            i = members + chunk.start
            alphas[members, 1] = _coverage(label, scale[i], aspect[i], tilt[i], shift[0, i], shift[1, i],
                                           params[i], size)
    for k in range(DISTRACTORS):  # distractor 0 lies lowest; even ones are ellipses, odd ones bars
        alphas[:, 1 + DISTRACTORS - k] = _blob_alpha(x, y, behind, k, chunk, size, ellipse=k % 2 == 0)
    alphas[:, -1] = 1.0
    clear = np.ones((m, size, size), dtype=np.float32)
    for layer in range(DISTRACTORS + 3):
        alphas[:, layer] *= clear  # now the layer's weight
        clear -= alphas[:, layer]
    return alphas.reshape(m, DISTRACTORS + 3, size * size)


def generate_objects(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (uint8 n×3×size×size) and labels (int64 n), balanced over CLASSES.

    Bit-identical for the same (n, seed, size).
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    scale = rng.uniform(MIN_SCALE, MAX_SCALE, n).astype(np.float32)
    aspect = np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT), n)).astype(np.float32)
    tilt = np.deg2rad(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG, n)).astype(np.float32)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, (2, n)).astype(np.float32)
    params = rng.uniform(-1.0, 1.0, (n, PARAMS)).astype(np.float32)
    # Object and background around a random mid grey, one lighter and one darker by a
    # random contrast, each with its own colour jitter. Which one is the object is a
    # coin toss, so brightness says nothing of class.
    mid = rng.uniform(0.3, 0.7, (n, 1)).astype(np.float32)
    contrast = rng.uniform(MIN_CONTRAST, MAX_CONTRAST, (n, 1)).astype(np.float32)
    sign = np.where(rng.random((n, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
    foreground = mid + sign * contrast / 2 + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, (n, 3)).astype(np.float32)
    background = mid - sign * contrast / 2 + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, (n, 3)).astype(np.float32)
    # Lighting from a uniformly random direction, so it hints nothing about "up".
    light_angle = rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)
    light_strength = rng.uniform(0.0, MAX_LIGHT, n).astype(np.float32)
    texture_strength = rng.uniform(0.0, MAX_TEXTURE, n).astype(np.float32)
    behind = _random_blobs(rng, n, (DISTRACTORS,), small=False)
    front = _random_blobs(rng, n, (), small=True)
    noise_std = rng.uniform(0.5 * NOISE_STD, 1.5 * NOISE_STD, n).astype(np.float32)

    images = np.empty((n, 3, size, size), dtype=np.uint8)
    centres = _pixel_centres(size)
    x, y = centres[None, None, :], -centres[None, :, None]
    # Layers from the top down: the occluder, the object, the distractors behind it,
    # the background. Each layer's colour weighs alpha × the transparency of all
    # layers above it, so compositing is one small matrix product per image.
    colours = np.concatenate([front["colour"][:, None], foreground[:, None],
                              behind["colour"][::-1].transpose(1, 0, 2), background[:, None]], axis=1)
    for start in range(0, n, CHUNK):
        chunk = slice(start, min(start + CHUNK, n))
        m = chunk.stop - start
        weights = _layer_weights(x, y, labels, chunk, front, behind,
                                 (scale, aspect, tilt, shift, params), size)
        pixels = np.matmul(colours[chunk].transpose(0, 2, 1), weights).reshape(m, 3, size, size)
        ramp = (np.cos(light_angle[chunk])[:, None, None] * x - np.sin(light_angle[chunk])[:, None, None] * y)
        lattice = rng.standard_normal((m, 3, TEXTURE_GRID, TEXTURE_GRID), dtype=np.float32)
        # Texture (a colour stain over the whole picture) and lighting share one pass.
        stain = _bilinear(lattice, size) * texture_strength[chunk][:, None, None, None]
        stain += (light_strength[chunk][:, None, None] * ramp)[:, None]
        pixels += stain
        # Uniform pixel noise of standard deviation noise_std (cheaper to draw than normal).
        noise = rng.random((m, 3, size, size), dtype=np.float32) - 0.5
        noise *= (np.sqrt(12.0) * noise_std[chunk]).astype(np.float32)[:, None, None, None]
        pixels += noise
        images[chunk] = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
