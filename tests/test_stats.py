"""Two-sample statistics, Holm and the verdict rule, against scipy, hand computations and random samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from greenlab.core.report import stats

BASE = [100.0, 102.0, 98.0, 101.0, 99.0]
ONE = stats.HolmStep(None, 1, 1)


def step_for(s: stats.TwoSample) -> stats.HolmStep:
    """A family of one: Holm's p is the test's own."""
    return stats.holm([s.p_value], 1, s.alpha)[0]


def verdict(s: stats.TwoSample, higher_is_better: bool = False) -> str:
    return stats.decide(s, step_for(s), higher_is_better=higher_is_better).verdict


def exact_sample(mean: float, sd: float, n: int) -> list[float]:
    """n values whose sample mean and SD are exactly `mean` and `sd`."""
    z = np.arange(n, dtype=float)
    z = (z - z.mean()) / z.std(ddof=1)
    return list(mean + sd * z)


def test_ratio_is_welch_on_log_values_p_and_interval_alike():
    tech = [70.0, 71.5, 69.0, 70.5, 69.5]
    r = stats.compare(tech, BASE)
    la, lb = np.log(tech), np.log(BASE)
    welch = sps.ttest_ind(la, lb, equal_var=False)
    assert r.p_value == pytest.approx(welch.pvalue)  # the p-value is on the log scale, as the interval
    ci = welch.confidence_interval(0.95)
    assert (r.ci_low, r.ci_high) == (pytest.approx(math.exp(ci.low)), pytest.approx(math.exp(ci.high)))
    assert r.estimate == pytest.approx(math.exp(la.mean() - lb.mean()))  # ratio of geometric means
    assert r.ratio_of_means == pytest.approx(np.mean(tech) / np.mean(BASE))
    assert r.test == stats.WELCH
    assert verdict(r) == "saves" and r.equivalent is False


def test_the_issues_two_scales_example_now_agrees():
    """Baseline 100, 101, 99, 100, 160 J against 80, 82, 81, 83 J: the old CI excluded 1 beside p = 0.064."""
    r = stats.compare([80.0, 82.0, 81.0, 83.0], [100.0, 101.0, 99.0, 100.0, 160.0])
    excludes = r.ci_high < 1 or r.ci_low > 1
    assert excludes == (r.p_value < 0.05)


def test_unequal_sizes_cap_welchs_df_at_what_an_equal_design_of_the_smaller_side_has():
    base = [100.0, 101.0, 99.0, 100.0, 103.0, 98.0, 102.0]
    r = stats.compare([80.0, 92.0, 70.0], base)  # the small side has the large spread: Welch's df would be ~2
    la, lb = np.log([80.0, 92.0, 70.0]), np.log(base)
    va, vb = la.var(ddof=1) / 3, lb.var(ddof=1) / 7
    welch = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 6)
    assert r.df == pytest.approx(min(welch, 4.0))
    wide = stats.compare([80.0, 80.5, 79.5], [100.0, 130.0, 70.0, 110.0, 90.0, 120.0, 80.0])  # here it caps
    assert wide.df == 4.0
    t = wide.center / wide.se
    assert wide.p_value == pytest.approx(2 * sps.t.sf(abs(t), 4))


def test_adding_a_run_never_lowers_the_df_cap():
    """A rule that switched on equal sizes dropped 5 against 5 (Welch df 7.3) to Hsu's 4 at 5 against 6,
    turning a saving inconclusive when a run at the baseline's mean was added."""
    tech = [96.1, 98.1, 97.1, 99.1, 95.1]
    base = [100.0, 97.0, 103.0, 99.0, 101.0]
    five = stats.compare(tech, base)
    six = stats.compare(tech, [*base, 100.0])
    assert six.df >= five.df - 1.0  # the cap stays at 8; only the variances' own change moves it
    assert verdict(five) == verdict(six) == "saves"


def test_huge_but_finite_values_do_not_overflow():
    r = stats.compare([1e300, 1.1e300], [1e300, 0.9e300])
    assert r.mean == pytest.approx(1.05e300) and r.sd is not None and math.isfinite(r.sd)
    assert r.p_value is not None


