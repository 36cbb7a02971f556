"""Where an energy change comes from: mean power or time.

Energy is mean power × time, so for each run log E = log P + log T with P = E / T exactly, and over the
runs the ratio of geometric means splits without remainder: GM(E) technique / GM(E) baseline = (GM(P)
ratio) × (GM(T) ratio). Each part gets its own Welch interval on the log scale (greenlab.core.report.stats),
so "saves 30 %: 25 % from shorter time, 7 % from lower mean power" reads with intervals, and the two parts
multiply to the whole. A technique that makes the hardware work less hard (lower precision on tensor
cores) lowers mean power; one that only finishes sooner lowers time. On an estimate (CPU time × watts)
the power part is constant by construction: it is said, not printed as a finding. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from greenlab.core.report import stats


@dataclass(frozen=True)
class EnergySplit:
    energy: stats.TwoSample
    power: stats.TwoSample | None  # None on an estimate: its power is the formula's, not measured
    time: stats.TwoSample

    def text(self) -> str:
        """'saves 30 % [22–37 %]: 25 % [18–31 %] from shorter time, 7 % [1–12 %] from lower mean power'."""
        head = _change(self.energy, "saves", "costs")
        if head is None:
            return "no energy change to split (fewer than two runs a side)"
        time_part = _change(self.time, "from shorter time", "from longer time", lead=False)
        parts = [time_part] if time_part else []
        if self.power is None:
            parts.append("mean power is the estimate's own (CPU time × watts), so none of it is power")
        else:
            power_part = _change(self.power, "from lower mean power", "from higher mean power", lead=False)
            if power_part:
                parts.append(power_part)
        return f"{head}: {', '.join(parts)}"


def _change(s: stats.TwoSample, less: str, more: str, *, lead: bool = True) -> str | None:
    if s.estimate is None:
        return None
    percent = abs(1 - s.estimate) * 100
    interval = ""
    if s.ci_low is not None and s.ci_high is not None:
        low, high = sorted(((1 - s.ci_high) * 100, (1 - s.ci_low) * 100))
        interval = f" [{low:.0f}–{high:.0f} %]" if s.estimate <= 1 else f" [{-high:.0f}–{-low:.0f} %]"
    word = less if s.estimate <= 1 else more
    return f"{word} {percent:.0f} %{interval}" if lead else f"{percent:.0f} %{interval} {word}"


def split(
    technique: Sequence[tuple[float, float]],
    baseline: Sequence[tuple[float, float]],
    *,
    estimated: bool = False,
    alpha: float = stats.ALPHA,
) -> EnergySplit:
    """`technique` and `baseline` runs as (energy J, seconds) pairs, both positive."""
    for side in (technique, baseline):
        if any(not (e > 0 and s > 0 and math.isfinite(e) and math.isfinite(s)) for e, s in side):
            raise ValueError("energy and time must be positive and finite to split on the log scale")

    def of(values: Sequence[float], base: Sequence[float]) -> stats.TwoSample:
        return stats.compare(values, base, scale=stats.RATIO, alpha=alpha)

    energy = of([e for e, _ in technique], [e for e, _ in baseline])
    time = of([s for _, s in technique], [s for _, s in baseline])
    power = None if estimated else of([e / s for e, s in technique], [e / s for e, s in baseline])
    return EnergySplit(energy, power, time)
