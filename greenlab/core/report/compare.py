"""Comparisons of stored runs under their analysis plans: the one function every face's verdicts come from.

`judge` takes the store's runs and plans and returns every comparison — each technique against the
completed baselines of the same conditions, per metric — decided under the plan its runs were run under:
Holm over that plan's declared family, its α and margins. The headless summary, the TUI's runs pane and
`greenlab report` all call it on the whole store and only then pick what they show, so a verdict never
depends on a filter or on unrelated runs. The statistics of one comparison live in greenlab.core.report.stats,
the checks before a verdict in greenlab.core.report.diagnostics, the words in greenlab.core.report.words.
Also here: the per-group means of the headless table and the TUI (summarize, changes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from greenlab.core.plan import metrics
from greenlab.core.plan.analysis import AnalysisSettings, Cell, Plan, PostHoc, implied
from greenlab.core.plan.config import conditions_key
from greenlab.core.report import diagnostics, groups, stats
from greenlab.core.report.stats import Decision, HolmStep, TwoSample
from greenlab.core.store.rows import RunRow
from greenlab.core.train import compression

HEADLINE = metrics.DEFAULT_PRIMARY
TARGET_DROP_PP = 1.0  # energy to target: the target is the baselines' mean final accuracy minus this
METRICS = metrics.METRICS
DIFFERENCE_METRICS = metrics.DIFFERENCE_METRICS  # fractions, compared in percentage points
HIGHER_IS_BETTER = metrics.HIGHER_IS_BETTER
METRIC_LABELS = metrics.LABELS
# Flags that make a run's CPU and DRAM figures (and its time) cover more than its own work: others busy
# on its host, or other runs of a Ray grid on its node (such a run is often flagged both ways).
CAVEAT_FLAGS = ("host_busy", "shared_node_cpu", "gpu_shared")
FLAG_NET_BELOW_IDLE = "net_below_idle"
# A run whose training ran away or ended at chance (greenlab.core.run.divergence): it reached no target for a
# reason that is not its technique's, so energy to target leaves it out; the other verdicts name it.
FLAG_DIVERGED = "diverged"
# A run whose process was stopped mid-run (greenlab.core.run.pauses): its energy and time count the pause, so
# every verdict on them leaves it out (its accuracy is its own), and the checks name it.
FLAG_PAUSED = "paused"
MEASURED, ESTIMATED, MIXED = "measured", "estimated", "mixed"
Values = list[tuple[int, "float | None"]]  # (run id, value) in execution order
# The columns of `runs` that judging reads (with energy to target and the groups' names): what a face that
# only judges reads of the store (Store.runs(columns=...)); a format adds its own (render.COLUMNS).
COLUMNS: tuple[str, ...] = (
    "id",
    "experiment",
    "model",
    "dataset",
    "technique",
    "settings",
    "settings_key",
    "status",
    "conditions_key",
    "plan_id",
    "flags",
    "energy_measured_j",
    "energy_estimated_j",
    "fp32_precision",
    "bf16_native",
    "compute_dtype",
    "target_accuracy",
    *METRICS,
)


def conditions_of(row: RunRow) -> str:
    """The run's "same conditions" key (greenlab.core.plan.config.conditions_key): stored as `conditions_key`,
    else computed from the model and the stored settings. The experiment's name is not part of it: two
    experiments that ran the same work share a baseline."""
    stored = row.conditions_key
    if stored is not None:
        return str(stored)
    if row.model:
        work = {k: v for k, v in row.settings.items() if k != "techniques"}
        if row.dataset and "dataset" not in work:
            work["dataset"] = row.dataset
        return conditions_key(str(row.model), work)
    return f"model:{row.model}:{row.dataset}"


def technique_of(row: RunRow) -> str:
    """The run's technique as results are grouped and shown: its name with every setting that is not the
    default (greenlab.core.train.compression.label), so prune at 0.5 and prune at 0.9 are never pooled."""
    return compression.label(str(row.technique or ""), row.settings.get("techniques") if row.settings else None)


def stored_margin(rows: Iterable[RunRow]) -> float | None:
    """The `equivalence_margin` setting of the latest of `rows` that stored one."""
    for row in sorted(rows, key=lambda r: r.id or 0, reverse=True):
        margin = row.settings.get("equivalence_margin")
        if isinstance(margin, (int, float)):
            return float(margin)
    return None


def diverged(row: RunRow) -> bool:
    """The run's flags say it diverged (greenlab.core.run.divergence)."""
    return FLAG_DIVERGED in row.flags


