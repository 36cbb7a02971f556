"""Two-sample statistics and verdicts, checked against scipy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from greenlab.core import stats


def exact_sample(mean: float, sd: float, n: int) -> list[float]:
    """n values whose sample mean and SD are exactly `mean` and `sd`."""
    z = np.arange(n, dtype=float)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + sd * z)


def log_welch_ci(a, b, level):
    """Welch's interval of the difference of log means, exponentiated — computed here independently."""
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / len(la), lb.var(ddof=1) / len(lb)
    df = (va + vb) ** 2 / (va ** 2 / (len(la) - 1) + vb ** 2 / (len(lb) - 1))
    half = sps.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    d = la.mean() - lb.mean()
    return math.exp(d - half), math.exp(d + half)


BASE = [100.0, 102.0, 98.0, 101.0, 99.0]


def test_clear_saving_agrees_with_scipy():
    tech = [70.0, 71.5, 69.0, 70.5, 69.5]
    r = stats.compare(tech, BASE)
    assert r.n == 5 and r.n_baseline == 5
    assert r.ratio == pytest.approx(np.mean(tech) / np.mean(BASE))
    assert r.p_value == pytest.approx(sps.ttest_ind(tech, BASE, equal_var=False).pvalue)
    low, high = log_welch_ci(np.array(tech), np.array(BASE), 0.95)
    assert (r.ratio_ci_low, r.ratio_ci_high) == (pytest.approx(low), pytest.approx(high))
    assert r.ratio_method == stats.LOG_WELCH
    assert stats.decide(r) == "saves"
    assert r.equivalent is False


def test_clear_cost():
    r = stats.compare([120.0, 121.0, 119.0, 122.0], BASE)
    assert r.ratio_ci_low > 1 and r.p_value < 0.001
    assert stats.decide(r) == "costs"


def test_equivalence_is_the_90_percent_interval_inside_the_margin():
    tech = [100.5, 101.0, 99.5, 100.0, 100.8]
    r = stats.compare(tech, BASE, margin=0.05)
    low, high = log_welch_ci(np.array(tech), np.array(BASE), 0.90)
    assert (r.ratio_ci90_low, r.ratio_ci90_high) == (pytest.approx(low), pytest.approx(high))
    assert 0.95 < low and high < 1.05 and r.equivalent
    assert r.p_equivalence < 0.05
    assert stats.decide(r) == "equivalent"
    # the same data cannot be called equivalent within a margin narrower than its interval
    narrow = stats.compare(tech, BASE, margin=0.005)
    assert narrow.equivalent is False and narrow.p_equivalence > 0.05
    assert stats.decide(narrow) == "inconclusive"


def test_inconclusive_estimates_the_repeats_that_would_decide():
    tech = [80.0, 130.0, 105.0]
    base = [100.0, 90.0, 115.0]
    r = stats.compare(tech, base)
    assert stats.decide(r) == "inconclusive"
    assert r.repeats_to_decide is not None and r.repeats_to_decide > 3
    # with that many runs of the same means and SDs, the comparison decides
    n = r.repeats_to_decide
    again = stats.compare(exact_sample(r.mean, r.sd, n), exact_sample(r.baseline_mean, r.baseline_sd, n))
    assert stats.decide(again) != "inconclusive"
    # a tighter spread needs fewer runs
    assert stats.repeats_to_decide(r.sd / 2, r.baseline_sd / 2, r.difference, r.baseline_mean, r.margin) < n


def test_one_run_per_side_is_insufficient():
    r = stats.compare([70.0], [100.0])
    assert r.ratio == pytest.approx(0.7)
    assert r.p_value is None and r.ratio_ci_low is None and r.effect_size is None
    assert stats.decide(r) == "insufficient"
    assert stats.decide(stats.compare([70.0, 71.0], [100.0])) == "insufficient"


def test_missing_values_are_dropped_and_counted():
    r = stats.compare([70.0, None, 71.0, float("nan")], [100.0, 101.0, None])
    assert (r.n, r.n_missing, r.n_baseline, r.n_baseline_missing) == (2, 2, 2, 1)
    assert r.mean == pytest.approx(70.5)


