"""Deciding a comparison of table cells with a test whose error rate is stated.

A comparison is a contrast Σ w·accuracy over cells (A − B: weights +1 and −1) and a
threshold it is claimed to exceed (0 for "A beats B"). Two things make a cell's number vary
on a rerun: the seed (initialisation, augmentation, order) and the finite test set. The
estimate's variance adds both, each estimated from the runs:

- seed: the sample variance over seeds of the per-seed contrast, divided by the seeds;
- test set: the variance over test images of the per-image contrast of correctness (each
  run's `predictions.json`), divided by the images. Where every cell was scored on the same
  test images, that per-image contrast is paired: two models that err on the same hard
  images cancel, which is far sharper than treating the cells as independent.

The interval is estimate ± t_ν·SE with ν = seeds − 1 (the fewest of any cell), so few seeds
widen it as they should. A comparison is decided at level α when its interval excludes the
threshold: holds above it, refuted below it, undecided otherwise; a claim of several
comparisons is corrected for multiplicity with Holm's step-down method. With one seed per
cell the seed term cannot be estimated and is left out: the verdict then speaks for the
test set only (`Estimate.seed_noise_measured` is False). Pure numpy/scipy, no tracking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05  # the family-wise error rate of each claim
HOLDS, REFUTED, UNDECIDED, NOT_RUN = "holds", "refuted", "undecided", "not run"


@dataclass(frozen=True)
class Scored:
    """One run's result on its test set."""

    seed: int
    accuracy: float  # %, final epoch
    test_images: int
    correct: np.ndarray | None = None  # bool per test image, in the data set's test order
    test_set: str | None = None  # digest of the test images scored; pairing needs equal ones


Sample = tuple[Scored, ...]  # a cell's runs, one per seed
Term = tuple[float, Sample]  # (weight, cell)


@dataclass(frozen=True)
class Estimate:
    value: float  # the contrast, points
    se: float  # its standard error, points
    df: float  # degrees of freedom of the t quantile (inf: normal)
    seeds: int  # the fewest seeds of any cell
    paired: bool  # per-image correctness compared on the same test images
    seed_variance: float = 0.0  # the seed term of se², over `seeds` seeds
    test_variance: float = 0.0  # the test-set term of se²

    @property
    def seed_noise_measured(self) -> bool:
        return self.seeds >= 2

    def interval(self, level: float) -> tuple[float, float]:
        half = self.se * quantile(1 - (1 - level) / 2, self.df)
        return self.value - half, self.value + half

    def half_width(self, level: float) -> float:
        """± of the interval at `level`, points."""
        return self.se * quantile(1 - (1 - level) / 2, self.df)

    def seeds_for(self, half: float, level: float = 0.95, most: int = 100) -> int | None:
        """How many seeds per cell would bring this comparison's interval at `level` within
        ±`half`, were the seeds' spread and the test set's error as measured: None where
        the seed noise is unmeasured (one seed), or the test set alone is too wide."""
        if not self.seed_noise_measured:
            return None
        per_seed = self.seed_variance * self.seeds
        for n in range(2, most + 1):
            se = math.sqrt(per_seed / n + self.test_variance)
            if se * quantile(1 - (1 - level) / 2, n - 1) <= half:
                return n
        return None

    def p_value(self, threshold: float = 0.0) -> float:
        """Two-sided p-value of "the contrast equals `threshold`"."""
        gap = self.value - threshold
        if self.se == 0:
            return 1.0 if gap == 0 else 0.0
        z = abs(gap) / self.se
        return float(2 * (stats.norm.sf(z) if math.isinf(self.df) else stats.t.sf(z, self.df)))


def quantile(q: float, df: float) -> float:
    return float(stats.norm.ppf(q) if math.isinf(df) else stats.t.ppf(q, df))


def estimate(terms: list[Term]) -> Estimate:
    """The contrast Σ w·accuracy of `terms`, paired when every cell has per-image
    correctness for the same seeds on the same test images, independent otherwise."""
    if _pairable(terms):
        return _paired(terms)
    return _independent(terms)


def _pairable(terms: list[Term]) -> bool:
    seeds = [sorted(r.seed for r in sample) for _, sample in terms]
    if any(s != seeds[0] or len(set(s)) != len(s) for s in seeds):
        return False
    for seed in seeds[0]:
        runs = [next(r for r in sample if r.seed == seed) for _, sample in terms]
        if any(r.correct is None or r.test_set is None or r.test_set != runs[0].test_set
               or len(r.correct) != len(runs[0].correct) for r in runs):
            return False
    return True


