"""What to look at before a verdict: outliers, high spread and drift with run order, per side of a comparison.

Following the benchmarking tools people trust (hyperfine's and pyperf's warnings, criterion's outlier
classes), a cell's runs are checked before they are tested, and what is found is flagged, never dropped:
- an outlier: a modified z-score |0.6745 (x − median) / MAD| (Iglewicz and Hoaglin) above the level that
  flags 5 % of clean cells of its size (simulated for normal runs: 6.9 at 4 runs, 7.9 at 5, 4.6 at 10,
  3.9 at 25; the textbook 3.5 flags 21 % of clean 5-run cells), 4 runs or more; with a MAD of 0 (most
  runs equal) the mean absolute deviation stands in, scaled as Iglewicz and Hoaglin advise;
- high spread: a coefficient of variation above 10 % (energy and time only: accuracy is not a ratio scale);
- warm-up: the first run in execution order is the highest, more than 10 % above the median of the rest;
- drift: a monotone trend with run order (Kendall's tau, p < 0.05: exact without ties, else the normal
  approximation; 5 runs or more): a steady rise is the machine heating up, a steady fall a cache or clock
  warming;
- one side without spread: every run of one side identical while the other varies; the test then rests
  on the other side's spread alone;
- paused: runs whose process was stopped mid-run (flag paused), which the verdicts on energy and time leave
  out (the one check that names runs left out rather than flagged).

Pure functions over (run id, value) pairs in execution order; nothing here decides a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from statistics import median

# The 95th percentile of the largest |modified z| among n normal runs (400,000 simulated cells each): a
# clean cell is flagged 5 % of the time at every size.
_OUTLIER_LEVEL = {
    4: 6.9,
    5: 7.9,
    6: 5.5,
    7: 5.9,
    8: 4.9,
    9: 5.1,
    10: 4.6,
    11: 4.7,
    12: 4.4,
    13: 4.4,
    14: 4.2,
    15: 4.3,
    16: 4.1,
    17: 4.2,
    18: 4.0,
    19: 4.1,
    20: 4.0,
    21: 4.0,
    22: 4.0,
    23: 4.0,
}
_OUTLIER_LEVEL_LARGE = 3.9
MIN_OUTLIER_RUNS = 4
CV_LIMIT = 0.10
WARMUP_EXCESS = 0.10
TREND_ALPHA = 0.05
OUTLIER, HIGH_CV, WARM_UP, DRIFT, ONE_SIDE_CONSTANT = "outlier", "high_cv", "warm_up", "drift", "one_side_constant"
PAUSED = "paused"  # a run whose process was stopped mid-run (greenlab.core.run.pauses): left out, and named


@dataclass(frozen=True)
class Diagnostic:
    kind: str  # outlier | high_cv | warm_up | drift
    side: str  # technique | baseline
    run_ids: tuple[int, ...]
    text: str

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "side": self.side, "run_ids": list(self.run_ids), "text": self.text}


def outlier_level(n: int) -> float:
    return _OUTLIER_LEVEL.get(n, _OUTLIER_LEVEL_LARGE)


def outliers(values: Sequence[float]) -> list[tuple[int, float]]:
    """(index, modified z) of each value beyond its size's level; none with fewer than MIN_OUTLIER_RUNS.
    With a MAD of 0, 1.253314 × the mean absolute deviation stands in for it (Iglewicz and Hoaglin);
    with that 0 too, every value is the median."""
    if len(values) < MIN_OUTLIER_RUNS:
        return []
    centre = median(values)
    deviations = [abs(v - centre) for v in values]
    mad = median(deviations)
    if mad > 0:
        scale = mad / 0.6745
    else:
        scale = 1.253314 * sum(deviations) / len(deviations)
        if scale == 0:
            return []
    level = outlier_level(len(values))
    return [
        (index, (value - centre) / scale) for index, value in enumerate(values) if abs(value - centre) / scale > level
    ]


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    scale = max(abs(v) for v in values) or 1.0  # values near the float range must not overflow
    scaled = [v / scale for v in values]
    mean = math.fsum(scaled) / len(scaled)
    if mean <= 0:
        return None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in scaled) / (len(scaled) - 1))
    return sd / mean


@cache
def _inversion_counts(n: int) -> tuple[int, ...]:
    """How many permutations of n items have k inversions, k = 0..n(n−1)/2 (Mahonian numbers): the exact
    null distribution of Kendall's S without ties."""
    counts = [1]
    for size in range(2, n + 1):
        grown = [0] * (len(counts) + size - 1)
        for k, c in enumerate(counts):
            for extra in range(size):
                grown[k + extra] += c
        counts = grown
    return tuple(counts)


