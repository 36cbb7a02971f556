"""Comparisons of stored runs: each technique against its baseline, with means and confidence intervals.

Pure functions over `runs` rows (dicts), shared by the headless summary and the TUI's runs table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Any, Iterable

from greenlab.core.config import conditions_key

METRICS = ("energy_j", "energy_training_j", "duration_s", "val_accuracy")
# Two-sided 95 % Student t quantiles for 1..30 degrees of freedom; beyond 30 the normal 1.96 is close.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def ci95(values: list[float]) -> float | None:
    """Half-width of the 95 % confidence interval of the mean, or None with fewer than two values."""
    if len(values) < 2:
        return None
    dof = len(values) - 1
    t = _T95[dof - 1] if dof <= len(_T95) else 1.96
    return t * stdev(values) / math.sqrt(len(values))


def baseline_key(row: dict[str, Any]) -> Any:
    """Runs compare against the baselines of the same conditions (greenlab.core.config.conditions_key):
    model, dataset and the settings that change the work; not the technique, the repeat, the accounting
    inputs or the experiment's name. Rows stored before the key existed get it from their settings."""
    if row.get("conditions_key"):
        return row["conditions_key"]
    settings = row.get("settings")
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except ValueError:
            settings = None
    if isinstance(settings, dict) and row.get("model"):
        return conditions_key(row["model"], {k: v for k, v in settings.items() if k != "techniques"})
    return (row.get("model"), row.get("dataset"))


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
    """Completed runs grouped by baseline_key and technique, each compared to its matching baseline."""
    completed = [r for r in rows if r.get("status") == "completed"]
    buckets: dict[tuple[tuple[Any, ...], str], list[dict[str, Any]]] = {}
    for row in completed:
        buckets.setdefault((baseline_key(row), row["technique"]), []).append(row)
    baselines = baseline_means(completed)
    groups = []
    for (key, technique), members in buckets.items():
        means = {}
        intervals = {}
        for metric in METRICS:
            means[metric], intervals[metric] = _mean(members, metric)
        reference = baselines.get(key, {})
        change = {m: percent_change(means[m], reference.get(m)) if technique != "baseline" else None
                  for m in METRICS}
        first = members[0]
        groups.append(Group(first.get("experiment"), first["model"], first.get("dataset"), technique, len(members),
                            means, intervals, change))
    groups.sort(key=lambda g: (g.experiment or "", g.model, g.dataset, g.technique != "baseline", g.technique))
    return groups


def baseline_means(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, float | None]]:
    """Mean of each metric over the completed baselines, by baseline_key: computed once per table."""
    members: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "completed" and row.get("technique") == "baseline":
            members.setdefault(baseline_key(row), []).append(row)
    return {key: {m: _mean(group, m)[0] for m in METRICS} for key, group in members.items()}


def changes(rows: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Each row's percent change per metric against its matching baselines (None for a baseline)."""
    means = baseline_means(rows)
    result = []
    for row in rows:
        reference = means.get(baseline_key(row), {}) if row.get("technique") != "baseline" else {}
        result.append({m: percent_change(row.get(m), reference.get(m)) for m in METRICS})
    return result


def row_change(row: dict[str, Any], all_rows: Iterable[dict[str, Any]], metric: str) -> float | None:
    """A single run's change in `metric` against the mean of its completed baselines."""
    if row.get("technique") == "baseline":
        return None
    return percent_change(row.get(metric), baseline_means(all_rows).get(baseline_key(row), {}).get(metric))


def format_energy(joules: float | None, ci_j: float | None = None) -> str:
    """J below an hour's watt (3600 J), Wh above; a confidence interval is shown in the same unit."""
    if joules is None:
        return "-"
    if joules >= 3600:
        text = f"{joules / 3600:.2f} Wh"
        return text if ci_j is None else f"{joules / 3600:.2f}±{ci_j / 3600:.2f} Wh"
    return f"{joules:.1f} J" if ci_j is None else f"{joules:.1f}±{ci_j:.1f} J"


def format_change(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"