def test_zero_variance_in_both_groups():
    same = stats.compare([0.9, 0.9, 0.9], [0.9, 0.9])
    assert same.p_value == 1.0 and same.equivalent and same.ratio_ci_low == same.ratio_ci_high == 1.0
    assert stats.decide(same, higher_is_better=True, on_difference=True) == "equivalent"
    lower = stats.compare([0.8, 0.8], [0.9, 0.9])
    assert lower.p_value == 0.0 and lower.difference_ci_low == pytest.approx(-0.1)
    assert stats.decide(lower, higher_is_better=True, on_difference=True) == "costs"
    assert any("no variance" in note for note in lower.notes)


def test_zeros_make_logs_impossible_so_fieller_is_used():
    tech = [0.0, 1.0, 2.0, 1.0]
    base = [10.0, 11.0, 9.0, 10.0]
    r = stats.compare(tech, base)
    assert r.ratio_method == stats.FIELLER and any("Fieller" in n for n in r.notes)
    assert r.ratio_ci_low < r.ratio < r.ratio_ci_high < 1
    # Fieller's bounds solve (x̄ - ρ x̄₀)² = t² (v + ρ² v₀) with the Welch df at the estimate
    m1, m0 = np.mean(tech), np.mean(base)
    v1, v0 = np.var(tech, ddof=1) / 4, np.var(base, ddof=1) / 4
    rho = r.ratio
    df = (v1 + rho ** 2 * v0) ** 2 / (v1 ** 2 / 3 + (rho ** 2 * v0) ** 2 / 3)
    t = sps.t.ppf(0.975, df)
    for bound in (r.ratio_ci_low, r.ratio_ci_high):
        assert (m1 - bound * m0) ** 2 == pytest.approx(t ** 2 * (v1 + bound ** 2 * v0))
    assert stats.decide(r) == "saves"


def test_fieller_interval_is_unbounded_when_the_baseline_mean_is_near_zero():
    r = stats.compare([1.0, 2.0, 3.0], [-1.0, 0.5, 1.0])
    assert r.ratio_method == stats.FIELLER and r.ratio_ci_low is None
    assert stats.decide(r) == "inconclusive"


def test_hedges_g_by_hand():
    a, b = [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 4.0]
    pooled = math.sqrt((3 * np.var(a, ddof=1) + 2 * np.var(b, ddof=1)) / 5)
    j = math.gamma(2.5) / (math.sqrt(2.5) * math.gamma(2.0))
    assert stats.hedges_g(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled * j)
    assert j == pytest.approx(1 - 3 / (4 * 5 - 1), abs=0.01)  # the usual approximation agrees


def test_holm_by_hand():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert stats.holm([0.03, 0.01, None, 0.04, 0.02]) == [pytest.approx(0.06), pytest.approx(0.04), None,
                                                         pytest.approx(0.06), pytest.approx(0.06)]
    assert stats.holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]
    assert stats.holm([]) == []


def test_holm_adjusted_p_can_turn_a_saving_inconclusive():
    r = stats.compare([91.0, 95.0, 92.0, 96.0], BASE)
    assert stats.decide(r) == "saves" and 0.005 < r.p_value < 0.01
    assert stats.decide(r, p_value=10 * r.p_value) == "inconclusive"  # e.g. Holm over ten comparisons


def test_accuracy_verdict_reads_the_difference_and_higher_is_better():
    r = stats.compare([0.85, 0.86, 0.84], [0.90, 0.91, 0.89])
    assert r.difference_ci_high < 0
    assert stats.decide(r, higher_is_better=True, on_difference=True) == "costs"
    gain = stats.compare([0.95, 0.96, 0.94], [0.90, 0.91, 0.89])
    assert stats.decide(gain, higher_is_better=True, on_difference=True) == "saves"


def test_mean_ci_uses_the_t_quantile():
    values = [10.0 + i for i in range(12)]
    assert stats.mean_ci95(values) == pytest.approx(2.201 * np.std(values, ddof=1) / 12 ** 0.5, rel=1e-3)
    assert stats.mean_ci95([1.0]) is None


def test_runs_that_would_decide_are_more_than_the_smaller_side_had():
    """Two runs against ten did not decide: the estimate (equal groups) can be 3, never 2."""
    r = stats.compare([91.0, 94.0], [100, 101, 99, 102, 98, 100, 101, 99, 100, 100])
    assert r.p_value > 0.05 and r.repeats_to_decide == 3
    assert stats.beyond_what_was_run(2, 2, 10) == 3 and stats.beyond_what_was_run(8, 3, 3) == 8
    assert stats.beyond_what_was_run(None, 3, 3) is None
