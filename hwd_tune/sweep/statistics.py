"""Seed statistics of the final stage: mean, spread and 95 % interval per configuration, and paired
differences (same seeds) with the paired t-test's p-value, so a winner is judged against the noise."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95  # two-sided intervals


@dataclass(frozen=True)
class SeedStats:
    """One configuration's results over seeds: n, mean, sample std and the t-interval of the mean."""

    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for one seed
    ci_low: float  # mean -+ t(0.975, n - 1) * std / sqrt(n); NaN for one seed
    ci_high: float


@dataclass(frozen=True)
class PairedDifference:
    """`first - second` over the seeds both ran: mean, t-interval and the two-sided paired t-test."""

    n: int
    mean: float
    ci_low: float
    ci_high: float
    p_value: float  # NaN below two pairs, or when every difference is the same

    def beyond_noise(self, alpha: float = 1.0 - CONFIDENCE) -> bool:
        """Whether the difference is significant at `alpha` (its interval excludes 0)."""
        return not math.isnan(self.p_value) and self.p_value < alpha


def seed_stats(values: list[float]) -> SeedStats:
    """Mean, standard deviation and the Student-t 95 % interval of the mean of `values`."""
    if not values:
        raise ValueError("seed_stats needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return SeedStats(1, mean, math.nan, math.nan, math.nan)
    std = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1))
    half_width = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return SeedStats(n, mean, std, mean - half_width, mean + half_width)


def paired_difference(first: Mapping[int, float], second: Mapping[int, float]) -> PairedDifference:
    """`first - second` on the seeds present in both ({seed: value} each)."""
    seeds = sorted(set(first) & set(second))
    if not seeds:
        raise ValueError(f"no seed in common: {sorted(first)} vs {sorted(second)}")
    differences = [first[seed] - second[seed] for seed in seeds]
    summary = seed_stats(differences)
    p_value = math.nan
    if len(seeds) >= 2 and summary.std > 0:
        p_value = float(stats.ttest_rel([first[s] for s in seeds], [second[s] for s in seeds]).pvalue)
    return PairedDifference(len(seeds), summary.mean, summary.ci_low, summary.ci_high, p_value)
