"""rotnet.spread: mean, standard deviation, n and test-set standard error of a cell's
replicates, and the "beyond the spread" rule the claims use."""

import math

import pytest

from rotnet.spread import Spread, beyond_spread, margin, spread_of, standard_error


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


def test_beyond_the_spread_needs_both_the_seed_sds_and_the_test_se():
    a, b = Spread((90.0, 92.0), 10_000), Spread((85.0, 85.2), 10_000)
    assert margin(a, b) == pytest.approx(a.sd + b.sd)  # here the seeds dominate
    assert beyond_spread(a, b) and not beyond_spread(b, a)
    # seeds that agree closely but a small test set: the test-set SE decides
    c, d = Spread((81.0, 81.0), 800), Spread((79.0, 79.0), 800)
    assert margin(c, d) == pytest.approx(2 * math.hypot(c.se, d.se))
    assert not beyond_spread(c, d)
    # a large gap between noisy seeds is still within the spread
    assert not beyond_spread(Spread((90.0, 80.0), None), Spread((84.0, 83.0), None))