def kendall_trend(values: Sequence[float]) -> tuple[float, float] | None:
    """Kendall's tau of the values against their order, and its two-sided p: exact without ties (up to 30
    values), else the normal approximation with the ties' variance correction. None below 3 values."""
    n = len(values)
    if n < 3:
        return None
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            if values[j] > values[i]:
                concordant += 1
            elif values[j] < values[i]:
                discordant += 1
    pairs = n * (n - 1) // 2
    s = concordant - discordant
    ties = pairs - concordant - discordant
    if concordant + discordant == 0:
        return None
    tau = s / math.sqrt(pairs * (concordant + discordant))
    if ties == 0 and n <= 30:
        counts = _inversion_counts(n)
        total = math.factorial(n)
        inversions = discordant  # pairs out of increasing order
        tail = min(inversions, pairs - inversions)
        p = min(1.0, 2 * sum(counts[: tail + 1]) / total)
        return tau, p
    groups: dict[float, int] = {}
    for v in values:
        groups[v] = groups.get(v, 0) + 1
    variance = (n * (n - 1) * (2 * n + 5) - sum(t * (t - 1) * (2 * t + 5) for t in groups.values())) / 18
    if variance <= 0:
        return None
    z = (abs(s) - 1) / math.sqrt(variance)
    return tau, min(1.0, math.erfc(max(z, 0.0) / math.sqrt(2)))


def check_side(
    side: str, runs: Sequence[tuple[int, float]], unit: str, *, ratio_scale: bool, name: str | None = None
) -> list[Diagnostic]:
    """Every diagnostic of one side's (run id, value) pairs, given in execution order; `name` (the technique)
    is what the text calls the side."""
    called = name or side
    ids = [run_id for run_id, _ in runs]
    values = [value for _, value in runs]
    found: list[Diagnostic] = []
    for index, z in outliers(values):
        found.append(
            Diagnostic(
                OUTLIER,
                side,
                (ids[index],),
                f"{called} run {ids[index]} is an outlier "
                f"({_value(values[index], unit)} against a median of {_value(median(values), unit)}; "
                f"modified z = {z:.1f}, over the {outlier_level(len(values)):g} that flags 5 % of "
                f"clean {len(values)}-run sides): kept, but look at it or rerun it",
            )
        )
    if ratio_scale:
        cv = coefficient_of_variation(values)
        if cv is not None and cv > CV_LIMIT:
            found.append(
                Diagnostic(
                    HIGH_CV,
                    side,
                    tuple(ids),
                    f"{called} runs vary by {100 * cv:.0f} % (coefficient "
                    f"of variation above {100 * CV_LIMIT:.0f} %): a noisy host or too short runs",
                )
            )
        rest = values[1:]
        if len(values) >= 3 and values[0] > max(rest) and values[0] > median(rest) * (1 + WARMUP_EXCESS):
            excess = 100 * (values[0] / median(rest) - 1)
            found.append(
                Diagnostic(
                    WARM_UP,
                    side,
                    (ids[0],),
                    f"{called}'s first run ({ids[0]}) is {excess:.0f} % "
                    "above the median of the rest: warm-up? (a longer warm-up or discarding "
                    "the first repeat would tell)",
                )
            )
    if len(values) >= 5:
        trend = kendall_trend(values)
        if trend is not None and trend[1] < TREND_ALPHA:
            tau, p = trend
            way = "rises" if tau > 0 else "falls"
            why = "heat?" if tau > 0 else "warming caches or clocks?"
            found.append(
                Diagnostic(
                    DRIFT,
                    side,
                    tuple(ids),
                    f"{called} {way} steadily with run order (Kendall "
                    f"tau = {tau:+.2f}, p = {p:.3f}): {why} cooldown or more interleaving "
                    "would tell",
                )
            )
    return found


def one_side_constant(
    technique: Sequence[tuple[int, float]], baseline: Sequence[tuple[int, float]], name: str
) -> list[Diagnostic]:
    """Every run of one side identical while the other varies: legitimate for Welch's test, but its
    verdict then rests on the other side's spread alone."""
    found = []
    for side, called, runs, other in (
        ("technique", name, technique, baseline),
        ("baseline", "baseline", baseline, technique),
    ):
        if len(runs) >= 2 and len({v for _, v in runs}) == 1 and len({v for _, v in other}) > 1:
            found.append(
                Diagnostic(
                    ONE_SIDE_CONSTANT,
                    side,
                    tuple(i for i, _ in runs),
                    f"every {called} run has the same value: the test rests on the other side's spread alone",
                )
            )
    return found


def paused_runs(side: str, run_ids: Sequence[int]) -> Diagnostic:
    """The runs of one side left out because their process was paused mid-run (flag paused)."""
    ids = ", ".join(str(i) for i in run_ids)
    many = len(run_ids) != 1
    return Diagnostic(
        PAUSED,
        side,
        tuple(run_ids),
        f"{side} run{'s' * many} {ids} {'were' if many else 'was'} paused mid-run (flag paused: the process was "
        f"stopped, so {'their' if many else 'its'} energy and time include the pause); left out of this verdict",
    )


def _value(value: float, unit: str) -> str:
    if unit == "pp":
        return f"{100 * value:.1f} %"
    if unit == "J":
        return f"{value:.4g} J"
    if unit == "s":
        return f"{value:.4g} s"
    return f"{value:.4g}"
