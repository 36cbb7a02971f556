"""Comparisons of stored runs: each technique against the completed baselines of the same conditions.

Pure functions over `runs` rows (dicts), shared by the headless summary, the TUI's runs pane and
`greenlab report`. The statistics of one comparison live in greenlab.core.stats; this module matches
runs to baselines, applies Holm across a report, chooses the verdict and words the sentence.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from statistics import mean
from typing import Any, Callable, Iterable

from greenlab.core import formatting, stats
from greenlab.core.config import conditions_key

HEADLINE = "energy_training_j"
TARGET_DROP_PP = 1.0  # energy to target: the target is the baselines' mean final accuracy minus this
METRICS = ("energy_training_j", "energy_j", "duration_s", "val_accuracy", "val_f1", "energy_to_target_j")
DIFFERENCE_METRICS = ("val_accuracy", "val_f1")  # fractions, compared in percentage points
# Accuracy and F1 are "equivalent" when the 90 % interval of their difference lies within ±1 pp: the same
# tolerance as the capacity scan's and the energy-to-target's, rather than a relative 5 % (4.5 pp at 90 %).
ACCURACY_MARGIN_PP = 1.0
HIGHER_IS_BETTER = ("val_accuracy", "val_f1")
METRIC_LABELS = {
    "energy_training_j": "training energy", "energy_j": "whole-run energy", "duration_s": "time",
    "val_accuracy": "validation accuracy", "val_f1": "validation F1",
    "energy_to_target_j": "energy to the target accuracy",
}


def _settings(row: dict[str, Any]) -> dict[str, Any] | str | None:
    settings = row.get("settings")
    if isinstance(settings, str):
        try:
            return json.loads(settings)
        except ValueError:
            return settings
    return settings


def conditions_of(row: dict[str, Any]) -> str:
    """The run's "same conditions" key (greenlab.core.config.conditions_key): stored as `conditions_key`,
    else computed from the model and the stored settings. The experiment's name is not part of it: two
    experiments that ran the same work share a baseline."""
    stored = row.get("conditions_key")
    if stored is not None:
        return str(stored)
    settings = _settings(row)
    if isinstance(settings, dict) and row.get("model"):
        work = {k: v for k, v in settings.items() if k != "techniques"}
        if row.get("dataset") and "dataset" not in work:
            work["dataset"] = row["dataset"]
        return conditions_key(str(row["model"]), work)
    return f"model:{row.get('model')}:{row.get('dataset')}"


def stored_margin(rows: Iterable[dict[str, Any]]) -> float | None:
    """The `equivalence_margin` setting of the latest of `rows` that stored one."""
    for row in sorted(rows, key=lambda r: r.get("id") or 0, reverse=True):
        settings = _settings(row)
        if isinstance(settings, dict) and isinstance(settings.get("equivalence_margin"), (int, float)):
            return float(settings["equivalence_margin"])
    return None


def latest_runs(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed runs, one per settings_key (the latest): a forced rerun of the same settings and seed
    replaces its earlier run rather than counting as another independent draw."""
    latest: dict[Any, dict[str, Any]] = {}
    for row in sorted((r for r in rows if r.get("status") == "completed"), key=lambda r: r.get("id") or 0):
        key = row.get("settings_key")
        latest[key if key is not None else ("row", id(row))] = row
    return list(latest.values())


def metric_change(metric: str, value: float | None, reference: float | None) -> float | None:
    """A value against its baseline's: percentage points for accuracy and F1, percent for the rest."""
    if metric in DIFFERENCE_METRICS:
        return None if value is None or reference is None else 100.0 * (value - reference)
    return percent_change(value, reference)


def percent_change(value: float | None, reference: float | None) -> float | None:
    if value is None or reference in (None, 0):
        return None
    return 100.0 * (value - reference) / reference


# -- means per group (the headless table, the TUI) --------------------------------------------------------
@dataclass
class Group:
    experiment: str
    model: str
    dataset: str
    technique: str
    runs: int
    means: dict[str, float | None]
    ci: dict[str, float | None]
    change: dict[str, float | None]  # against the baseline mean: percent, or pp (see metric_change)


