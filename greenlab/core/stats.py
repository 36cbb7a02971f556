"""Two-sample statistics of one comparison: a technique's values against its baseline's.

Pure functions over lists of numbers (None and NaN are dropped and counted). scipy supplies every
distribution and test; nothing here knows of runs, stores or metric names — greenlab.core.report groups
runs into comparisons, applies Holm across a report and words the verdicts.

Methods, in one place so the README can cite them:
- ratio of means x̄/x̄₀ with a 95 % interval: Welch's interval on log values (exp of the Welch interval
  of the difference of log means); where a value is 0 or negative, logs are impossible and Fieller's
  interval for a ratio of two independent means (Welch degrees of freedom at the estimate) is used;
- p: Welch's two-sided t-test on the raw values (scipy.stats.ttest_ind, equal_var=False);
- equivalence: two one-sided tests at 5 %, i.e. the 90 % interval of the ratio inside [1 − m, 1 + m];
- effect size: Hedges' g (Cohen's d on the pooled SD, times the exact small-sample correction J);
- difference x̄ − x̄₀ with Welch's 95 % interval (accuracy and F1 are reported this way, in pp).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import special
from scipy import stats as sps

ALPHA = 0.05
DEFAULT_MARGIN = 0.05
POWER = 0.80  # of the "repeats that would decide" estimate
MAX_REPEATS = 10_000
VERDICTS = ("saves", "costs", "equivalent", "inconclusive", "insufficient")

LOG_WELCH = "Welch interval on log values"
FIELLER = "Fieller interval (Welch df)"
EXACT = "exact: no variance in either group"


@dataclass(frozen=True)
class TwoSample:
    """A technique's values (n) against its baseline's (n_baseline), in the values' own unit.

    Intervals are None where they cannot be formed (fewer than two values a side, or an unbounded
    Fieller interval). `ratio_ci90_*` is the interval the equivalence test uses; `p_equivalence` is the
    larger of the two one-sided p-values (below 0.05 exactly when that interval lies inside the margin).
    """

    n: int
    n_baseline: int
    n_missing: int  # values that were None or NaN, dropped
    n_baseline_missing: int
    mean: float | None
    baseline_mean: float | None
    sd: float | None
    baseline_sd: float | None
    difference: float | None  # mean - baseline_mean
    difference_ci_low: float | None
    difference_ci_high: float | None
    ratio: float | None  # mean / baseline_mean
    ratio_ci_low: float | None
    ratio_ci_high: float | None
    ratio_ci90_low: float | None
    ratio_ci90_high: float | None
    ratio_method: str | None
    p_value: float | None
    p_equivalence: float | None
    margin: float
    equivalent: bool | None
    effect_size: float | None  # Hedges' g, technique minus baseline
    repeats_to_decide: int | None  # runs per side that would likely decide, from the observed spread
    notes: tuple[str, ...] = ()

    @property
    def sufficient(self) -> bool:
        return self.n >= 2 and self.n_baseline >= 2


def clean(values: Iterable[float | None]) -> tuple[list[float], int]:
    """The finite values, and how many were dropped (None, NaN or infinite)."""
    kept, dropped = [], 0
    for value in values:
        if value is None or not math.isfinite(float(value)):
            dropped += 1
        else:
            kept.append(float(value))
    return kept, dropped


def mean_ci95(values: Sequence[float]) -> float | None:
    """Half-width of the 95 % Student interval of the mean, or None with fewer than two values."""
    if len(values) < 2:
        return None
    return float(sps.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def welch_df(v1: float, n1: int, v0: float, n0: int) -> float:
    """Welch–Satterthwaite degrees of freedom, from the squared standard errors v = s²/n."""
    denominator = v1 ** 2 / (n1 - 1) + v0 ** 2 / (n0 - 1)
    return (v1 + v0) ** 2 / denominator if denominator > 0 else float(n1 + n0 - 2)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """(mean a - mean b) / pooled SD, times J = Γ(df/2) / (√(df/2) Γ((df-1)/2)); None without spread."""
    n1, n0 = len(a), len(b)
    if n1 < 2 or n0 < 2:
        return None
    df = n1 + n0 - 2
    pooled = math.sqrt(((n1 - 1) * np.var(a, ddof=1) + (n0 - 1) * np.var(b, ddof=1)) / df)
    if pooled == 0:
        return None
    correction = math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return float((np.mean(a) - np.mean(b)) / pooled * correction)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None entries are not part of the family)."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    family, running = len(ranked), 0.0
    for rank, (p, index) in enumerate(ranked):
        running = max(running, min(1.0, (family - rank) * p))
        adjusted[index] = running
    return adjusted


def _log_welch(a: list[float], b: list[float], level: float) -> tuple[float, float]:
    la, lb = np.log(a), np.log(b)
    va, vb = np.var(la, ddof=1) / len(la), np.var(lb, ddof=1) / len(lb)
    df = welch_df(va, len(la), vb, len(lb))
    half = sps.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    centre = float(np.mean(la) - np.mean(lb))
    return math.exp(centre - half), math.exp(centre + half)


def _log_tost(a: list[float], b: list[float], margin: float) -> float:
    la, lb = np.log(a), np.log(b)
    va, vb = np.var(la, ddof=1) / len(la), np.var(lb, ddof=1) / len(lb)
    df, se = welch_df(va, len(la), vb, len(lb)), math.sqrt(va + vb)
    centre = float(np.mean(la) - np.mean(lb))
    return float(max(sps.t.sf((centre - math.log1p(-margin)) / se, df),
                     sps.t.sf((math.log1p(margin) - centre) / se, df)))


def _fieller(a: list[float], b: list[float], level: float) -> tuple[float, float] | None:
    """Roots of (x̄ - ρ x̄₀)² = t² (v + ρ² v₀); None when the interval is unbounded (x̄₀ near 0)."""
    m1, m0 = float(np.mean(a)), float(np.mean(b))
    v1, v0 = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    if m0 == 0:
        return None
    r = m1 / m0
    df = welch_df(v1, len(a), r * r * v0, len(b))
    t2 = sps.t.ppf(0.5 + level / 2, df) ** 2
    quad = m0 * m0 - t2 * v0
    if quad <= 0:
        return None
    discriminant = (m1 * m0) ** 2 - quad * (m1 * m1 - t2 * v1)
    if discriminant < 0:  # the confidence set is the whole line minus an interval: unbounded too
        return None
    root = math.sqrt(discriminant)
    return (m1 * m0 - root) / quad, (m1 * m0 + root) / quad


def _fieller_tost(a: list[float], b: list[float], margin: float) -> float:
    """H0: μ ≤ (1-m) μ₀ or μ ≥ (1+m) μ₀, each tested as a Welch t on x̄ - ρ x̄₀ (Fieller's pivot)."""
    m1, m0 = float(np.mean(a)), float(np.mean(b))
    v1, v0 = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    p = []
    for bound, side in ((1 - margin, 1.0), (1 + margin, -1.0)):
        se = math.sqrt(v1 + bound * bound * v0)
        p.append(float(sps.t.sf(side * (m1 - bound * m0) / se, welch_df(v1, len(a), bound * bound * v0, len(b)))))
    return max(p)


def _welch_p(a: list[float], b: list[float]) -> float:
    with warnings.catch_warnings():
        # Near-identical groups (a deterministic accuracy) make scipy warn of precision loss; p is then ~1.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def repeats_to_decide(sd: float, baseline_sd: float, difference: float, baseline_mean: float,
                      margin: float, margin_abs: float | None = None, alpha: float = ALPHA) -> int | None:
    """Runs per side (equal groups) with which a Welch test at `alpha` would likely (80 % power) show the
    observed difference, or the equivalence test (at 5 %) show it lies inside the margin — whichever needs
    fewer, assuming the observed means and SDs are the truth. None when neither happens by MAX_REPEATS."""
    spread = sd ** 2 + baseline_sd ** 2
    if spread == 0:
        return None
    n = np.arange(2, MAX_REPEATS + 1, dtype=float)
    v = spread / n
    df = v ** 2 / ((sd ** 2 / n) ** 2 / (n - 1) + (baseline_sd ** 2 / n) ** 2 / (n - 1))
    se = np.sqrt(v)
    beta = sps.t.ppf(POWER, df)
    decided = abs(difference) / se >= sps.t.ppf(1 - alpha / 2, df) + beta
    allowed = margin_abs if margin_abs is not None else margin * abs(baseline_mean)
    if abs(difference) < allowed:
        decided |= (allowed - abs(difference)) / se >= sps.t.ppf(1 - ALPHA, df) + beta
    hits = np.flatnonzero(decided)
    return int(n[hits[0]]) if hits.size else None