def paused(row: RunRow) -> bool:
    """The run's flags say its process was paused mid-run (greenlab.core.run.pauses)."""
    return FLAG_PAUSED in row.flags


def latest_runs(rows: Iterable[RunRow]) -> list[RunRow]:
    """Completed runs, one per settings_key (the latest): a forced rerun of the same settings and seed
    replaces its earlier run rather than counting as another independent draw."""
    latest: dict[Any, RunRow] = {}
    for row in sorted((r for r in rows if r.status == "completed"), key=lambda r: r.id or 0):
        key = row.settings_key
        latest[key if key is not None else ("row", id(row))] = row
    return list(latest.values())


def metric_change(metric: str, value: float | None, reference: float | None) -> float | None:
    """A value against its baseline's: percentage points for accuracy and F1, percent for the rest."""
    if metric in DIFFERENCE_METRICS:
        return None if value is None or reference is None else 100.0 * (value - reference)
    return percent_change(value, reference)


def percent_change(value: float | None, reference: float | None) -> float | None:
    """Percent of a positive reference; None against none, zero or a negative one (no percent reads true)."""
    if value is None or reference is None or not reference > 0:
        return None
    change = 100.0 * (value - reference) / reference
    return change if math.isfinite(change) else None  # beyond the float range (a 1e308 J run): no figure


def left_out_because(metric: str, value: float) -> str | None:
    """Why the analysis cannot take this value of `metric`, or None when it can: no scale takes a value
    that is not finite; a ratio scale (energy, time) has no log of 0 or below; accuracy and F1 are fractions,
    so a value outside 0–1 is no measurement. The one rule of the verdicts, the means and the changes."""
    if not math.isfinite(value):
        return "not finite"
    if metric in DIFFERENCE_METRICS:
        return None if 0.0 <= value <= 1.0 else "outside 0–1"
    if value <= 0:
        return "zero" if value == 0 else "negative"
    return None


def number(value: Any) -> float | None:
    """A stored value as a number, or None: missing, a bool, or text (a hand edit SQLite kept as text)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def analysable(metric: str, value: Any) -> float | None:
    """The value as the analysis takes it, or None: missing, not a number, or left out (left_out_because)."""
    found = number(value)
    return None if found is None or left_out_because(metric, found) else found


def mean_and_ci(metric: str, values: Iterable[Any]) -> tuple[float | None, float | None]:
    """The mean and its 95 % half-width over the values the verdicts take (see left_out_because): a
    -100 J baseline or a NaN is left out here as it is there, never averaged into a saving."""
    kept = [v for v in (analysable(metric, value) for value in values) if v is not None]
    return (stats.mean_of(kept) if kept else None), stats.mean_ci95(kept)


def post_hoc_of(comparisons: Iterable[Comparison]) -> dict[str, tuple[float, float]]:
    """Every value given after the runs among `comparisons`: {name: (used, declared)}."""
    found: dict[str, tuple[float, float]] = {}
    for c in comparisons:
        found.update(c.post_hoc)
    return found


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


def _mean(rows: list[RunRow], key: str) -> tuple[float | None, float | None]:
    read = RunRow.getter(key)  # a metric named by a variable
    return mean_and_ci(key, map(read, rows))


def summarize(rows: Iterable[RunRow]) -> list[Group]:
    """Completed runs grouped by conditions and technique, each compared to its matching baseline."""
    completed = latest_runs(rows)
    buckets: dict[tuple[str, str], list[RunRow]] = {}
    for row in completed:
        buckets.setdefault((conditions_of(row), technique_of(row)), []).append(row)
    baselines = baseline_means(completed)
    groups = []
    for (key, technique), members in buckets.items():
        means = {}
        intervals = {}
        for metric in METRICS:
            means[metric], intervals[metric] = _mean(members, metric)
        reference = baselines.get(key, {})
        change = {m: metric_change(m, means[m], reference.get(m)) if technique != "baseline" else None for m in METRICS}
        experiments = ", ".join(sorted({str(r.experiment or "") for r in members}))
        groups.append(
            Group(
                experiments,
                members[0].model,
                members[0].dataset or "",
                technique,
                len(members),
                means,
                intervals,
                change,
            )
        )
    groups.sort(key=lambda g: (g.model, g.dataset, g.experiment, g.technique != "baseline", g.technique))
    return groups


def baseline_means(rows: Iterable[RunRow]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric over the completed baselines, by conditions: computed once per table. A baseline
    that diverged counts for energy and time (it did that work) but not for accuracy and F1: its chance-level
    accuracy would make every technique look better ("+36 pp" against a run that learned nothing)."""
    members: dict[str, list[RunRow]] = {}
    for row in latest_runs(rows):
        if row.technique == "baseline":
            members.setdefault(conditions_of(row), []).append(row)
    return {
        key: {
            m: _mean([r for r in group if not diverged(r)] if m in metrics.DIFFERENCE_METRICS else group, m)[0]
            for m in METRICS
        }
        for key, group in members.items()
    }


