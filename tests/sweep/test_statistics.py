"""hwd_tune.sweep.statistics against scipy and numpy computed here, and by hand for the edges."""

import math

import numpy as np
import pytest
from scipy import stats

from hwd_tune.sweep.statistics import paired_difference, seed_stats


@pytest.mark.parametrize("values", [[50.1, 51.3], [48.0, 52.5, 50.25], [33.3, 35.0, 31.9, 36.2, 34.4]])
def test_seed_stats_match_numpy_and_scipys_t_interval(values):
    result = seed_stats(values)
    mean, std = np.mean(values), np.std(values, ddof=1)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=std / math.sqrt(len(values)))
    assert result.n == len(values)
    assert result.mean == pytest.approx(mean, abs=1e-12) and result.std == pytest.approx(std, abs=1e-12)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))


def test_one_seed_has_a_mean_but_no_spread_and_no_seed_is_an_error():
    single = seed_stats([42.0])
    assert (single.n, single.mean) == (1, 42.0)
    assert math.isnan(single.std) and math.isnan(single.ci_low) and math.isnan(single.ci_high)
    with pytest.raises(ValueError, match="at least one value"):
        seed_stats([])


def test_two_values_use_t_with_one_degree_of_freedom():
    """By hand: mean 51, std sqrt(2), half width 12.706 * sqrt(2) / sqrt(2) = 12.706."""
    result = seed_stats([50.0, 52.0])
    assert result.std == pytest.approx(math.sqrt(2.0))
    assert result.ci_high - result.mean == pytest.approx(12.7062047, rel=1e-6)


def test_paired_difference_matches_scipys_paired_t_test_on_common_seeds():
    first = {0: 52.0, 1: 50.5, 2: 51.7, 3: 49.9}
    second = {0: 50.0, 1: 50.1, 2: 50.2, 3: 48.0, 7: 99.0}  # seed 7 has no pair: left out
    result = paired_difference(first, second)
    a, b = [first[s] for s in range(4)], [second[s] for s in range(4)]
    differences = np.subtract(a, b)
    low, high = stats.t.interval(0.95, 3, loc=differences.mean(), scale=stats.sem(differences))
    assert result.n == 4 and result.mean == pytest.approx(differences.mean())
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert result.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result.beyond_noise() == (stats.ttest_rel(a, b).pvalue < 0.05)


def test_paired_difference_edges():
    same = paired_difference({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.5})  # every difference 0.5: no spread
    assert same.mean == pytest.approx(0.5) and math.isnan(same.p_value) and not same.beyond_noise()
    one = paired_difference({0: 1.0}, {0: 0.0, 1: 3.0})
    assert one.n == 1 and math.isnan(one.p_value)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})