def beyond_what_was_run(needed: int | None, n: int, n_baseline: int) -> int | None:
    """`needed` runs per side, but never as few as the smaller side already has: equal groups that small
    were already run, and did not decide."""
    return None if needed is None else max(needed, min(n, n_baseline) + 1)


def compare(values: Iterable[float | None], baseline: Iterable[float | None], *,
            margin: float = DEFAULT_MARGIN, margin_abs: float | None = None) -> TwoSample:
    """Everything a verdict needs about `values` against `baseline`; see the module docstring.

    With `margin_abs`, equivalence is judged on the difference instead of the ratio: its 90 % interval must
    lie within ±margin_abs (accuracy in percentage points: a relative 5 % of 90 % would allow 4.5 pp).
    """
    a, a_missing = clean(values)
    b, b_missing = clean(baseline)
    notes: list[str] = []
    mean = float(np.mean(a)) if a else None
    base = float(np.mean(b)) if b else None
    sd = float(np.std(a, ddof=1)) if len(a) >= 2 else None
    base_sd = float(np.std(b, ddof=1)) if len(b) >= 2 else None
    difference = mean - base if mean is not None and base is not None else None
    ratio = mean / base if difference is not None and base != 0 else None
    result = dict(n=len(a), n_baseline=len(b), n_missing=a_missing, n_baseline_missing=b_missing, mean=mean,
                  baseline_mean=base, sd=sd, baseline_sd=base_sd, difference=difference,
                  difference_ci_low=None, difference_ci_high=None, ratio=ratio, ratio_ci_low=None,
                  ratio_ci_high=None, ratio_ci90_low=None, ratio_ci90_high=None, ratio_method=None,
                  p_value=None, p_equivalence=None, margin=margin, equivalent=None, effect_size=None,
                  repeats_to_decide=None)
    if len(a) < 2 or len(b) < 2:
        return TwoSample(**result, notes=tuple(notes))
    assert mean is not None and base is not None and sd is not None and base_sd is not None
    assert difference is not None

    if sd == 0 and base_sd == 0:
        # Values that repeat exactly (a deterministic accuracy, say): no sampling spread was seen, so the
        # observed difference is the whole story — the interval collapses onto it and p is 0 or 1.
        notes.append("no variance in either group: the interval is the observed value itself")
        inside = (abs(difference) <= margin_abs if margin_abs is not None
                  else ratio is not None and 1 - margin <= ratio <= 1 + margin)
        result.update(difference_ci_low=difference, difference_ci_high=difference, ratio_method=EXACT,
                      p_value=0.0 if difference != 0 else 1.0, p_equivalence=0.0 if inside else 1.0,
                      equivalent=inside)
        if ratio is not None:
            result.update(ratio_ci_low=ratio, ratio_ci_high=ratio, ratio_ci90_low=ratio, ratio_ci90_high=ratio)
        return TwoSample(**result, notes=tuple(notes))

    v1, v0 = sd ** 2 / len(a), base_sd ** 2 / len(b)
    half = sps.t.ppf(1 - ALPHA / 2, welch_df(v1, len(a), v0, len(b))) * math.sqrt(v1 + v0)
    result.update(difference_ci_low=difference - half, difference_ci_high=difference + half,
                  p_value=_welch_p(a, b), effect_size=hedges_g(a, b),
                  repeats_to_decide=beyond_what_was_run(repeats_to_decide(sd, base_sd, difference, base, margin,
                                                                          margin_abs), len(a), len(b)))

    if min(a) > 0 and min(b) > 0:
        ci95, ci90 = _log_welch(a, b, 0.95), _log_welch(a, b, 0.90)
        result.update(ratio_method=LOG_WELCH, p_equivalence=_log_tost(a, b, margin))
    else:
        notes.append("values of 0 or below make logs impossible: Fieller's interval is used instead")
        ci95, ci90 = _fieller(a, b, 0.95), _fieller(a, b, 0.90)
        result.update(ratio_method=FIELLER, p_equivalence=_fieller_tost(a, b, margin) if base != 0 else None)
        if ci95 is None:
            notes.append("the ratio's interval is unbounded: the baseline mean is not clearly away from 0")
    if ci95 is not None:
        result.update(ratio_ci_low=ci95[0], ratio_ci_high=ci95[1])
    if ci90 is not None:
        result.update(ratio_ci90_low=ci90[0], ratio_ci90_high=ci90[1],
                      equivalent=1 - margin <= ci90[0] and ci90[1] <= 1 + margin)
    else:
        result.update(equivalent=False)
    if margin_abs is not None:  # equivalence on the difference: its 90 % interval within ±margin_abs
        df, se = welch_df(v1, len(a), v0, len(b)), math.sqrt(v1 + v0)
        half90 = sps.t.ppf(1 - ALPHA, df) * se
        result.update(equivalent=bool(-margin_abs <= difference - half90 and difference + half90 <= margin_abs),
                      p_equivalence=float(max(sps.t.sf((difference + margin_abs) / se, df),
                                              sps.t.sf((margin_abs - difference) / se, df))))
    return TwoSample(**result, notes=tuple(notes))


def decide(result: TwoSample, *, p_value: float | None = None, higher_is_better: bool = False,
           on_difference: bool = False) -> str:
    """One of VERDICTS. `p_value` overrides the result's own (a Holm-adjusted one); `on_difference` reads
    the difference's interval against 0 instead of the ratio's against 1 (accuracy, F1). `saves` is the
    better direction for the user (less energy; more accuracy), `costs` the worse."""
    if not result.sufficient:
        return "insufficient"
    p = result.p_value if p_value is None else p_value
    if on_difference:
        low, high, neutral = result.difference_ci_low, result.difference_ci_high, 0.0
    else:
        low, high, neutral = result.ratio_ci_low, result.ratio_ci_high, 1.0
    if p is not None and p < ALPHA and low is not None and high is not None:
        if high < neutral:
            return "costs" if higher_is_better else "saves"
        if low > neutral:
            return "saves" if higher_is_better else "costs"
    if result.equivalent:
        return "equivalent"
    return "inconclusive"