def changes(rows: Sequence[RunRow]) -> list[dict[str, float | None]]:
    """Each row's change per metric against its matching baselines: percent, or percentage points for
    accuracy and F1. None for a baseline, and for a run that did not complete (failed, interrupted, still
    running): its energy and time cover only part of the work, so "-40 %" would read as a saving."""
    means = baseline_means(rows)
    result = []
    read = [(m, RunRow.getter(m)) for m in METRICS]  # the metrics, columns named by variables
    for row in rows:
        compared = row.technique != "baseline" and row.status in ("completed", "superseded")
        reference = means.get(conditions_of(row), {}) if compared else {}
        result.append({m: metric_change(m, analysable(m, value(row)), reference.get(m)) for m, value in read})
    return result


# -- comparisons with verdicts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Excluded:
    """A run whose value the analysis cannot take (an energy of 0 or below has no log), named, not used."""

    run_id: int | None
    side: str  # technique | baseline
    value: float
    reason: str


@dataclass(frozen=True)
class Comparison:
    """One technique against its matching baselines, for one metric, decided under its plan.

    `step` is the comparison's place in the plan's Holm family (adjusted p, the interval's divisor);
    `decision` its verdict and the interval that matches it; `analysis` the settings used (the plan's, or
    post hoc values given later, listed in `post_hoc` as {name: (used, declared)}).
    """

    model: str
    dataset: str
    technique: str
    metric: str
    conditions: str
    experiments: tuple[str, ...]
    stats: TwoSample
    plan: Plan
    analysis: AnalysisSettings
    step: HolmStep
    decision: Decision
    verdict: str
    sentence: str = ""
    post_hoc: dict[str, tuple[float, float]] = field(default_factory=dict)
    run_ids: tuple[int, ...] = ()
    baseline_run_ids: tuple[int, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    diagnostics: tuple[diagnostics.Diagnostic, ...] = ()
    energy_method: str | None = None
    repeats_to_decide: int | None = None
    target: float | None = None
    notes: tuple[str, ...] = ()
    group: str = ""  # how every face names its runs' group: the model, and what sets it apart (report.groups)

    @property
    def in_pp(self) -> bool:
        return self.metric in DIFFERENCE_METRICS

    @property
    def p_holm(self) -> float | None:
        return self.step.p_holm

    @property
    def holm_family(self) -> int:
        return self.step.family

    @property
    def primary(self) -> bool:
        return self.metric == self.plan.analysis.primary

    @property
    def role(self) -> str:
        return "primary" if self.primary else "secondary"

    @property
    def significant(self) -> bool:
        return self.verdict in (stats.SAVES, stats.COSTS)

    @property
    def decided(self) -> bool:
        """Saves, costs or equivalent: a claim, which on estimated energy is marked as such."""
        return self.significant or self.verdict == stats.EQUIVALENT

    @property
    def negligible(self) -> bool:
        return self.decision.negligible and self.significant

    @property
    def word(self) -> str:
        """The verdict as every face shows it: 'saves', 'saves, negligible', 'equivalent (estimated)'. A
        decided verdict on estimated energy says so: 'equivalent' on an estimate is a claim about time."""
        text = self.verdict + (", negligible" if self.negligible else "")
        if self.decided and self.energy_method == ESTIMATED:
            text += " (estimated)"
        elif self.decided and self.energy_method == MIXED:
            text += " (partly estimated)"
        return text

    @property
    def interval(self) -> tuple[float, float] | None:
        """The interval a table shows: the one that matches the decision (Holm-adjusted where the family has
        more than one comparison), on the display scale."""
        if self.decision.adjusted is not None:
            return self.decision.adjusted
        s = self.stats
        return (s.ci_low, s.ci_high) if s.ci_low is not None and s.ci_high is not None else None

    @property
    def cell(self) -> tuple[str, str]:
        return self.conditions, self.technique

    @property
    def label(self) -> str:
        """The group's name in every face: `tinycnn`, or `tinycnn [lr=0.01]` beside a sibling with another lr."""
        return self.group or self.model

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `greenlab report --format json` (docs/statistics.md lists every key)."""
        s = self.stats
        ratio = s.scale == stats.RATIO
        low_eq, high_eq = s.equivalence_bounds
        adjusted = self.decision.adjusted
        data: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "technique": self.technique,
            "metric": self.metric,
            "role": self.role,
            "primary": self.primary,
            "scale": s.scale,
            "experiment": ", ".join(self.experiments),
            "conditions": self.conditions,
            "group": self.label,
            "n": s.n,
            "n_baseline": s.n_baseline,
            "n_missing": s.n_missing,
            "n_baseline_missing": s.n_baseline_missing,
            "mean": s.mean,
            "baseline_mean": s.baseline_mean,
            "sd": s.sd,
            "baseline_sd": s.baseline_sd,
            "ratio": s.estimate if ratio else None,
            "ratio_of_means": s.ratio_of_means if ratio else None,
            "ratio_ci_low": s.ci_low if ratio else None,
            "ratio_ci_high": s.ci_high if ratio else None,
            "ratio_ci90_low": s.eq_low if ratio else None,
            "ratio_ci90_high": s.eq_high if ratio else None,
            "difference": s.difference,
            "difference_ci_low": None if ratio else s.ci_low,
            "difference_ci_high": None if ratio else s.ci_high,
            "difference_ci90_low": None if ratio else s.eq_low,
            "difference_ci90_high": None if ratio else s.eq_high,
            "ci_level": 1 - self.analysis.alpha,
            "equivalence_ci_level": 1 - 2 * self.analysis.alpha,
            "test": s.test,
            "df": s.df,
            "p_value": s.p_value,
            "p_holm": self.p_holm,
            "holm_family": self.holm_family,
            "adjusted_ci_low": adjusted[0] if adjusted else None,
            "adjusted_ci_high": adjusted[1] if adjusted else None,
            "adjusted_ci_level": self.decision.adjusted_level,
            "alpha": self.analysis.alpha,
            "margin": self.analysis.equivalence_margin if ratio else None,
            "margin_pp": None if ratio else self.analysis.accuracy_margin_pp,
            "equivalence_bounds": [low_eq, high_eq] if ratio else [100 * low_eq, 100 * high_eq],
            "equivalence_bounds_unit": "ratio" if ratio else "pp",
            "p_equivalence": s.p_equivalence,
            "equivalent": None if s.equivalent is None else bool(s.equivalent),
            "effect_size": s.effect_size,
            "verdict": self.verdict,
            "negligible": self.negligible,
            "word": self.word,
            "energy_method": self.energy_method,
            "repeats_to_decide": self.repeats_to_decide if self.verdict == stats.INCONCLUSIVE else None,
            "sentence": self.sentence,
            "notes": list(self.notes),
            "diagnostics": [d.to_dict() for d in self.diagnostics],
            "excluded": [
                {"run_id": e.run_id, "side": e.side, "value": e.value, "reason": e.reason} for e in self.excluded
            ],
            "plan": self.plan.to_json(),
            "post_hoc": {
                name: {"used": used, "declared": declared} for name, (used, declared) in self.post_hoc.items()
            },
            "run_ids": list(self.run_ids),
            "baseline_run_ids": list(self.baseline_run_ids),
        }
        if self.in_pp:
            data.update(
                difference_pp=_pp(s.difference),
                difference_pp_ci_low=_pp(s.ci_low),
                difference_pp_ci_high=_pp(s.ci_high),
                # the intervals the equivalence test and the decision read, in the band's own unit
                difference_pp_ci90_low=_pp(s.eq_low),
                difference_pp_ci90_high=_pp(s.eq_high),
                adjusted_pp_ci_low=_pp(adjusted[0]) if adjusted else None,
                adjusted_pp_ci_high=_pp(adjusted[1]) if adjusted else None,
            )
        return {k: _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    """JSON-safe: numpy numbers become Python numbers, a non-finite number becomes null, recursively."""
    if value is None or type(value) in _KEPT:  # most values, told apart in one test
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


_KEPT = (str, int, bool)  # what `_plain` returns as it is (of exactly these types: no numpy number, no float)


def _pp(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def run_energy_method(row: RunRow) -> str | None:
    """How a run's energy was obtained: measured (hardware counters or polled power), estimated (CPU time
    × watts), mixed (some components each way), or None when the row does not say."""
    measured, estimated = row.energy_measured_j or 0, row.energy_estimated_j or 0
    if measured > 0 and estimated > 0:
        return MIXED
    if measured > 0:
        return MEASURED
    if estimated > 0:
        return ESTIMATED
    return None


def energy_method(rows: Iterable[RunRow]) -> str | None:
    methods = {m for m in (run_energy_method(r) for r in rows) if m is not None}
    if not methods:
        return None
    return methods.pop() if len(methods) == 1 else MIXED


def usable(rows: list[RunRow], metric: str, side: str) -> tuple[Values, list[Excluded]]:
    """(run id, value or None) of the runs the analysis can use, in execution order, and the runs it cannot:
    on a ratio scale a value of 0 or below has no log, and no scale takes a value that is not finite; such
    a run is named, never turned into a saving. None (no value: a run that never reached its target)
    stays None, counted as missing."""
    return _usable(rows, (metric,), side)[metric]


def _usable(rows: list[RunRow], wanted: Iterable[str], side: str) -> dict[str, tuple[Values, list[Excluded]]]:
    """`usable` of every metric in `wanted`, the runs ordered and their flags read once for them all."""
    found: dict[str, tuple[Values, list[Excluded]]] = {metric: ([], []) for metric in wanted}
    # The metrics are columns named by variables (the plan's): each read by a getter of the schema's name.
    columns = [(metric, RunRow.getter(metric), kept, left_out) for metric, (kept, left_out) in found.items()]
    for row in sorted(rows, key=lambda r: r.id or 0):
        run_id, flags = int(row.id or 0), row.flags
        for metric, read, kept, left_out in columns:
            value, ratio = read(row), metric not in DIFFERENCE_METRICS
            if metric == "energy_to_target_j" and FLAG_DIVERGED in flags:
                # It never reached the target because it diverged, not because of its technique: counting it
                # as missing would withhold the verdict of the runs that trained.
                left_out.append(Excluded(run_id, side, math.nan, "diverged"))
                continue
            if ratio and FLAG_PAUSED in flags:  # its energy and time include a pause: not its technique's
                left_out.append(Excluded(run_id, side, math.nan, "paused"))
                continue
            if value is None:
                kept.append((run_id, None))
                continue
            number_found = number(value)
            if number_found is None:
                left_out.append(Excluded(run_id, side, math.nan, "not a number"))
                continue
            reason = left_out_because(metric, number_found)
            if reason is None:
                kept.append((run_id, number_found))
                continue
            if ratio and reason in ("zero", "negative") and FLAG_NET_BELOW_IDLE in flags:
                reason = "net below idle"
            left_out.append(Excluded(run_id, side, number_found, reason))
    return found


@dataclass
class _Cell:
    """A technique's runs under one set of conditions, their baselines, and what every metric's comparison
    of them says alike (read once, not once per metric)."""

    key: tuple[str, str]
    members: list[RunRow]
    reference: list[RunRow]
    plan: Plan | None = None

    @cached_property
    def runs(self) -> list[RunRow]:
        return self.members + self.reference

    @cached_property
    def caveat(self) -> str:
        return _flagged_caveat(self.runs)

    @cached_property
    def arithmetic(self) -> list[str]:
        return _arithmetic_caveats(self.runs)

    @cached_property
    def went_wrong(self) -> list[int]:
        """The ids of its runs (both sides) that diverged."""
        return [int(r.id or 0) for r in self.runs if diverged(r)]

    @cached_property
    def energy_method(self) -> str | None:
        return energy_method(self.runs)

    @cached_property
    def experiments(self) -> tuple[str, ...]:
        return tuple(sorted({str(r.experiment or "") for r in self.members}))

    @cached_property
    def run_ids(self) -> tuple[int, ...]:
        return tuple(r.id for r in self.members if r.id is not None)

    @cached_property
    def baseline_run_ids(self) -> tuple[int, ...]:
        return tuple(r.id for r in self.reference if r.id is not None)


@dataclass(frozen=True)
class _Judged:
    stats: stats.TwoSample
    excluded: list[Excluded]
    technique: Values
    baseline: Values


def _family(plan: Plan, cells: Iterable[_Cell]) -> list[tuple[str, str]]:
    """The plan's declared comparisons. A plan stored before techniques were labelled with their settings
    named a cell by the bare technique (`prune`) whatever its settings: such a cell stands for the labelled
    cells its own runs form (`prune[amount=0.9]`), one comparison each, never pooled."""
    declared = plan.keys
    present = {c.key for c in cells if c.plan is plan}
    unlisted: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (conditions, bare name) -> labelled keys
    for key in present - declared:
        unlisted.setdefault((key[0], _bare(key[1])), []).append(key)
    family: list[tuple[str, str]] = []
    for key in (c.key for c in plan.cells):
        labelled = unlisted.get(key, []) if key not in present else []
        family.extend(sorted(labelled) or [key])
    return list(dict.fromkeys(family))


def _bare(technique: str) -> str:
    """`prune[amount=0.9]+stego` -> `prune+stego`: the name a label was made from."""
    return re.sub(r"\[[^\]]*\]", "", technique)  # brackets first: a setting may hold a "+" (1e+16)


def _governing_plans(cells: Iterable[_Cell], plans: dict[int, Plan]) -> None:
    """Each cell's plan: that of its latest run that ran under a known plan; cells with none are judged
    under their experiment's implied plan (runs from before plans), one per experiment."""
    orphans: dict[str, list[_Cell]] = {}
    for cell in cells:
        ordered = sorted(cell.members, key=lambda r: r.id or 0, reverse=True)
        cell.plan = next((plans[r.plan_id] for r in ordered if r.plan_id in plans), None)
        if cell.plan is None:
            orphans.setdefault(str(ordered[0].experiment or ""), []).append(cell)
    for experiment, group in orphans.items():
        members = [r for cell in group for r in cell.members]
        declared = implied(
            experiment,
            [Cell(c.key[0], c.key[1], str(c.members[0].model or ""), experiment) for c in group],
            stored_margin(members),
        )
        for cell in group:
            cell.plan = declared