def test_equivalence_reads_the_90_percent_interval_against_a_log_symmetric_band():
    tech = [100.5, 101.0, 99.5, 100.0, 100.8]
    r = stats.compare(tech, BASE, margin=0.05)
    ci90 = sps.ttest_ind(np.log(tech), np.log(BASE), equal_var=False).confidence_interval(0.90)
    assert (r.eq_low, r.eq_high) == (pytest.approx(math.exp(ci90.low)), pytest.approx(math.exp(ci90.high)))
    assert r.equivalence_bounds == pytest.approx((1 / 1.05, 1.05))
    assert r.equivalent and r.p_equivalence < 0.05
    assert verdict(r) == "equivalent"
    narrow = stats.compare(tech, BASE, margin=0.005)
    assert narrow.equivalent is False and narrow.p_equivalence > 0.05
    assert verdict(narrow) == "inconclusive"


def test_significant_and_negligible_both_hold_and_both_are_said():
    base = exact_sample(100.0, 0.3, 10)
    tech = exact_sample(98.0, 0.3, 10)  # a significant 2 % saving inside a 5 % margin
    r = stats.compare(tech, base, margin=0.05)
    decision = stats.decide(r, step_for(r))
    assert decision.verdict == "saves" and decision.negligible
    assert 0.95 < r.ci_low < r.ci_high < 1


def test_no_spread_is_no_certainty():
    """100 J ×3 against 90 J ×3, or accuracy 0.90 ×5 against 0.88 ×5: nothing to test against."""
    energy = stats.compare([90.0] * 3, [100.0] * 3)
    assert energy.no_spread and energy.p_value is None and energy.ci_low is None
    assert verdict(energy) == "no spread"
    accuracy = stats.compare([0.88] * 5, [0.90] * 5, scale=stats.DIFFERENCE, margin=0.01)
    assert accuracy.no_spread and verdict(accuracy, higher_is_better=True) == "no spread"


def test_identical_non_binary_values_do_not_divide_by_zero():
    """Accuracy 0.1 in three runs of each side (a diverged 10-class model): log variance 1e-33, not 0."""
    r = stats.compare([0.1, 0.1, 0.1], [0.1, 0.1, 0.1])
    assert r.no_spread and verdict(r) == "no spread"
    d = stats.compare([0.1, 0.1, 0.1], [0.1, 0.1, 0.1], scale=stats.DIFFERENCE, margin=0.01)
    assert d.no_spread


def test_a_ratio_refuses_values_without_a_log():
    with pytest.raises(ValueError, match="logs"):
        stats.compare([-100.0, -103.0], [45.0, 46.0])
    with pytest.raises(ValueError):
        stats.compare([0.0, 1.0], [2.0, 3.0])


def test_one_run_per_side_is_insufficient():
    r = stats.compare([70.0], [100.0])
    assert r.estimate == pytest.approx(0.7)
    assert r.p_value is None and r.ci_low is None and r.effect_size is None
    assert verdict(r) == "insufficient"
    assert verdict(stats.compare([70.0, 71.0], [100.0])) == "insufficient"


def test_missing_values_are_dropped_and_counted():
    r = stats.compare([70.0, None, 71.0], [100.0, 101.0, None])
    assert (r.n, r.n_missing, r.n_baseline, r.n_baseline_missing) == (2, 1, 2, 1)
    assert r.mean == pytest.approx(70.5)


def test_hedges_g_by_hand():
    a, b = [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 4.0]
    pooled = math.sqrt((3 * np.var(a, ddof=1) + 2 * np.var(b, ddof=1)) / 5)
    j = math.gamma(2.5) / (math.sqrt(2.5) * math.gamma(2.0))
    assert stats.hedges_g(a, b) == pytest.approx((np.mean(a) - np.mean(b)) / pooled * j)


