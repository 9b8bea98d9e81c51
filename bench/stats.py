"""Percentile-bootstrap intervals over photos, for the benchmarks' figures.

Here rather than in service/explain/faithfulness.py: the service scores one explanation at a time
and never resamples anything; only a benchmark that has scored many photos needs an interval.
The module imports NumPy only, so its tests run in the fast tier.

Every figure is a statistic of per-photo values (a mean of 0/1 outcomes, of probabilities, of
areas; PIC's median curve), so resampling photos with replacement and reading the 2.5th and
97.5th percentiles of the statistic gives its 95% interval (Efron's percentile bootstrap). A
comparison of two methods on the same photos resamples the photos once for both (`paired`):
their difference then keeps what the photos share, and its interval is far narrower than two
separate intervals suggest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A figure and its bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 4) -> dict[str, float]:
        return {
            "value": round(self.value, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
        }

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (a fraction as percent or points), or with its sign
        flipped (a negative factor swaps the bounds)."""
        low, high = sorted((self.low * factor, self.high * factor))
        return Interval(self.value * factor, low, high)


def resample_indices(count: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """[resamples, count] photo indices drawn with replacement: one draw serves every figure
    computed over the same photos, which is what makes comparisons between them paired."""
    if count < 1:
        raise ValueError("a bootstrap needs at least one photo")
    return np.random.default_rng(seed).integers(0, count, (resamples, count))


def bootstrap(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] | None = None,
    *,
    indices: np.ndarray | None = None,
    level: float = LEVEL,
) -> Interval:
    """`statistic` of per-photo `values` (first axis: photos) and its percentile-bootstrap
    interval at `level`, over `indices` (default: RESAMPLES draws, seeded). Without a
    statistic, `values` is one number per photo and the statistic is their mean (vectorised)."""
    values = np.asarray(values, np.float64)
    if indices is None:
        indices = resample_indices(len(values))
    if statistic is None:
        if values.ndim != 1:
            raise ValueError("the mean is taken of one value per photo; pass a statistic")
        value = float(values.mean())
        draws = values[indices].mean(axis=1)
    else:
        value = float(statistic(values))
        draws = np.array([statistic(values[i]) for i in indices])
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return Interval(value, float(low), float(high))


def paired(
    a: np.ndarray, b: np.ndarray, *, indices: np.ndarray | None = None, level: float = LEVEL
) -> Interval:
    """mean(a) - mean(b) over the same photos, each resample taking the same photos for both."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must cover the same photos: {a.shape} vs {b.shape}")
    return bootstrap(a - b, indices=indices, level=level)
