import pytest
import torch

from rotnet.augment import CropFlip, apply_crop_flip, draw_crop_flip, normalize

PAD = 4


def params(n: int, dy: int, dx: int, flip: bool) -> CropFlip:
    full = lambda v: torch.full((n,), v, dtype=torch.int64)  # noqa: E731
    return CropFlip(PAD, full(dy), full(dx), torch.full((n,), flip))


def test_centred_crop_without_flip_is_identity():
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(apply_crop_flip(x, params(3, PAD, PAD, False)), x)


def test_top_left_crop_shifts_down_right_with_zero_border():
    x = torch.rand(2, 3, 16, 16) + 0.5  # nowhere zero
    out = apply_crop_flip(x, params(2, 0, 0, False))
    assert torch.all(out[..., :PAD, :] == 0) and torch.all(out[..., :, :PAD] == 0)
    assert torch.equal(out[..., PAD:, PAD:], x[..., :-PAD, :-PAD])


def test_flip():
    x = torch.rand(2, 3, 16, 16)
    out = apply_crop_flip(x, params(2, PAD, PAD, True))
    assert torch.equal(out, x.flip(-1))


def test_per_sample_parameters():
    x = torch.rand(3, 2, 12, 12)
    p = CropFlip(PAD, torch.tensor([PAD, 0, 8]), torch.tensor([PAD, 8, 2]), torch.tensor([False, True, False]))
    out = apply_crop_flip(x, p)
    padded = torch.nn.functional.pad(x, (PAD,) * 4)
    for i in range(3):
        window = padded[i, :, p.dy[i]:p.dy[i] + 12, p.dx[i]:p.dx[i] + 12]
        assert torch.equal(out[i], window.flip(-1) if p.flip[i] else window)


def test_uint8_stays_uint8():
    x = torch.randint(1, 256, (2, 3, 16, 16), dtype=torch.uint8)
    p = draw_crop_flip(2, PAD, torch.Generator().manual_seed(0))
    out = apply_crop_flip(x, p)
    assert out.dtype == torch.uint8 and out.shape == x.shape


def test_same_seed_same_params_and_ranges():
    a = draw_crop_flip(1000, PAD, torch.Generator().manual_seed(7))
    b = draw_crop_flip(1000, PAD, torch.Generator().manual_seed(7))
    for name in ("dy", "dx", "flip"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.dy.dtype == torch.int64 and a.flip.dtype == torch.bool
    assert a.dy.min() == 0 and a.dy.max() == 2 * PAD and a.dx.max() == 2 * PAD
    assert 0.4 < a.flip.float().mean() < 0.6
    assert len(a) == 1000 and len(a[10:20]) == 10


def test_wrong_param_count():
    with pytest.raises(ValueError):
        apply_crop_flip(torch.rand(2, 3, 8, 8), params(3, 0, 0, False))


def test_normalize():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    out = normalize(x, mean, std)
    expected = (x.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)
