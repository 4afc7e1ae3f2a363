"""Small-sample statistics of a comparison: Student-t confidence intervals, paired differences, verdicts,
and the number of seeds a paired t-test needs to detect a difference.

A handful of seeds is all a training comparison can afford, so the normal approximation (1.96) would
make every interval too narrow: with 3 seeds the 95 % quantile is t(2) = 4.30. The quantiles are
computed here because scipy is not a dependency and `torch.distributions.StudentT.icdf` is not
implemented: the t CDF of an integer number of degrees of freedom has a closed form (Abramowitz &
Stegun 26.7.3-4), inverted by bisection; above 300 degrees of freedom the Cornish-Fisher expansion
(A&S 26.7.5) is exact to 1e-6 and avoids the long sums. The power calculation is the usual one for a
paired t-test (Cohen 1988, ch. 2): n = ((t(1-a/2, n-1) + t(power, n-1)) sd / |diff|)^2, iterated.

Pure functions of lists of floats; no torch, no files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

Verdict = Literal["better", "worse", "no detectable difference"]
NO_DIFFERENCE: Verdict = "no detectable difference"
_LARGE_DF = 300


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with `df` (a positive integer) degrees of freedom, in closed form."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df={df}: the closed form needs a positive integer number of degrees of freedom.")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan2(abs(t), math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # A(t|df) = sin(theta) (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term = total = 1.0
        for k in range(2, df, 2):
            term *= (k - 1) / k * cos2
            total += term
        inside = sin * total
    else:  # A(t|df) = 2/pi (theta + sin(theta) (cos + 2/3 cos^3 + ...)), 2 theta/pi for df = 1
        term = total = math.cos(theta)
        for k in range(3, df, 2):
            term *= (k - 1) / k * cos2
            total += term
        inside = 2 / math.pi * (theta + (sin * total if df > 1 else 0.0))
    return 0.5 + math.copysign(inside / 2, t)


def _cornish_fisher(p: float, df: int) -> float:
    """The t quantile from the normal one (A&S 26.7.5), accurate for large df."""
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_quantile(p: float, df: int) -> float:
    """The t with P(T <= t) = p for Student's t with `df` degrees of freedom, e.g. t_quantile(0.975, 4) = 2.776."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p}: a quantile needs a probability strictly between 0 and 1.")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if df > _LARGE_DF:
        return _cornish_fisher(p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval, and the sample's standard deviation and size."""

    mean: float
    low: float
    high: float
    sd: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def mean_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval of `values` (at least 2). Equal values give the interval
    [mean, mean]: no spread was observed, so there is nothing to widen it with."""
    n = len(values)
    if n < 2:
        raise ValueError(f"{n} value(s): a confidence interval needs at least 2 (two seeds or folds).")
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, sd, n)


def paired_difference(arm: Sequence[float], baseline: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and confidence interval of `arm[i] - baseline[i]`, pairs sharing a seed or a fold: the spread
    between seeds cancels, so the interval is much narrower than the two arms' own intervals suggest."""
    if len(arm) != len(baseline):
        raise ValueError(f"{len(arm)} arm values against {len(baseline)} baseline values: pairs need the same seeds.")
    return mean_interval([a - b for a, b in zip(arm, baseline, strict=True)], level)


def verdict(difference: Interval, higher_is_better: bool) -> Verdict:
    """`better` or `worse` when the interval of the difference excludes 0 in that direction, else
    `no detectable difference` (which is not evidence of equality: see `seeds_needed`)."""
    if difference.low > 0 or difference.high < 0:
        return "better" if (difference.low > 0) == higher_is_better else "worse"
    return NO_DIFFERENCE


def seeds_needed(difference: float, sd: float, alpha: float = 0.05, power: float = 0.8, limit: int = 100_000) -> int | None:
    """The pairs (seeds, folds) a two-sided paired t-test at level `alpha` needs to detect a mean
    difference `difference` with probability `power`, given the differences' standard deviation `sd`:
    the smallest n >= 2 with n >= ((t(1-alpha/2, n-1) + t(power, n-1)) sd / |difference|)^2, the fixed
    point of iterating that formula (its right side falls as n grows, so the search is a bisection).
    None when the difference is 0 (no effect to detect); 2 (the least a t-test takes) when sd is 0;
    `limit` caps hopeless cases."""
    if difference == 0:
        return None
    ratio = sd / abs(difference)

    def enough(n: int) -> bool:
        return n >= ((t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * ratio) ** 2

    if enough(2):
        return 2
    normal = NormalDist()
    high = max(3, math.ceil(((normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)) * ratio) ** 2))
    while not enough(high):  # the normal approximation undershoots; the t quantiles settle it
        if high >= limit:
            return limit
        high = min(2 * high, limit)
    low = 2  # not enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high
