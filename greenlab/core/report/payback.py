"""What a technique saves once its model is deployed: the extra energy it took to fine-tune against the
energy it saves per inference, and after how many inferences it pays back.

For one technique against its baseline, each side's runs give pairs (fine-tuning energy E, energy per
inference e), kept together because one run measured both. ΔE = mean(E technique) − mean(E baseline) is
the extra fine-tuning energy, Δe = mean(e baseline) − mean(e technique) the saving per inference, and
where the technique costs more to fine-tune and saves per inference it pays back after N* = ΔE / Δe
inferences. The fine-tuning is assumed to be done once. The words:
- "pays back after 3,100 inferences [1,900–6,800]": costs more to fine-tune, saves per inference;
- "saves from the first inference": cheaper to fine-tune and to run;
- "never pays back": costs more to fine-tune and per inference;
- "uses up its fine-tuning saving after N inferences": cheaper to fine-tune, costs more per inference;
- "inconclusive": the interval of Δe holds both a saving and a cost; where the technique costs more to
  fine-tune, N*'s interval is still given ("inconclusive (pays back after 1,900 inferences, or never)").
The saving per inference decides: its Welch t interval (the Welch–Satterthwaite df, as every verdict
here) at the level asked. N*'s interval is Fieller's for a ratio of means, at the same t, with the
covariance of a run's two figures (one run measured both): unlike the delta method it holds the
denominator's uncertainty, and it is open above ("[1,900–never]") where the saving is not told from
none. A percentile bootstrap covered 80 % at three runs a side; benchmarks/verdict_calibration.py
simulates this interval's coverage.
Pure: reads no store, knows no face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from greenlab.core.report import stats

PAYS_BACK, FROM_FIRST, NEVER, USES_UP, INCONCLUSIVE = (
    "pays back",
    "saves from the first inference",
    "never pays back",
    "uses up its fine-tuning saving",
    "inconclusive",
)
METHOD = "Welch t on the saving per inference; Fieller's interval for the payback point"


@dataclass(frozen=True)
class Payback:
    """One technique's payback against its baseline (module docstring)."""

    extra_train_j: float  # ΔE: positive when the technique costs more to fine-tune
    saving_j: float  # Δe: positive when it saves per inference
    saving_interval: tuple[float, float]
    word: str
    inferences: float | None = None  # N*, where it pays back or uses its saving up
    interval: tuple[float, float] | None = None  # N*'s; the high end inf where some resamples never do
    level: float = 0.95
    n: int = 0
    n_baseline: int = 0
    method: str = METHOD

    def text(self) -> str:
        """'pays back after 3,100 inferences [1,900–6,800]', 'saves from the first inference', ..."""
        if self.word in (PAYS_BACK, USES_UP) and self.inferences is not None:
            span = f" [{_count(self.interval[0])}–{_count(self.interval[1])}]" if self.interval else ""
            return f"{self.word} after {_count(self.inferences)} inferences{span}"
        if self.word == INCONCLUSIVE and self.interval is not None:
            return (
                f"inconclusive (pays back after {_count(self.interval[0])} inferences, or {_count(self.interval[1])})"
            )
        return self.word


def _count(value: float) -> str:
    if math.isinf(value):
        return "never"
    return f"{max(0, round(value)):,}"


def payback(
    technique: Sequence[tuple[float, float]],
    baseline: Sequence[tuple[float, float]],
    *,
    level: float = 0.95,
) -> Payback | None:
    """The payback of `technique` runs against `baseline` runs, each a (fine-tuning J, J per inference)
    pair; None with fewer than two runs a side (no interval can be drawn)."""
    if len(technique) < 2 or len(baseline) < 2:
        return None
    t_side, b_side = _Side(technique), _Side(baseline)
    extra = t_side.train_mean - b_side.train_mean
    saving = b_side.per_mean - t_side.per_mean
    # Variances of ΔE and Δe, and their covariance (one run measured both: ΔE rises with the technique's
    # fine-tuning energy, Δe falls with its energy per inference)
    v_extra = t_side.train_var / t_side.n + b_side.train_var / b_side.n
    v_saving = t_side.per_var / t_side.n + b_side.per_var / b_side.n
    cov = -(t_side.cov / t_side.n + b_side.cov / b_side.n)
    df = _welch_df(t_side.per_var, t_side.n, b_side.per_var, b_side.n)
    t = stats.t_quantile(0.5 + level / 2, df) if df is not None else 0.0
    half = t * math.sqrt(v_saving)
    found = Payback(
        extra, saving, (saving - half, saving + half), INCONCLUSIVE, level=level, n=t_side.n, n_baseline=b_side.n
    )
    low, high = found.saving_interval
    if low > 0 >= extra:
        return replace(found, word=FROM_FIRST)
    if high < 0 <= extra:
        return replace(found, word=NEVER)
    if extra <= 0 < high and low <= 0:
        return found  # cheaper to fine-tune, undecided per inference
    sign = 1.0 if extra > 0 else -1.0  # USES_UP: the same ratio of the cost per inference and the saving
    interval = _fieller(sign * extra, sign * saving, v_extra, v_saving, cov, t)
    if low > 0:
        return replace(found, word=PAYS_BACK, inferences=extra / saving, interval=interval)
    if high < 0:
        return replace(found, word=USES_UP, inferences=extra / saving, interval=interval)
    return replace(found, interval=interval)  # costs more to fine-tune, undecided per inference


@dataclass(frozen=True)
class _Side:
    """One side's runs: means, variances and the covariance of fine-tuning and per-inference energy."""

    n: int
    train_mean: float
    per_mean: float
    train_var: float
    per_var: float
    cov: float

    def __init__(self, runs: Sequence[tuple[float, float]]) -> None:
        n = len(runs)
        train_mean = math.fsum(e for e, _ in runs) / n
        per_mean = math.fsum(i for _, i in runs) / n
        values = {
            "n": n,
            "train_mean": train_mean,
            "per_mean": per_mean,
            "train_var": math.fsum((e - train_mean) ** 2 for e, _ in runs) / (n - 1),
            "per_var": math.fsum((i - per_mean) ** 2 for _, i in runs) / (n - 1),
            "cov": math.fsum((e - train_mean) * (i - per_mean) for e, i in runs) / (n - 1),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)


def _welch_df(v1: float, n1: int, v0: float, n0: int) -> float | None:
    if v1 == 0 and v0 == 0:
        return None
    return stats.welch_df(v1 / n1, n1, v0 / n0, n0)


def _fieller(extra: float, saving: float, v_extra: float, v_saving: float, cov: float, t: float) -> tuple[float, float]:
    """Fieller's interval for extra / saving: the N with (extra − N·saving)² ≤ t²·Var(extra − N·saving),
    which holds the denominator's own uncertainty (a saving barely above zero leaves the interval open
    above: never). A bound below zero is cut to 0: a cost it does not have is paid back at once."""
    a = saving * saving - t * t * v_saving
    b = extra * saving - t * t * cov
    c = extra * extra - t * t * v_extra
    disc = b * b - a * c
    if a <= 0 or disc < 0:  # the saving is not told from none at this level: the interval is unbounded
        return (max(0.0, c / (2 * b)) if a == 0 and b > 0 else 0.0, math.inf)
    root = math.sqrt(disc)
    return (max(0.0, (b - root) / a), max(0.0, (b + root) / a))
