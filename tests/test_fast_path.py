"""The fast path (`precision: auto` + channels_last) learns the rotation pretext as well as
the plain path (fp32, NCHW): same config, seed, data and batch order, only the numerics differ.
`auto` is bf16 autocast where the CPU computes bf16 natively and fp32 elsewhere, so the test
costs the same on every machine (emulated bf16 would be 20x slower); the bf16 numerics on an
AVX2-only CPU are checked at a tiny size in test_hardware.py.

Sizes: a 3-block NIN at width 0.125 on 2560 generated images, 320 steps of 16 images × 4
rotations (small batches learn the most per image, and the fp32 NCHW run dominates the
time). Both runs end well above chance (25 %) but are not converged, so their rounding
differences grow into a gap like that between two seeds.

Tolerance: the two accuracies are measured on the same TEST images, but the runs'
mistakes differ, so we treat them as two independent estimates. Counting each image
(not each rotated copy, whose errors are correlated) once, the standard error of a
difference at p ≈ 0.65 over n = 500 images is sqrt(2 p (1 - p) / n) ≈ 3.0 points; the
test allows 3 of them (9 points). A broken fast path (e.g. bf16 underflow, a layout
bug) lands at or near chance, far outside that.
"""

import math
import time

import pytest

from rotnet.config import Config
from rotnet.data import load_data
from rotnet.experiments import pretrain
from rotnet.tracking import NullTracker

TRAIN, TEST = 2560, 500
CHANCE = 25.0


def rotation_accuracy(data, tmp_path, name, precision, channels_last, seed=0):
    config = Config.from_dict({
        "profile": "smoke",
        "data": {"train_size": TRAIN, "test_size": TEST},
        "runtime": {"device": "cpu", "precision": precision, "channels_last": channels_last,
                    "seed": seed, "log_every": 1000},
        "pretrain": {"blocks": 3, "rotations": "4", "width": 0.125, "snapshot_every": 0,
                     # 4 epochs × 1280 draws (wrapping the pool) = 320 steps; lr ÷5 twice.
                     "optim": {"epochs": 4, "batch_size": 16, "lr": 0.1, "milestones": [2, 3],
                               "epoch_samples": 1280}},
    })
    result = pretrain(config, out_dir=tmp_path / name, tracker=NullTracker(), data=data)
    return result.metrics["test_acc"]


@pytest.mark.slow
def test_fast_path_matches_plain_path(tmp_path):
    data = load_data("generated", train_size=TRAIN, test_size=TEST, seed=0)
    start = time.perf_counter()
    fast = rotation_accuracy(data, tmp_path, "fast", "auto", channels_last=True)
    plain = rotation_accuracy(data, tmp_path, "plain", "fp32", channels_last=False)
    print(f"rotation accuracy: fast {fast:.1f} %, plain {plain:.1f} % "
          f"({time.perf_counter() - start:.0f} s)")
    p = (fast + plain) / 200
    tolerance = 100 * 3 * math.sqrt(2 * p * (1 - p) / TEST)
    assert fast > CHANCE + 15 and plain > CHANCE + 15, (fast, plain)
    assert abs(fast - plain) <= tolerance, f"fast {fast:.1f} vs plain {plain:.1f} (±{tolerance:.1f})"
