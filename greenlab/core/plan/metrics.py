"""The metrics a verdict can be about: their names, labels, the scale each is tested on and its direction.

One declaration read by the analysis plan (which metric is primary), the statistics (which scale) and every
renderer (labels, units). Energy, energy to target and time are ratios, tested on log values; accuracy and
F1 are fractions, compared as differences in percentage points. Nothing here computes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

RATIO = "ratio"  # technique / baseline, tested on log values
DIFFERENCE = "difference"  # technique - baseline, in the metric's unit (accuracy: a fraction, shown in pp)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    scale: str
    higher_is_better: bool = False
    energy: bool = False  # a figure in joules: it carries how it was obtained (measured, estimated)


_DECLARED = (
    Metric("energy_training_j", "training energy", RATIO, energy=True),
    Metric("energy_j", "whole-run energy", RATIO, energy=True),
    Metric("duration_s", "time", RATIO),
    Metric("val_accuracy", "validation accuracy", DIFFERENCE, higher_is_better=True),
    Metric("val_f1", "validation F1", DIFFERENCE, higher_is_better=True),
    Metric("energy_to_target_j", "energy to the target accuracy", RATIO, energy=True),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in _DECLARED}
METRICS: tuple[str, ...] = tuple(BY_NAME)
DEFAULT_PRIMARY = "energy_training_j"
DIFFERENCE_METRICS: tuple[str, ...] = tuple(m.name for m in _DECLARED if m.scale == DIFFERENCE)
RATIO_METRICS: tuple[str, ...] = tuple(m.name for m in _DECLARED if m.scale == RATIO)
HIGHER_IS_BETTER: tuple[str, ...] = tuple(m.name for m in _DECLARED if m.higher_is_better)
ENERGY_METRICS: tuple[str, ...] = tuple(m.name for m in _DECLARED if m.energy)
LABELS: dict[str, str] = {m.name: m.label for m in _DECLARED}


def label(name: str) -> str:
    return LABELS.get(name, name)