def _paired(terms: list[Term]) -> Estimate:
    seeds = sorted(r.seed for r in terms[0][1])
    per_image = []  # per seed: the contrast of correctness per test image, in points
    for seed in seeds:
        runs = [(w, next(r for r in sample if r.seed == seed)) for w, sample in terms]
        per_image.append(sum(100.0 * w * r.correct.astype(np.float64) for w, r in runs))
    per_seed = np.array([x.mean() for x in per_image])
    n = len(seeds)
    test_sets = {next(r for r in terms[0][1] if r.seed == s).test_set for s in seeds}
    if len(test_sets) == 1:  # one test set: its sampling error is common to every seed
        var_test = _mean_variance(np.mean(per_image, axis=0))
    else:  # a test set per seed: independent errors, averaged over the seeds
        var_test = sum(_mean_variance(x) for x in per_image) / n ** 2
    var_seed = float(per_seed.var(ddof=1)) / n if n >= 2 else 0.0
    return _combine(float(per_seed.mean()), [(var_seed, n - 1)], var_test, n, paired=True)


def _independent(terms: list[Term]) -> Estimate:
    """Cells scored on different test images, or without per-image predictions (the
    paper's published numbers): each cell's test-set error is binomial and independent."""
    value, var_test, seed_terms = 0.0, 0.0, []
    for weight, sample in terms:
        acc = np.array([r.accuracy for r in sample], dtype=np.float64)
        p = acc.mean() / 100.0
        images = min(r.test_images for r in sample)
        value += weight * float(acc.mean())
        # Not divided by the seeds: seeds that share a test set share its error. A run that
        # recorded no test-set size has an unknown error: nothing is decided on it.
        var_test += weight ** 2 * 1e4 * p * (1 - p) / images if images > 0 else math.inf
        if len(acc) >= 2:
            seed_terms.append((weight ** 2 * float(acc.var(ddof=1)) / len(acc), len(acc) - 1))
    seeds = min(len(sample) for _, sample in terms)
    return _combine(value, seed_terms, var_test, seeds, paired=False)


def _mean_variance(x: np.ndarray) -> float:
    """The sampling variance of the mean of `x` (one value per test image)."""
    return float(x.var(ddof=1)) / len(x) if len(x) >= 2 else 0.0


def _combine(value: float, seed_terms: list[tuple[float, int]], var_test: float, seeds: int,
             paired: bool) -> Estimate:
    """The variance is the seed terms' (variance, degrees of freedom) plus the test set's.
    The quantile takes the fewest degrees of freedom of any seed term (the conservative
    form of Welch's test), not the Welch–Satterthwaite estimate: with 2–3 seeds that
    estimate is large exactly when the seed variance happens to come out small, which
    declared 7–10 % of equal cells different at a nominal 5 % (tests/test_significance.py).
    No seed term (one seed per cell): the test set's alone, with the normal quantile."""
    seed_terms = [(v, df) for v, df in seed_terms if df >= 1]
    var_seed = sum(v for v, _ in seed_terms)
    df = min((df for _, df in seed_terms), default=math.inf)
    return Estimate(value, math.sqrt(var_seed + var_test), df, seeds, paired, var_seed, var_test)


@dataclass(frozen=True)
class Decision:
    estimate: Estimate
    threshold: float
    level: float  # the confidence level Holm's step gave this comparison
    verdict: str

    @property
    def interval(self) -> tuple[float, float]:
        return self.estimate.interval(self.level)


def decide(estimates: list[Estimate], thresholds: list[float], alpha: float = ALPHA) -> list[Decision]:
    """Holm's step-down over one claim's comparisons: the k-th smallest p-value (k = 0, 1,
    ...) is tested at α/(m − k), i.e. its interval at level 1 − α/(m − k), and testing stops
    at the first that is not decided; the family-wise error rate is at most α."""
    m = len(estimates)
    order = sorted(range(m), key=lambda i: estimates[i].p_value(thresholds[i]))
    decisions: list[Decision | None] = [None] * m
    stopped = False
    for k, i in enumerate(order):
        level = 1 - alpha / (m - k)
        lo, hi = estimates[i].interval(level)
        verdict = UNDECIDED
        if not stopped and lo > thresholds[i]:
            verdict = HOLDS
        elif not stopped and hi < thresholds[i]:
            verdict = REFUTED
        stopped = stopped or verdict == UNDECIDED
        decisions[i] = Decision(estimates[i], thresholds[i], level, verdict)
    return decisions


def claim_verdict(verdicts: list[str]) -> str:
    """A claim is refuted by any refuted comparison, not run while one has no runs,
    undecided while one is undecided, and holds when every comparison holds."""
    for verdict in (REFUTED, NOT_RUN, UNDECIDED):
        if verdict in verdicts:
            return verdict
    return HOLDS if verdicts else NOT_RUN