def _mean(rows: list[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    values = [r[key] for r in rows if r.get(key) is not None]
    return (mean(values) if values else None), stats.mean_ci95(values)


def summarize(rows: Iterable[dict[str, Any]]) -> list[Group]:
    """Completed runs grouped by conditions and technique, each compared to its matching baseline."""
    completed = latest_runs(rows)
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in completed:
        buckets.setdefault((conditions_of(row), row["technique"]), []).append(row)
    baselines = baseline_means(completed)
    groups = []
    for (key, technique), members in buckets.items():
        means = {}
        intervals = {}
        for metric in METRICS:
            means[metric], intervals[metric] = _mean(members, metric)
        reference = baselines.get(key, {})
        change = {m: metric_change(m, means[m], reference.get(m)) if technique != "baseline" else None
                  for m in METRICS}
        experiments = ", ".join(sorted({str(r.get("experiment") or "") for r in members}))
        groups.append(Group(experiments, members[0]["model"], members[0].get("dataset") or "", technique,
                            len(members), means, intervals, change))
    groups.sort(key=lambda g: (g.model, g.dataset, g.experiment, g.technique != "baseline", g.technique))
    return groups


def baseline_means(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric over the completed baselines, by conditions: computed once per table."""
    members: dict[str, list[dict[str, Any]]] = {}
    for row in latest_runs(rows):
        if row.get("technique") == "baseline":
            members.setdefault(conditions_of(row), []).append(row)
    return {key: {m: _mean(group, m)[0] for m in METRICS} for key, group in members.items()}


def changes(rows: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Each row's change per metric against its matching baselines (None for a baseline): percent, or
    percentage points for accuracy and F1."""
    means = baseline_means(rows)
    result = []
    for row in rows:
        reference = means.get(conditions_of(row), {}) if row.get("technique") != "baseline" else {}
        result.append({m: metric_change(m, row.get(m), reference.get(m)) for m in METRICS})
    return result


# -- comparisons with verdicts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One technique against its matching baselines, for one metric, within one report.

    `p_holm` is Holm-adjusted over the `holm_family` comparisons of the same metric in the report; the
    verdict uses it. `stats` holds the rest (means, ratio and its intervals, p, equivalence, Hedges' g).
    """

    model: str
    dataset: str
    technique: str
    metric: str
    conditions: str
    experiments: tuple[str, ...]
    stats: stats.TwoSample
    p_holm: float | None
    holm_family: int
    verdict: str
    sentence: str
    run_ids: tuple[int, ...] = field(default=())
    baseline_run_ids: tuple[int, ...] = field(default=())

    @property
    def in_pp(self) -> bool:
        return self.metric in DIFFERENCE_METRICS

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `greenlab report --format json` (README lists every key)."""
        s = self.stats
        data: dict[str, Any] = {
            "model": self.model, "dataset": self.dataset, "technique": self.technique, "metric": self.metric,
            "experiment": ", ".join(self.experiments), "conditions": self.conditions,
            "n": s.n, "n_baseline": s.n_baseline, "n_missing": s.n_missing,
            "n_baseline_missing": s.n_baseline_missing, "mean": s.mean, "baseline_mean": s.baseline_mean,
            "sd": s.sd, "baseline_sd": s.baseline_sd, "ratio": s.ratio, "ratio_ci_low": s.ratio_ci_low,
            "ratio_ci_high": s.ratio_ci_high, "ratio_ci90_low": s.ratio_ci90_low,
            "ratio_ci90_high": s.ratio_ci90_high, "ratio_method": s.ratio_method,
            "difference": s.difference, "difference_ci_low": s.difference_ci_low,
            "difference_ci_high": s.difference_ci_high, "p_value": s.p_value, "p_holm": self.p_holm,
            "holm_family": self.holm_family, "margin": s.margin, "p_equivalence": s.p_equivalence,
            "equivalent": s.equivalent, "effect_size": s.effect_size, "verdict": self.verdict,
            "repeats_to_decide": s.repeats_to_decide if self.verdict == "inconclusive" else None,
            "sentence": self.sentence, "notes": list(s.notes), "run_ids": list(self.run_ids),
            "baseline_run_ids": list(self.baseline_run_ids),
        }
        if self.in_pp:
            data.update(difference_pp=_pp(s.difference), difference_pp_ci_low=_pp(s.difference_ci_low),
                        difference_pp_ci_high=_pp(s.difference_ci_high))
        return {k: _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    """JSON-safe: numpy floats become floats, and a non-finite number becomes null."""
    if isinstance(value, float) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return value


def _pp(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def compare(rows: Iterable[dict[str, Any]], *, metrics: Iterable[str] = METRICS, margin: float | None = None,
            include: Callable[[dict[str, Any]], bool] | None = None) -> list[Comparison]:
    """Every technique's comparisons in `rows`, per metric, with Holm applied per metric.

    Techniques are grouped by conditions (conditions_of) and technique; `include` picks which runs are
    reported (an experiment, this grid), while baselines come from every completed run in `rows`. The
    margin is `margin` if given, else the technique runs' stored `equivalence_margin`, else 5 %.
    """
    completed = latest_runs(rows)
    baselines: dict[str, list[dict[str, Any]]] = {}
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in completed:
        if row.get("technique") == "baseline":
            baselines.setdefault(conditions_of(row), []).append(row)
        elif include is None or include(row):
            cells.setdefault((conditions_of(row), row["technique"]), []).append(row)
    metrics = tuple(metrics)
    drafts: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], str, stats.TwoSample]] = []
    for (key, technique), members in cells.items():
        reference = baselines.get(key, [])
        chosen = margin if margin is not None else (stored_margin(members) or stats.DEFAULT_MARGIN)
        for metric in metrics:
            result = stats.compare([r.get(metric) for r in members], [r.get(metric) for r in reference],
                                   margin=chosen,
                                   margin_abs=ACCURACY_MARGIN_PP / 100 if metric in DIFFERENCE_METRICS else None)
            drafts.append((key, members, reference, metric, result))
    holm: dict[int, float | None] = {}
    family: dict[str, int] = {}
    for metric in metrics:
        indices = [i for i, d in enumerate(drafts) if d[3] == metric]
        adjusted = stats.holm([drafts[i][4].p_value for i in indices])
        holm.update(zip(indices, adjusted))
        family[metric] = sum(p is not None for p in adjusted)
    comparisons = []
    for index, (key, members, reference, metric, result) in enumerate(drafts):
        verdict = stats.decide(result, p_value=holm[index], higher_is_better=metric in HIGHER_IS_BETTER,
                               on_difference=metric in DIFFERENCE_METRICS)
        if verdict == "inconclusive" and family[metric] > 1:
            margin_abs = ACCURACY_MARGIN_PP / 100 if metric in DIFFERENCE_METRICS else None
            result = replace(result, repeats_to_decide=_repeats_under_holm(result, family[metric], margin_abs))
        target = None
        if metric == "energy_to_target_j" and (result.n_missing or result.n_baseline_missing):
            # Runs that never reached the target are left out of the means: judging the survivors alone
            # would favour whichever side reached it less often. The sentence says how many.
            verdict = "insufficient"
            target = _target_of(members + reference)
            result = replace(result, notes=(*result.notes, _unreached_note(result)))
        caveat = _flagged_caveat(members + reference) if metric not in DIFFERENCE_METRICS else ""
        if caveat:
            result = replace(result, notes=(*result.notes, caveat))
        technique = members[0]["technique"]
        text = sentence(technique, metric, result, verdict, holm[index], family[metric], target=target)
        comparisons.append(Comparison(
            model=members[0]["model"], dataset=members[0].get("dataset") or "", technique=technique,
            metric=metric, conditions=key,
            experiments=tuple(sorted({str(r.get("experiment") or "") for r in members})), stats=result,
            p_holm=holm[index], holm_family=family[metric], verdict=verdict,
            sentence=f"{text}; {caveat}" if caveat else text,
            run_ids=tuple(r["id"] for r in members if r.get("id") is not None),
            baseline_run_ids=tuple(r["id"] for r in reference if r.get("id") is not None)))
    order = {m: i for i, m in enumerate(metrics)}
    first_run: dict[str, int] = {}  # techniques keep the order in which they were first run
    for (_, technique), members in cells.items():
        first = min((r.get("id") or 0 for r in members), default=0)
        first_run[technique] = min(first_run.get(technique, first), first)
    comparisons.sort(key=lambda c: (c.model, c.dataset, c.conditions, first_run[c.technique], c.technique,
                                    order[c.metric]))
    return comparisons


# Flags that make a run's CPU and DRAM figures (and its time) cover more than its own work: others busy
# on its host, or other runs of a Ray grid on its node (such a run is often flagged both ways).
CAVEAT_FLAGS = ("host_busy", "shared_node_cpu")


def _flagged_caveat(rows: list[dict[str, Any]]) -> str:
    """'2 of 6 runs measured beside other work (flag host_busy)'; the verdict stands, but a reader should
    know its figures include other work. Each run counts once, whichever of the flags it has."""
    flagged = [set(formatting.json_column(r.get("flags"), [])) & set(CAVEAT_FLAGS) for r in rows]
    count = sum(1 for flags in flagged if flags)
    if not count:
        return ""
    names = [f for f in CAVEAT_FLAGS if any(f in flags for flags in flagged)]
    return (f"{count} of {len(rows)} runs measured beside other work on their host "
            f"(flag{'s' if len(names) > 1 else ''} {', '.join(names)})")


def _target_of(rows: list[dict[str, Any]]) -> float | None:
    """The target accuracy the cell's runs were judged against (one per conditions, so any run's)."""
    return next((float(r["target_accuracy"]) for r in rows if r.get("target_accuracy") is not None), None)


def _unreached_note(s: stats.TwoSample) -> str:
    return (f"verdict withheld: {_unreached_sides(s, 'technique')} never reached the target accuracy; "
            "comparing only the runs that did would be biased")


def _repeats_under_holm(result: stats.TwoSample, family: int, margin_abs: float | None) -> int | None:
    """Runs per side that would likely decide at the Holm family's strictest step (5 % over `family`):
    the plain 5 % estimate would promise a decision that the adjusted p then withholds."""
    if result.sd is None or result.baseline_sd is None or result.difference is None \
            or result.baseline_mean is None:
        return result.repeats_to_decide
    needed = stats.repeats_to_decide(result.sd, result.baseline_sd, result.difference, result.baseline_mean,
                                     result.margin, margin_abs, alpha=stats.ALPHA / family)
    return stats.beyond_what_was_run(needed, result.n, result.n_baseline)


# -- words ------------------------------------------------------------------------------------------------
def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"


def format_p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def _span(low: float, high: float, unit: str, signed: bool = True) -> str:
    """'27–33 %' for the size of a saving or cost; '-10 to +80 %' for a signed change."""
    if not signed:
        return f"{_num(low)}–{_num(high)} {unit}"
    return f"{_signed(low, '').strip()} to {_signed(high, unit)}"


def _signed(value: float, unit: str) -> str:
    return f"{'+' if value >= 0 else '-'}{_num(abs(value))} {unit}"


def sentence(technique: str, metric: str, s: stats.TwoSample, verdict: str, p_holm: float | None = None,
             holm_family: int = 1, *, target: float | None = None) -> str:
    """The verdict in words, e.g. "stego saves 30 % training energy (95 % CI 27–33 %, p < 0.001, n = 5 vs 5)".
    `target` is the energy-to-target's accuracy (a fraction), named when runs never reached it."""
    label = METRIC_LABELS.get(metric, metric)
    in_pp = metric in DIFFERENCE_METRICS
    unit = "pp" if in_pp else "%"
    counts = f"n = {s.n} vs {s.n_baseline}"
    p_text = ""
    if s.p_value is not None:
        p_text = format_p(s.p_value)
        if holm_family > 1 and p_holm is not None:
            p_text += f", Holm-adjusted {format_p(p_holm)[2:].lstrip('= ')}"
    change = None
    if in_pp and s.difference is not None:
        change = 100 * s.difference
    elif not in_pp and s.ratio is not None:
        change = 100 * (s.ratio - 1)
    low = high = None
    if in_pp and s.difference_ci_low is not None and s.difference_ci_high is not None:
        low, high = 100 * s.difference_ci_low, 100 * s.difference_ci_high
    elif not in_pp and s.ratio_ci_low is not None and s.ratio_ci_high is not None:
        low, high = 100 * (s.ratio_ci_low - 1), 100 * (s.ratio_ci_high - 1)
    more = "" if in_pp else " more"

    if verdict == "insufficient":
        if s.n_baseline == 0 and s.n_baseline_missing == 0:
            text = f"{technique}: no completed baseline with the same conditions to compare {label} with; " \
                   "run the baseline too"
        elif metric == "energy_to_target_j" and s.n == 0:
            where = f" = {100 * target:.1f} %" if target is not None else ""
            return (f"{technique} never reached the target accuracy (the baselines' mean minus "
                    f"{TARGET_DROP_PP:g} pp{where}) in any of its {s.n_missing} runs: no energy to target to compare")
        elif s.n == 0 or s.n_baseline == 0:
            text = f"{technique}: no values of {label} on {'its' if s.n == 0 else 'the baseline'} side"
        elif metric == "energy_to_target_j" and (s.n_missing or s.n_baseline_missing):
            return _unreached_sentence(technique, s, target)
        else:
            observed = f"{_signed(change, unit)} {label}" if change is not None else label
            if s.n + s.n_missing < 2 or s.n_baseline + s.n_baseline_missing < 2:
                why = "one run per cell cannot show significance; set repeats = 3 or more"
            else:
                why = "fewer than 2 runs a side have a value"
            text = f"{technique}: {observed} from {counts}, too few to judge: {why}"
    elif verdict in ("saves", "costs") and low is not None and high is not None and change is not None:
        gain = verdict == "saves"
        if in_pp:
            size, lo, hi = (change, low, high) if gain else (-change, -high, -low)
            word = "gains" if gain else "costs"
        else:
            size, lo, hi = (-change, -high, -low) if gain else (change, low, high)
            word = verdict
        text = f"{technique} {word} {_num(size)} {unit}{'' if gain else more} {label} " \
               f"(95 % CI {_span(lo, hi, unit, signed=False)}, {p_text}, {counts})"
    elif verdict == "equivalent":
        bounds = ""
        if in_pp and change is not None and low is not None and high is not None:
            bounds = f" ({_signed(change, unit)}, 95 % CI {_span(low, high, unit)}, {counts})"
        elif s.ratio_ci90_low is not None and s.ratio_ci90_high is not None and change is not None:
            bounds = (f" ({_signed(change, unit)}, 90 % CI "
                      f"{_span(100 * (s.ratio_ci90_low - 1), 100 * (s.ratio_ci90_high - 1), unit)}, {counts})")
        within = f"±{100 * s.margin:g} %"
        if in_pp and s.baseline_mean is not None:
            within += f" of it (±{100 * s.margin * abs(s.baseline_mean):.1f} pp)"
        text = f"{technique} is equivalent to the baseline in {label} within {within}{bounds}"
    else:
        observed = _signed(change, unit) if change is not None else "no ratio"
        interval = f"95 % CI {_span(low, high, unit)}, " if low is not None and high is not None else \
            "no bounded interval, "
        text = f"{technique}: inconclusive on {label}, {observed} ({interval}{p_text or 'no p'}, {counts})"
        if s.repeats_to_decide is not None:
            text += f"; about {s.repeats_to_decide} runs per side would decide"
        elif s.sufficient:
            text += f"; more than {stats.MAX_REPEATS:,} runs per side would be needed at this spread"
    return text + _missing_note(metric, s) + ("; Fieller interval (values of 0 or below)"
                                              if s.ratio_method == stats.FIELLER else "")


def _unreached_sentence(technique: str, s: stats.TwoSample, target: float | None) -> str:
    """Why energy to target is not judged when some runs never reached it: enough values may remain on
    both sides, so the count of values is not the reason; the runs that dropped out are."""
    where = f" ({100 * target:.1f} %)" if target is not None else ""
    share = s.n_missing / (s.n + s.n_missing) - s.n_baseline_missing / (s.n_baseline + s.n_baseline_missing)
    if share > 0:
        bias = f"favour {technique}, which reached it less often"
    elif share < 0:
        bias = "favour the baseline, which reached it less often"
    else:
        bias = "understate both sides' cost"
    return (f"{technique}: energy to the target accuracy is insufficient: {_unreached_sides(s, technique)} "
            f"never reached the target{where}, so comparing only the runs that did would {bias}")


def _unreached_sides(s: stats.TwoSample, technique: str) -> str:
    """'1 of 3 runs of stego and 1 of 3 baseline runs': each side that lost runs, out of its runs."""
    sides = []
    if s.n_missing:
        sides.append(f"{s.n_missing} of {s.n + s.n_missing} {technique} runs")
    if s.n_baseline_missing:
        sides.append(f"{s.n_baseline_missing} of {s.n_baseline + s.n_baseline_missing} baseline runs")
    return " and ".join(sides)


def _missing_note(metric: str, s: stats.TwoSample) -> str:
    if not (s.n_missing or s.n_baseline_missing):
        return ""
    what = "never reached the target accuracy" if metric == "energy_to_target_j" else f"have no {metric}"
    sides = []
    if s.n_missing:
        sides.append(f"{s.n_missing} of {s.n + s.n_missing} technique runs")
    if s.n_baseline_missing:
        sides.append(f"{s.n_baseline_missing} of {s.n_baseline + s.n_baseline_missing} baseline runs")
    return f"; {' and '.join(sides)} {what} (left out)"


# -- units ------------------------------------------------------------------------------------------------
def format_change(value: float | None, metric: str | None = None) -> str:
    """'+3.1%', or '+3.1 pp' for accuracy and F1 (see metric_change)."""
    if value is None:
        return ""
    return f"{value:+.1f} pp" if metric in DIFFERENCE_METRICS else f"{value:+.1f}%"