def test_holm_by_hand_with_the_steps_interval_divisors():
    # a family of 5 (one without p): 0.01 x5 = 0.05, 0.02 x4 = 0.08, 0.03 x3 = 0.09, 0.04 x2 = 0.08 -> 0.09
    steps = stats.holm([0.03, 0.01, None, 0.04, 0.02], 5)
    assert [s.p_holm for s in steps] == [
        pytest.approx(0.09),
        pytest.approx(0.05),
        None,
        pytest.approx(0.09),
        pytest.approx(0.08),
    ]
    # sorted: 0.01 (x4 = 0.04 rejects), 0.02 (x3 = 0.06 stops), 0.03, 0.04; family of 4
    steps = stats.holm([0.03, 0.01, 0.04, 0.02], 4)
    assert [s.p_holm for s in steps] == [
        pytest.approx(0.06),
        pytest.approx(0.04),
        pytest.approx(0.06),
        pytest.approx(0.06),
    ]
    # rank 1 rejects at α/4; Holm stops at rank 2, so ranks 2.. use its divisor 3
    assert [s.divisor for s in steps] == [3, 4, 3, 3]
    assert all(s.family == 4 for s in steps)
    assert stats.holm([]) == []
    tied = stats.holm([0.02, 0.02], 2)
    assert tied[0].divisor == tied[1].divisor  # one decision, one interval level


def test_a_declared_family_counts_comparisons_without_a_p():
    alone = stats.holm([0.02], 1)[0]
    declared = stats.holm([0.02, None, None], 3)[0]
    assert alone.p_holm == pytest.approx(0.02) and declared.p_holm == pytest.approx(0.06)


def test_accuracy_reads_the_difference_and_higher_is_better():
    r = stats.compare([0.85, 0.86, 0.84], [0.90, 0.91, 0.89], scale=stats.DIFFERENCE, margin=0.01)
    assert r.ci_high < 0 and r.estimate == pytest.approx(-0.05)
    assert verdict(r, higher_is_better=True) == "costs"
    gain = stats.compare([0.95, 0.96, 0.94], [0.90, 0.91, 0.89], scale=stats.DIFFERENCE, margin=0.01)
    assert verdict(gain, higher_is_better=True) == "saves"
    assert gain.equivalence_bounds == (-0.01, 0.01)


def test_mean_ci_uses_the_t_quantile():
    values = [10.0 + i for i in range(12)]
    assert stats.mean_ci95(values) == pytest.approx(2.201 * np.std(values, ddof=1) / 12**0.5, rel=1e-3)
    assert stats.mean_ci95([1.0]) is None


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=8))
def test_the_mean_of_finite_values_is_finite_and_between_them(values):
    # [1, 1e308, 1e308] once summed to inf before dividing (found by the damaged-values sweep)
    mean = stats.mean_of(values)
    assert math.isfinite(mean)
    assert min(values) <= mean <= max(values)


def test_the_mean_near_the_float_range_is_divided_before_it_is_scaled_back():
    assert stats.mean_of([1.0, 1e308, 1e308]) == pytest.approx(1e308 / 3 * 2, rel=1e-12)


def test_repeats_to_decide_decide_when_the_estimate_is_the_truth():
    r = stats.compare([80.0, 130.0, 105.0], [100.0, 90.0, 115.0])
    assert verdict(r) == "inconclusive"
    n = stats.repeats_for(r, step_for(r))
    assert n is not None and n > 3
    # with that many runs at the same log means and SDs, the comparison decides
    log_a = exact_sample(float(np.mean(np.log([80.0, 130.0, 105.0]))), r.tested_sd, n)
    log_b = exact_sample(float(np.mean(np.log([100.0, 90.0, 115.0]))), r.tested_baseline_sd, n)
    again = stats.compare(np.exp(log_a), np.exp(log_b))
    assert verdict(again) != "inconclusive"


def test_repeats_to_decide_by_bisection_match_a_scan():
    for sd, sd0, center, bound in [(0.1, 0.1, 0.02, 0.05), (0.05, 0.2, 0.1, 0.0488), (0.3, 0.1, 0.0, 0.0488)]:
        found = stats.repeats_to_decide(sd, sd0, center, bound, divisor=3)
        scan = next((n for n in range(2, 3000) if _decides(sd, sd0, center, bound, n, 3)), None)
        assert found == scan