def _plan_key(plan: Plan) -> tuple[str, Any]:
    return ("plan", plan.id) if plan.declared else ("implied", plan.source)


def judge(
    rows: Iterable[RunRow],
    plans: dict[int, Plan] | None = None,
    *,
    metrics: Iterable[str] = METRICS,
    post_hoc: PostHoc | None = None,
) -> list[Comparison]:
    """Every comparison the store's runs support, decided under its plan; see the module docstring.

    `rows` are the store's runs (every status: only the latest completed run of each key counts); `plans`
    the store's plans by id. `post_hoc` values replace the plans' (and each comparison says so).
    """
    plans = plans or {}
    post_hoc = post_hoc or PostHoc()
    rows = list(rows)
    baselines: dict[str, list[RunRow]] = {}
    grouped: dict[tuple[str, str], list[RunRow]] = {}
    latest = [(conditions_of(row), row) for row in latest_runs(rows)]
    for conditions, row in latest:
        if row.technique == "baseline":
            baselines.setdefault(conditions, []).append(row)
        else:
            grouped.setdefault((conditions, technique_of(row)), []).append(row)
    cells = {key: _Cell(key, members, baselines.get(key[0], [])) for key, members in grouped.items()}
    _governing_plans(cells.values(), plans)
    families: dict[tuple[str, Any], tuple[Plan, list[tuple[str, str]]]] = {}
    for cell in cells.values():
        assert cell.plan is not None
        key = _plan_key(cell.plan)
        if key not in families:  # once per plan: _family reads every cell
            families[key] = (cell.plan, _family(cell.plan, cells.values()))
        plan, family = families[key]
        if cell.key not in family:
            family.append(cell.key)  # a governed cell its plan did not list (a changed setting): counted too
    settings = {key: post_hoc.apply(plan.analysis) for key, (plan, _) in families.items()}
    wanted = tuple(metrics)
    cache: dict[tuple[tuple[str, str], str], _Judged] = {}
    sides: dict[tuple[str, ...], dict[str, tuple[Values, list[Excluded]]]] = {}

    def usable_of(cell: _Cell, side: str) -> dict[str, tuple[Values, list[Excluded]]]:
        """`usable` of each metric of a cell's side: its own runs, or its baselines, which every technique of
        its conditions shares (read once for them all)."""
        key = (side, *cell.key) if side == "technique" else (side, cell.key[0])
        found = sides.get(key)
        if found is None:
            found = sides[key] = _usable(cell.members if side == "technique" else cell.reference, wanted, side)
        return found

    def judged(cell: _Cell, metric: str) -> _Judged:
        """A cell's statistics under its own governing plan (its p-value is the same under any plan)."""
        found = cache.get((cell.key, metric))
        if found is None:
            assert cell.plan is not None
            used = settings[_plan_key(cell.plan)][0]
            technique, out_technique = usable_of(cell, "technique")[metric]
            baseline, out_baseline = usable_of(cell, "baseline")[metric]
            ratio = metric not in DIFFERENCE_METRICS
            result = stats.compare(
                [v for _, v in technique],
                [v for _, v in baseline],
                scale=stats.RATIO if ratio else stats.DIFFERENCE,
                alpha=used.alpha,
                margin=used.equivalence_margin if ratio else used.accuracy_margin_pp / 100,
            )
            found = cache[(cell.key, metric)] = _Judged(result, out_technique + out_baseline, technique, baseline)
        return found

    # Named across the whole store's groups, so a label never depends on what a face shows.
    labels = groups.group_labels((conditions, str(row.model or ""), row) for conditions, row in latest)
    comparisons: list[Comparison] = []
    baseline_checks: dict[tuple[str, str], list[diagnostics.Diagnostic]] = {}
    for plan_key, (plan, family) in families.items():
        used, changed = settings[plan_key]
        for metric in wanted:
            p_values: list[float | None] = []
            for key in family:  # a declared cell never completed counts as p = 1 (stats.holm)
                s = judged(cells[key], metric).stats if key in cells else None
                withheld = s is None or (metric == "energy_to_target_j" and (s.n_missing or s.n_baseline_missing))
                p_values.append(None if withheld else s.p_value)  # type: ignore[union-attr]
            for key, step in zip(family, stats.holm(p_values, len(family), used.alpha)):
                governed = cells.get(key)
                if governed is not None and governed.plan is not None and _plan_key(governed.plan) == plan_key:
                    model: str = governed.members[0].model
                    named = labels.get(key[0], model)
                    comparisons.append(
                        _comparison(
                            governed,
                            metric,
                            plan,
                            used,
                            changed,
                            step,
                            judged(governed, metric),
                            baseline_checks,
                            named,
                        )
                    )
    order = {m: i for i, m in enumerate(wanted)}
    first_run: dict[str, int] = {}  # techniques keep the order in which they were first run
    for (_, technique), members in grouped.items():
        first = min((r.id or 0 for r in members), default=0)
        first_run[technique] = min(first_run.get(technique, first), first)
    comparisons.sort(
        key=lambda c: (c.model, c.dataset, c.conditions, first_run[c.technique], c.technique, order[c.metric])
    )
    return comparisons


