"""Comparisons of stored runs: each technique against its baseline, with means and confidence intervals.

Pure functions over `runs` rows (dicts), shared by the headless summary and the TUI's runs table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Any, Iterable

METRICS = ("energy_j", "energy_training_j", "duration_s", "val_accuracy")
# Two-sided 95 % Student t quantiles by degrees of freedom; beyond 30 the normal 1.96 is close enough.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def ci95(values: list[float]) -> float | None:
    """Half-width of the 95 % confidence interval of the mean, or None with fewer than two values."""
    if len(values) < 2:
        return None
    dof = len(values) - 1
    t = next((q for d, q in sorted(_T95.items()) if dof <= d), 1.96)
    return t * stdev(values) / math.sqrt(len(values))


def baseline_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Runs compare against the baseline of the same experiment, model and dataset."""
    return (row.get("experiment"), row.get("model"), row.get("dataset"))


def percent_change(value: float | None, reference: float | None) -> float | None:
    if value is None or reference in (None, 0):
        return None
    return 100.0 * (value - reference) / reference


@dataclass
class Group:
    experiment: str
    model: str
    dataset: str
    technique: str
    runs: int
    means: dict[str, float | None]
    ci: dict[str, float | None]
    change: dict[str, float | None]  # percent against the baseline mean


def _mean(rows: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return (mean(values) if values else None), ci95(values)


def summarize(rows: Iterable[dict[str, Any]]) -> list[Group]:
    """Completed runs grouped by (experiment, model, dataset, technique), each compared to its baseline."""
    completed = [r for r in rows if r.get("status") == "completed"]
    buckets: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in completed:
        buckets.setdefault((*baseline_key(row), row["technique"]), []).append(row)
    baselines = {key[:3]: {m: _mean(members, m)[0] for m in METRICS}
                 for key, members in buckets.items() if key[3] == "baseline"}
    groups = []
    for key, members in buckets.items():
        means = {}
        intervals = {}
        for metric in METRICS:
            means[metric], intervals[metric] = _mean(members, metric)
        reference = baselines.get(key[:3], {})
        change = {m: percent_change(means[m], reference.get(m)) if key[3] != "baseline" else None
                  for m in METRICS}
        groups.append(Group(key[0], key[1], key[2], key[3], len(members), means, intervals, change))
    groups.sort(key=lambda g: (g.experiment or "", g.model, g.dataset, g.technique != "baseline", g.technique))
    return groups


def row_change(row: dict[str, Any], all_rows: Iterable[dict[str, Any]], metric: str) -> float | None:
    """A single run's change in `metric` against the mean of its completed baselines."""
    if row.get("technique") == "baseline":
        return None
    key = baseline_key(row)
    values = [r[metric] for r in all_rows if r.get("status") == "completed" and r.get("technique") == "baseline"
              and baseline_key(r) == key and r.get(metric) is not None]
    return percent_change(row.get(metric), mean(values)) if values else None


def format_energy(joules: float | None) -> str:
    if joules is None:
        return "-"
    if joules >= 3600:
        return f"{joules / 3600:.2f} Wh"
    return f"{joules:.1f} J"


def format_change(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"
