"""Two-sample statistics of one comparison, a family's Holm adjustment, and the verdict rule.

Pure functions over lists of numbers; nothing here knows of runs, stores or metric names (the caller says
which scale a metric is tested on: greenlab.core.plan.metrics). scipy supplies the t distribution.

One scale per comparison, so the interval and the test always agree:
- `ratio` (energy, time): the values' logs are compared. The estimate is the ratio of geometric means,
  exp(mean log x − mean log x₀); p is Welch's two-sided t-test on the logs; the (1 − α) interval is its
  interval, exponentiated; the equivalence test (two one-sided tests at α) asks whether the (1 − 2α)
  interval lies within [1/(1 + m), 1 + m], a band symmetric on that scale. So "the interval excludes 1"
  and "p < α" are one statement, and the equivalence interval has the same degrees of freedom.
  Values that are 0, negative or not finite have no log: the caller leaves them out (and says so).
- `difference` (accuracy, F1): the same on the raw values, the band ±margin in the values' unit.

Degrees of freedom: Welch–Satterthwaite's, never more than 2 (min(n, n₀) − 1), the most an equal design of
the smaller side's size could have. With equal sides that is Welch's own; with unequal sides, where a small
side with the larger spread makes Welch liberal (5.8 % at 3 against 5 runs, 9 % at 2 against 5, 3× the
variance), the cap keeps it near α, and a run added to either side never lowers it (a rule that switched
on equal sizes would). benchmarks/verdict_calibration.py shows the rates.

With no spread on either side (every run of each side identical) there is no test: `no_spread` is set and
no p, interval or equivalence is formed. Effect size: Hedges' g on the tested scale.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType

RATIO = "ratio"
DIFFERENCE = "difference"
ALPHA = 0.05
POWER = 0.80  # of the "repeats that would decide" estimate
MAX_REPEATS = 10_000
WELCH = "Welch t (Welch–Satterthwaite df, at most 2 (min n − 1))"


@functools.cache
def _special() -> ModuleType:
    """scipy.special, imported on the first verdict: a face that starts (the TUI's first frame, a headless
    grid's first line) does not wait the fifth of a second scipy takes to load."""
    from scipy import special

    return special


def t_quantile(p: float, df: float) -> float:
    return float(_special().stdtrit(df, p))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    return float(_special().stdtr(df, -t))


@dataclass(frozen=True)
class TwoSample:
    """A technique's values (n) against its baseline's (n_baseline), on one scale.

    `estimate`, `ci_low`/`ci_high` ((1 − α)) and `eq_low`/`eq_high` ((1 − 2α), the interval the equivalence
    test reads) are on the display scale: a ratio (technique / baseline) or a difference (technique −
    baseline, in the values' unit). `center`, `se` and `df` are on the tested scale (log values for a
    ratio), so `interval(level)` gives an interval at any level with the same test. Everything that cannot
    be formed (fewer than two values a side, no spread) is None.
    """

    scale: str
    alpha: float
    margin: float  # ratio: m, the band [1/(1 + m), 1 + m]; difference: ±margin in the values' unit
    n: int
    n_baseline: int
    n_missing: int = 0  # values that were None: left out
    n_baseline_missing: int = 0
    mean: float | None = None  # arithmetic means and SDs of the kept values, in their unit
    baseline_mean: float | None = None
    sd: float | None = None
    baseline_sd: float | None = None
    center: float | None = None  # on the tested scale: mean log difference, or mean difference
    se: float | None = None
    df: float | None = None
    tested_sd: float | None = None  # the SDs on the tested scale (of the logs, for a ratio)
    tested_baseline_sd: float | None = None
    test: str | None = None
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    eq_low: float | None = None
    eq_high: float | None = None
    p_value: float | None = None
    p_equivalence: float | None = None
    equivalent: bool | None = None
    effect_size: float | None = None
    no_spread: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def sufficient(self) -> bool:
        return self.n >= 2 and self.n_baseline >= 2

    @property
    def neutral(self) -> float:
        """No change, on the display scale."""
        return 1.0 if self.scale == RATIO else 0.0

    @property
    def equivalence_bounds(self) -> tuple[float, float]:
        if self.scale == RATIO:
            return 1 / (1 + self.margin), 1 + self.margin
        return -self.margin, self.margin

    @property
    def difference(self) -> float | None:
        """Mean minus baseline mean, in the values' unit (descriptive for a ratio metric)."""
        return None if self.mean is None or self.baseline_mean is None else self.mean - self.baseline_mean

    @property
    def ratio_of_means(self) -> float | None:
        if self.mean is None or not self.baseline_mean:
            return None
        return self.mean / self.baseline_mean

    def interval(self, level: float) -> tuple[float, float] | None:
        """The two-sided interval at `level` (0.95, or a Holm step's 1 − α/k), on the display scale."""
        if self.center is None or self.se is None or self.df is None:
            return None
        return _interval(self.center, self.se, self.df, level, self.scale == RATIO)


def _interval(center: float, se: float, df: float, level: float, ratio: bool) -> tuple[float, float]:
    half = t_quantile(0.5 + level / 2, df) * se
    low, high = center - half, center + half
    return (_exp(low), _exp(high)) if ratio else (low, high)


def _exp(x: float) -> float:
    """exp that saturates: an interval of one degree of freedom at a Holm step can reach e^1000."""
    return math.exp(x) if x < 709.0 else math.inf


def clean(values: Iterable[float | None]) -> tuple[list[float], int]:
    """The finite values, and how many were dropped (None, NaN or infinite)."""
    given = list(values)
    kept = [float(v) for v in given if v is not None and math.isfinite(float(v))]
    return kept, len(given) - len(kept)


def _mean(values: Sequence[float]) -> float:
    """The mean, scaled first so that values near the float range (a corrupt 1e300 J) cannot overflow."""
    scale = max(map(abs, values)) or 1.0
    # divided before scaling back: 2e308 overflows
    return scale * (math.fsum([v / scale for v in values]) / len(values))


def mean_of(values: Sequence[float]) -> float:
    """The mean of at least one value, safe near the float range (see `_mean`)."""
    return _mean(values)


def _sd(values: Sequence[float], mean: float) -> float:
    """The sample SD, scaled as `_mean`."""
    deviations = [v - mean for v in values]
    scale = max(map(abs, deviations)) or 1.0
    return scale * math.sqrt(math.fsum([(d / scale) ** 2 for d in deviations]) / (len(values) - 1))


def _var(values: Sequence[float], mean: float) -> float:
    sd = _sd(values, mean)
    return sd * sd  # a product overflows to inf; a power would raise OverflowError


def mean_ci95(values: Sequence[float]) -> float | None:
    """Half-width of the 95 % Student interval of the mean, or None with fewer than two values."""
    if len(values) < 2:
        return None
    m = _mean(values)
    return t_quantile(0.975, len(values) - 1) * math.sqrt(_var(values, m) / len(values))


def welch_df(v1: float, n1: int, v0: float, n0: int) -> float:
    """Welch–Satterthwaite degrees of freedom, from the squared standard errors v = s²/n."""
    denominator = v1 * v1 / (n1 - 1) + v0 * v0 / (n0 - 1)  # products: inf, not OverflowError, at the range's end
    total = v1 + v0
    return total * total / denominator if 0 < denominator < math.inf else float(n1 + n0 - 2)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """(mean a − mean b) / pooled SD, times J = Γ(df/2) / (√(df/2) Γ((df−1)/2)); None without spread."""
    n1, n0 = len(a), len(b)
    if n1 < 2 or n0 < 2:
        return None
    ma, mb = _mean(a), _mean(b)
    return _hedges_g(n1, n0, ma, mb, _var(a, ma), _var(b, mb))


def _hedges_g(n1: int, n0: int, ma: float, mb: float, va: float, vb: float) -> float | None:
    """hedges_g from the sides' sizes, means and variances (which `compare` has already)."""
    df = n1 + n0 - 2
    pooled = math.sqrt(((n1 - 1) * va + (n0 - 1) * vb) / df)
    if pooled == 0:
        return None
    correction = math.exp(_special().gammaln(df / 2) - _special().gammaln((df - 1) / 2)) / math.sqrt(df / 2)
    return float((ma - mb) / pooled * correction)


def compare(
    values: Iterable[float | None],
    baseline: Iterable[float | None],
    *,
    scale: str = RATIO,
    alpha: float = ALPHA,
    margin: float = 0.05,
) -> TwoSample:
    """Everything a verdict needs about `values` against `baseline`; see the module docstring.

    None values are left out and counted. Values the scale cannot take (for a ratio: 0, negative or not
    finite; for a difference: not finite) must have been left out by the caller, which names them.
    """
    given, given_baseline = list(values), list(baseline)
    a = [float(v) for v in given if v is not None]
    b = [float(v) for v in given_baseline if v is not None]
    missing, base_missing = len(given) - len(a), len(given_baseline) - len(b)
    ratio = scale == RATIO
    if ratio and any(v <= 0 or not math.isfinite(v) for v in (*a, *b)):
        raise ValueError("a ratio is tested on logs: leave out values that are 0, negative or not finite")
    if not ratio and any(not math.isfinite(v) for v in (*a, *b)):
        raise ValueError("leave out values that are not finite")
    result: dict[str, object] = {
        "scale": scale,
        "alpha": alpha,
        "margin": margin,
        "n": len(a),
        "n_baseline": len(b),
        "n_missing": missing,
        "n_baseline_missing": base_missing,
    }
    # Each mean and variance computed once, and used wherever the formulas need it.
    if a:
        result["mean"] = _mean(a)
    if b:
        result["baseline_mean"] = _mean(b)
    if len(a) >= 2:
        result["sd"] = _sd(a, result["mean"])  # type: ignore[arg-type]
    if len(b) >= 2:
        result["baseline_sd"] = _sd(b, result["baseline_mean"])  # type: ignore[arg-type]
    if a and b:
        ta = [math.log(v) for v in a] if ratio else a
        tb = [math.log(v) for v in b] if ratio else b
        ma, mb = _mean(ta), _mean(tb)
        center = ma - mb
        result["estimate"] = _exp(center) if ratio else center
    if len(a) < 2 or len(b) < 2:
        return TwoSample(**result)  # type: ignore[arg-type]

    # Identical values on each side: no spread to test against. Compared as values, not as a variance,
    # which rounding can leave a hair above 0 (three runs at accuracy 0.1 have a log variance of 1e-33).
    if len(set(a)) == 1 and len(set(b)) == 1:
        return TwoSample(**result, no_spread=True)  # type: ignore[arg-type]

    va, vb = _var(ta, ma), _var(tb, mb)
    v1, v0 = va / len(ta), vb / len(tb)
    se = math.sqrt(v1 + v0)
    if not se > 0 or not math.isfinite(se):  # a spread below what a double can hold (denormal values)
        return TwoSample(**result, no_spread=True)  # type: ignore[arg-type]
    df = min(welch_df(v1, len(a), v0, len(b)), 2.0 * (min(len(a), len(b)) - 1))
    t = center / se
    p = min(1.0, 2 * t_sf(abs(t), df))
    bound = math.log1p(margin) if ratio else margin
    p_eq = max(t_sf((center + bound) / se, df), t_sf((bound - center) / se, df))
    result.update(
        center=center,
        se=se,
        df=df,
        test=WELCH,
        p_value=p,
        p_equivalence=p_eq,
        tested_sd=math.sqrt(v1 * len(ta)),
        tested_baseline_sd=math.sqrt(v0 * len(tb)),
        equivalent=bool(p_eq < alpha),
        effect_size=_hedges_g(len(ta), len(tb), ma, mb, va, vb),
    )
    ci = _interval(center, se, df, 1 - alpha, ratio)
    eq = _interval(center, se, df, 1 - 2 * alpha, ratio)
    result.update(ci_low=ci[0], ci_high=ci[1], eq_low=eq[0], eq_high=eq[1])
    return TwoSample(**result)  # type: ignore[arg-type]


# -- a family: Holm -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HolmStep:
    """One comparison's place in its family: Holm's adjusted p and the divisor k of the interval that
    matches the decision (its level is 1 − α/k)."""

    p_holm: float | None
    divisor: int
    family: int


def holm(p_values: Sequence[float | None], family: int | None = None, alpha: float = ALPHA) -> list[HolmStep]:
    """Holm's step-down adjustment over a declared family of `family` comparisons (at least the p-values
    given); a comparison declared but without a p-value (not run, no spread, too few runs) counts as p = 1,
    so the family never shrinks to what happened to be testable.

    The divisor of rank r (ascending p) is m − r + 1 up to the first rank s that Holm does not reject, and
    m − s + 1 from there on. The (1 − α/k) interval then excludes no change exactly when Holm rejects: a
    rejected comparison's own step level excludes it; past the step where Holm stopped, every p is at least
    the stopping one, so the interval at that step's level keeps no change inside.
    """
    m = max(family or 0, len(p_values))
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    steps: list[HolmStep] = [HolmStep(None, m, m)] * len(p_values)
    running = 0.0
    stopped: int | None = None
    previous: tuple[float, int] | None = None  # (p, divisor) of the rank before
    for rank, (p, index) in enumerate(ranked, start=1):
        running = max(running, min(1.0, (m - rank + 1) * p))
        if stopped is None and (m - rank + 1) * p >= alpha:
            stopped = rank
        divisor = m - (rank if stopped is None else stopped) + 1
        if previous is not None and previous[0] == p:
            divisor = previous[1]  # tied p-values are one decision: one interval level
        previous = (p, divisor)
        steps[index] = HolmStep(running, divisor, m)
    return steps


# -- the verdict rule ---------------------------------------------------------------------------------------
SAVES, COSTS, EQUIVALENT, INCONCLUSIVE, INSUFFICIENT, NO_SPREAD = (
    "saves",
    "costs",
    "equivalent",
    "inconclusive",
    "insufficient",
    "no spread",
)
VERDICTS = (SAVES, COSTS, EQUIVALENT, INCONCLUSIVE, INSUFFICIENT, NO_SPREAD)


@dataclass(frozen=True)
class Decision:
    verdict: str
    negligible: bool  # significant, and yet inside the equivalence band: smaller than the effect of interest
    adjusted: tuple[float, float] | None  # the interval that matches the decision (level 1 − α/k)
    adjusted_level: float | None


def decide(s: TwoSample, step: HolmStep, *, higher_is_better: bool = False) -> Decision:
    """The verdict of one comparison under its family's Holm step; see the decision table (docs)."""
    if not s.sufficient:
        return Decision(INSUFFICIENT, False, None, None)
    if s.no_spread or s.p_value is None:
        return Decision(NO_SPREAD, False, None, None)
    level = 1 - s.alpha / step.divisor
    adjusted = s.interval(level)
    significant = step.p_holm is not None and step.p_holm < s.alpha
    if significant and s.center is not None:
        lower = s.center < 0
        verdict = SAVES if lower != higher_is_better else COSTS
        return Decision(verdict, bool(s.equivalent), adjusted, level)
    return Decision(EQUIVALENT if s.equivalent else INCONCLUSIVE, False, adjusted, level)


# -- repeats that would decide ------------------------------------------------------------------------------
def repeats_to_decide(
    sd: float, baseline_sd: float, center: float, bound: float, *, alpha: float = ALPHA, divisor: int = 1
) -> int | None:
    """Runs per side (equal groups, so Welch–Satterthwaite df) with which the test at the family's
    strictest step (α / divisor) would have 80 % power to show the observed difference, or the equivalence
    test (at α, both one-sided tests) 80 % power to show it lies inside ±bound — whichever needs fewer — if
    the observed center and SDs (on the tested scale) were the truth. None when neither happens by
    MAX_REPEATS.

    Both conditions only ever turn true as n grows (the standard error shrinks and the t quantiles fall
    with the df), so the smallest n is found by bisection: a few quantiles, not one per candidate n."""
    spread = sd * sd + baseline_sd * baseline_sd
    fourth = (sd * sd) * (sd * sd) + (baseline_sd * baseline_sd) * (baseline_sd * baseline_sd)
    if spread == 0 or not math.isfinite(fourth):
        return None

    def decides(n: int) -> bool:
        se = math.sqrt(spread / n)
        df = spread * spread * (n - 1) / fourth
        if abs(center) / se >= t_quantile(1 - alpha / divisor / 2, df) + t_quantile(POWER, df):
            return True
        if abs(center) >= bound:
            return False
        # Equivalence needs both one-sided tests: near no difference each may fail on its own side.
        critical = t_quantile(1 - alpha, df)
        fails = t_sf(-(critical - (bound - abs(center)) / se), df) + t_sf(-(critical - (bound + abs(center)) / se), df)
        return 1 - fails >= POWER

    if not decides(MAX_REPEATS):
        return None
    low, high = 2, MAX_REPEATS  # decides(high) holds; find the smallest such n
    if decides(low):
        return low
    while high - low > 1:
        middle = (low + high) // 2
        if decides(middle):
            high = middle
        else:
            low = middle
    return high


def beyond_what_was_run(needed: int | None, n: int, n_baseline: int) -> int | None:
    """`needed` runs per side, but never as few as the smaller side already has: equal groups that small
    were already run, and did not decide."""
    return None if needed is None else max(needed, min(n, n_baseline) + 1)


def repeats_for(s: TwoSample, step: HolmStep) -> int | None:
    """repeats_to_decide for a comparison at its family's strictest step, never fewer than were run."""
    if s.center is None or s.tested_sd is None or s.tested_baseline_sd is None:
        return None
    bound = math.log1p(s.margin) if s.scale == RATIO else s.margin
    needed = repeats_to_decide(
        s.tested_sd, s.tested_baseline_sd, s.center, bound, alpha=s.alpha, divisor=step.family or 1
    )
    return beyond_what_was_run(needed, s.n, s.n_baseline)