def _comparison(
    cell: _Cell,
    metric: str,
    plan: Plan,
    used: AnalysisSettings,
    changed: dict[str, tuple[float, float]],
    step: stats.HolmStep,
    judged: _Judged,
    baseline_checks: dict[tuple[str, str], list[diagnostics.Diagnostic]],
    group: str,
) -> Comparison:
    from greenlab.core.report import words

    s = judged.stats
    decision = stats.decide(s, step, higher_is_better=metric in HIGHER_IS_BETTER)
    verdict = decision.verdict
    technique = cell.key[1]
    notes: list[str] = []
    target = None
    if metric == "energy_to_target_j" and (s.n_missing or s.n_baseline_missing):
        # Runs that never reached the target are left out of the means: judging the survivors alone
        # would favour whichever side reached it less often. So no verdict, and no survivors' estimate either.
        verdict = stats.INSUFFICIENT
        decision = stats.Decision(stats.INSUFFICIENT, False, None, None)
        s = replace(
            s,
            mean=None,
            baseline_mean=None,
            sd=None,
            baseline_sd=None,
            center=None,
            se=None,
            df=None,
            tested_sd=None,
            tested_baseline_sd=None,
            estimate=None,
            ci_low=None,
            ci_high=None,
            eq_low=None,
            eq_high=None,
            p_value=None,
            p_equivalence=None,
            equivalent=None,
            effect_size=None,
        )
        target = _target_of(cell.runs)
        notes.append(words.unreached_note(s, technique))
    ratio = metric not in DIFFERENCE_METRICS
    unit = "pp" if not ratio else ("s" if metric == "duration_s" else "J")
    checks = diagnostics.check_side(
        "technique", [(i, v) for i, v in judged.technique if v is not None], unit, ratio_scale=ratio, name=technique
    )
    base_key = (cell.key[0], metric)
    if base_key not in baseline_checks:
        baseline_checks[base_key] = diagnostics.check_side(
            "baseline", [(i, v) for i, v in judged.baseline if v is not None], unit, ratio_scale=ratio
        )
    checks += baseline_checks[base_key]
    checks += diagnostics.one_side_constant(
        [(i, v) for i, v in judged.technique if v is not None],
        [(i, v) for i, v in judged.baseline if v is not None],
        technique,
    )
    for side in ("technique", "baseline"):
        ids = [int(e.run_id or 0) for e in judged.excluded if e.reason == "paused" and e.side == side]
        if ids:
            checks.append(diagnostics.paused_runs(side, ids))
    caveat = cell.caveat if ratio else ""
    if caveat:
        notes.append(caveat)
    notes.extend(cell.arithmetic)
    if cell.went_wrong:
        notes.append(words.diverged_note(cell.went_wrong, len(cell.runs)))
    if judged.excluded:
        notes.append(words.excluded_note(judged.excluded, metric))
    first = cell.members[0]
    comparison = Comparison(
        model=first.model,
        dataset=first.dataset or "",
        technique=technique,
        metric=metric,
        conditions=cell.key[0],
        experiments=cell.experiments,
        stats=s,
        plan=plan,
        analysis=used,
        step=step,
        decision=decision,
        verdict=verdict,
        post_hoc=changed,
        run_ids=cell.run_ids,
        baseline_run_ids=cell.baseline_run_ids,
        excluded=tuple(judged.excluded),
        diagnostics=tuple(checks),
        energy_method=cell.energy_method if metric in metrics.ENERGY_METRICS else None,
        repeats_to_decide=stats.repeats_for(s, step) if verdict == stats.INCONCLUSIVE else None,
        target=target,
        notes=tuple(notes),
        group=group,
    )
    return replace(comparison, sentence=words.sentence(comparison))


