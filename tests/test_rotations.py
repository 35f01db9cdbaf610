import math

import pytest
import torch
import torch.nn.functional as F

from rotnet.errors import RotnetError
from rotnet.rotations import ROTATION_SETS, central_crop_scale, rotate, rotate_batch, rotation_set

SIZE = 32


def blob(row: float, col: float, size: int = SIZE, sigma: float = 1.5) -> torch.Tensor:
    """1 x 1 x size x size Gaussian blob centred at (row, col)."""
    r = torch.arange(size, dtype=torch.float32)[:, None]
    c = torch.arange(size, dtype=torch.float32)[None, :]
    return torch.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))[None, None]


def centroid(view: torch.Tensor) -> tuple[float, float]:
    """(row, col) of the intensity centroid of a 1 x 1 x H x W image."""
    img = view[0, 0]
    r = torch.arange(img.shape[0], dtype=torch.float32)[:, None]
    c = torch.arange(img.shape[1], dtype=torch.float32)[None, :]
    total = img.sum()
    return float((img * r).sum() / total), float((img * c).sum() / total)


def polar(view: torch.Tensor) -> tuple[float, float]:
    """Counter-clockwise angle (degrees, 0 = right, 90 = up) and radius of the centroid."""
    row, col = centroid(view)
    centre = (view.shape[-1] - 1) / 2
    dy, dx = centre - row, col - centre  # y up, as displayed
    return math.degrees(math.atan2(dy, dx)), math.hypot(dx, dy)


@pytest.mark.parametrize("name", list(ROTATION_SETS))
def test_shapes_labels_and_order(name):
    rset = rotation_set(name)
    x = torch.rand(3, 2, SIZE, SIZE)
    out, labels = rotate_batch(x, rset)
    k = len(rset)
    assert k == len(ROTATION_SETS[name])
    assert out.shape == (3 * k, 2, SIZE, SIZE)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [i for i in range(k) for _ in range(3)]
    # rotation-major: block k holds every image turned by angles[k]
    for i, angle in enumerate(rset.angles):
        expected = rotate(x, angle, crop=rset.needs_crop)
        assert torch.equal(out[i * 3:(i + 1) * 3], expected)


def test_four_rotations_are_exact_rot90():
    x = torch.rand(5, 3, SIZE, SIZE)
    out, _ = rotate_batch(x, rotation_set("4"))
    for k in range(4):
        assert torch.equal(out[k * 5:(k + 1) * 5], torch.rot90(x, k, dims=(-2, -1)))
    assert torch.equal(rotate(out[5:10], 270), x)


def test_two_sets():
    x = torch.rand(2, 1, SIZE, SIZE)
    assert rotation_set("2").angles == (0, 180)
    assert rotation_set("2-perp").angles == (90, 270)
    out, labels = rotate_batch(x, rotation_set("2-perp"))
    assert labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(out[:2], torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(out[2:], torch.rot90(x, 3, dims=(-2, -1)))


def test_direction_is_counter_clockwise():
    middle = (SIZE - 1) / 2
    row, col = centroid(rotate(blob(3, middle), 90))  # blob near the top centre...
    assert col < 4 and abs(row - middle) < 0.5  # ...ends up on the left


def test_eight_set_has_no_empty_corner():
    out, _ = rotate_batch(torch.ones(2, 3, SIZE, SIZE), rotation_set("8"))
    assert out.shape == (16, 3, SIZE, SIZE)
    assert out.min() > 1 - 1e-5 and out.max() < 1 + 1e-5


def test_eight_set_views_are_rot90_of_two_resamples():
    x = torch.rand(2, 3, SIZE, SIZE)
    out, _ = rotate_batch(x, rotation_set("8"))
    views = out.view(8, 2, 3, SIZE, SIZE)
    for k in range(8):
        assert torch.equal(views[k], torch.rot90(views[k % 2], k // 2, dims=(-2, -1)))


def test_eight_set_zero_view_is_central_crop_scaled_up():
    side = math.floor(SIZE / math.sqrt(2))
    assert central_crop_scale(SIZE) * SIZE == side == 22
    x = torch.rand(2, 3, SIZE, SIZE)
    zero_view = rotate_batch(x, rotation_set("8"))[0][:2]
    lo = (SIZE - side) // 2
    crop = x[..., lo:lo + side, lo:lo + side]
    scaled = F.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    # The outermost output pixels sample just past the crop edge (interpolate clamps
    # there instead), so compare the interior.
    assert torch.allclose(zero_view[..., 1:-1, 1:-1], scaled[..., 1:-1, 1:-1], atol=1e-5)


def test_eight_set_45_view_turns_the_content():
    x = blob(9, 20)  # off-centre, inside the central crop
    out, _ = rotate_batch(x, rotation_set("8"))
    angle0, radius0 = polar(out[0:1])
    angle45, radius45 = polar(out[1:2])
    assert abs((angle45 - angle0) - 45) < 3
    assert abs(radius45 - radius0) < 0.5
    # the crop scales content up by SIZE / 22 about the centre
    _, radius = polar(x)
    assert abs(radius0 / radius - SIZE / 22) < 0.05


def test_unknown_set_name():
    with pytest.raises(RotnetError, match="2-perp"):
        rotation_set("3")


def test_non_square_images_rejected():
    with pytest.raises(RotnetError):
        rotate_batch(torch.rand(1, 3, 32, 30), rotation_set("4"))


@pytest.mark.parametrize("name", ["4", "8"])
def test_channels_last_and_single_channel(name):
    rset = rotation_set(name)
    x = torch.rand(4, 3, SIZE, SIZE)
    plain, _ = rotate_batch(x, rset)
    cl, _ = rotate_batch(x.contiguous(memory_format=torch.channels_last), rset)
    assert torch.allclose(plain, cl, atol=1e-6)
    gray, labels = rotate_batch(x[:, :1], rset)
    assert gray.shape == (4 * len(rset), 1, SIZE, SIZE)
    assert torch.allclose(gray, plain[:, :1], atol=1e-6)


def test_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, labels = rotate_batch(torch.rand(2, 3, SIZE, SIZE), rotation_set("8"))
    assert out.shape == (16, 3, SIZE, SIZE) and labels.shape == (16,)