def _decides(sd, sd0, center, bound, n, divisor):
    spread = sd**2 + sd0**2
    se = math.sqrt(spread / n)
    df = spread**2 * (n - 1) / (sd**4 + sd0**4)
    if abs(center) / se >= sps.t.ppf(1 - 0.05 / divisor / 2, df) + sps.t.ppf(0.8, df):
        return True
    if abs(center) >= bound:
        return False
    critical = sps.t.ppf(0.95, df)
    fails = sps.t.cdf(critical - (bound - abs(center)) / se, df) + sps.t.cdf(critical - (bound + abs(center)) / se, df)
    return 1 - fails >= 0.8


def test_the_equivalence_estimate_has_its_promised_power_near_no_difference():
    """Both one-sided tests must pass: near no difference each may fail, so n is larger than one test's."""
    rng = np.random.default_rng(4)
    n = stats.repeats_to_decide(0.1, 0.1, 0.0, math.log1p(0.05))
    equivalent = 0
    for _ in range(2000):
        r = stats.compare(np.exp(rng.normal(0, 0.1, n)), np.exp(rng.normal(0, 0.1, n)))
        equivalent += bool(r.equivalent)
    assert equivalent / 2000 >= 0.76  # 80 % promised, within simulation error


def test_runs_that_would_decide_are_more_than_the_smaller_side_had():
    assert stats.beyond_what_was_run(2, 2, 10) == 3 and stats.beyond_what_was_run(8, 3, 3) == 8
    assert stats.beyond_what_was_run(None, 3, 3) is None


# -- properties over random samples ---------------------------------------------------------------------------
positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
fraction = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(positive, min_size=2, max_size=12),
    st.lists(positive, min_size=2, max_size=12),
    st.sampled_from([0.01, 0.05, 0.1]),
)
def test_the_interval_excludes_no_change_exactly_when_p_is_below_alpha(a, b, alpha):
    r = stats.compare(a, b, alpha=alpha)
    if r.no_spread:
        assert r.p_value is None and r.ci_low is None
        return
    if abs(r.p_value - alpha) < 1e-9:
        return  # on the boundary itself, rounding decides
    excludes = r.ci_high < 1 or r.ci_low > 1
    assert excludes == (r.p_value < alpha)
    assert (r.p_equivalence < alpha) == bool(r.equivalent)
    low, high = r.equivalence_bounds
    if abs(r.p_equivalence - alpha) > 1e-9:
        assert bool(r.equivalent) == (low <= r.eq_low and r.eq_high <= high)


@settings(max_examples=200, deadline=None)
@given(st.lists(fraction, min_size=2, max_size=10), st.lists(fraction, min_size=2, max_size=10))
def test_differences_agree_too(a, b):
    r = stats.compare(a, b, scale=stats.DIFFERENCE, margin=0.01)
    if r.no_spread:
        return
    if abs(r.p_value - 0.05) > 1e-9:
        assert (r.ci_high < 0 or r.ci_low > 0) == (r.p_value < 0.05)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=0.2, allow_nan=False), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=12),
    st.sampled_from([0.01, 0.05]),
)
def test_holm_adjusted_intervals_match_holm_decisions(p_values, extra, alpha):
    """The (1 − α/k) interval of each comparison excludes no change exactly when Holm rejects it."""
    family = len(p_values) + extra - 1
    steps = stats.holm(p_values, family, alpha)
    for p, step in zip(p_values, steps):
        if abs(p * step.divisor - alpha) < 1e-12 or abs(step.p_holm - alpha) < 1e-12:
            continue
        assert (p < alpha / step.divisor) == (step.p_holm < alpha)
        assert step.p_holm >= p


@settings(max_examples=200, deadline=None)
@given(st.lists(positive, min_size=2, max_size=8), st.lists(positive, min_size=2, max_size=8))
def test_decisions_follow_the_decision_table(a, b):
    r = stats.compare(a, b)
    step = step_for(r)
    d = stats.decide(r, step)
    if r.no_spread:
        assert d.verdict == "no spread"
    elif r.p_value < 0.05:
        assert d.verdict == ("saves" if r.center < 0 else "costs")
        assert d.negligible == bool(r.equivalent)
    else:
        assert d.verdict == ("equivalent" if r.equivalent else "inconclusive") and not d.negligible
