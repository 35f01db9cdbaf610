"""Replicates and their spread: what one table cell states about its runs (one per seed).

Pure functions on accuracies in percent. A cell's `Spread` is the mean over its seeds, the
sample standard deviation between seeds (n - 1 in the denominator; 0 for a single run) and
the test-set standard error at the mean, √(p(1−p)/n_test): how well a finite test set pins
down an accuracy p, whatever the seed. Whether two cells differ is decided elsewhere, by a
test on the runs' per-image predictions (`rotnet.significance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    values: tuple[float, ...]  # the replicates' accuracies (%), one per seed
    test_images: int | None  # test images each run was scored on (None: unknown)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def sd(self) -> float:
        """Sample standard deviation between seeds; 0 for one run (no spread is known)."""
        if self.n < 2:
            return 0.0
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def se(self) -> float | None:
        """Test-set standard error (points) at the mean accuracy."""
        return standard_error(self.mean, self.test_images)

    def text(self) -> str:
        """"81.9 ± 0.6 (n=2) · SE 1.4"."""
        se = "" if self.se is None else f" · SE {self.se:.1f}"
        return f"{self.mean:.2f} ± {self.sd:.2f} (n={self.n}){se}"


def standard_error(accuracy: float, test_images: int | None) -> float | None:
    """√(p(1−p)/n) in points for `accuracy` p in percent on `test_images` images."""
    if not test_images:
        return None
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / test_images)


def spread_of(values, test_images: int | None) -> Spread | None:
    """The spread of `values` (None for no runs)."""
    values = tuple(float(v) for v in values)
    return Spread(values, test_images) if values else None


MISSING = "—"  # what every table prints for a value it does not have (not run, no paper value)


def number_text(value: float | None, signed: bool = False) -> str:
    """A table's number: 2 decimals ("+" on a difference), MISSING for None."""
    return MISSING if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")