def _flagged_caveat(rows: list[RunRow]) -> str:
    """'2 of 6 runs measured beside other work (flag host_busy)'; the verdict stands, but a reader should
    know its figures include other work. Each run counts once, whichever of the flags it has."""
    flagged = [set(r.flags) & set(CAVEAT_FLAGS) for r in rows]
    count = sum(1 for flags in flagged if flags)
    if not count:
        return ""
    names = [f for f in CAVEAT_FLAGS if any(f in flags for flags in flagged)]
    return (
        f"{count} of {len(rows)} runs measured beside other work on their host "
        f"(flag{'s' if len(names) > 1 else ''} {', '.join(names)})"
    )


def _arithmetic_caveats(rows: list[RunRow]) -> list[str]:
    """What a reader must know of how the runs computed and were fed: float32 in TF32 (10 mantissa bits,
    so a "float32" baseline is not 23 bits), bfloat16 emulated (the energy is the emulation's), an
    input-bound loop (the energy is the data loader's as much as the model's)."""
    from greenlab.core.report import words  # words imports this module's types

    notes = []
    n = len(rows)
    tf32 = [r for r in rows if r.fp32_precision == "tf32"]
    if tf32:
        notes.append(f"{words.TF32_NOTE} (10 mantissa bits) in {len(tf32)} of {n} runs (fp32_precision)")
    emulated = [r for r in rows if r.bf16_native == 0 and r.compute_dtype == "bfloat16"]
    if emulated:
        notes.append(f"{words.EMULATED_NOTE} in {len(emulated)} of {n} runs: their energy is the emulation's")
    bound = [r for r in rows if "input_bound" in r.flags]
    if bound:
        notes.append(
            f"{words.INPUT_BOUND_NOTE}: {len(bound)} of {n} runs waited for data over 20 % of their training (flag "
            "input_bound): their energy measures the data loader as much as the model"
        )
    return notes


