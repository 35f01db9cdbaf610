"""rotnet.spread: mean, standard deviation, n and test-set standard error of a cell's
replicates."""

import math

import pytest

from rotnet.spread import Spread, spread_of, standard_error


def test_mean_sample_sd_and_n():
    s = spread_of([80.0, 82.0, 84.0], test_images=None)
    assert (s.n, s.mean) == (3, 82.0)
    assert s.sd == pytest.approx(2.0)  # sample sd (n - 1): population sd would be 1.63


def test_one_run_has_no_seed_spread_and_no_runs_no_spread():
    assert spread_of([81.5], None).sd == 0.0
    assert spread_of([], 800) is None


def test_standard_error_is_that_of_a_binomial_proportion_in_points():
    # the example: 800 test images at 80 % -> ±1.4 points; 6000 -> about 0.5
    assert standard_error(80.0, 800) == pytest.approx(100 * math.sqrt(0.8 * 0.2 / 800))
    assert round(standard_error(80.0, 800), 1) == 1.4
    assert standard_error(80.0, 6000) == pytest.approx(0.516, abs=1e-3)
    assert standard_error(100.0, 800) == 0.0 and standard_error(80.0, None) is None


def test_the_spread_is_taken_at_the_mean_and_printed_with_n():
    s = Spread((81.0, 82.8), test_images=800)
    assert s.se == pytest.approx(standard_error(81.9, 800))
    assert s.text() == "81.90 ± 1.27 (n=2) · SE 1.4"
    assert Spread((81.0,), None).text() == "81.00 ± 0.00 (n=1)"