def _target_of(rows: list[RunRow]) -> float | None:
    """The target accuracy the cell's runs were judged against (one per conditions, so any run's)."""
    return next((float(r.target_accuracy) for r in rows if r.target_accuracy is not None), None)


# -- what a face shows, chosen after judging everything ----------------------------------------------------
def of_experiment(comparisons: Iterable[Comparison], experiment: str) -> list[Comparison]:
    return [c for c in comparisons if experiment in c.experiments]


def of_runs(comparisons: Iterable[Comparison], run_ids: Iterable[int]) -> list[Comparison]:
    """The comparisons any of whose technique runs are among `run_ids` (the rows a view shows)."""
    ids = set(run_ids)
    return [c for c in comparisons if ids.intersection(c.run_ids)]


def of_cells(comparisons: Iterable[Comparison], cells: Iterable[tuple[str, str]]) -> list[Comparison]:
    """The comparisons of these (conditions, technique) cells: a grid's plan."""
    wanted = set(cells)
    return [c for c in comparisons if c.cell in wanted]


# -- units ------------------------------------------------------------------------------------------------
def format_change(value: float | None, metric: str | None = None) -> str:
    """'+3.1%', or '+3.1 pp' for accuracy and F1 (see metric_change)."""
    if value is None:
        return ""
    return f"{value:+.1f} pp" if metric in DIFFERENCE_METRICS else f"{value:+.1f}%"
