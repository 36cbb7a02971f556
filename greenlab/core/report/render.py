"""Renderers of a report: the study's table (text, markdown, LaTeX), JSON, CSV and CodeCarbon's emissions.csv.

Pure functions from comparisons (greenlab.core.report.compare) and `runs` rows to text; no files, no terminal.
"""

from __future__ import annotations

import csv
import io
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from greenlab.core.plan import metrics
from greenlab.core.report import compare, json_text, stats
from greenlab.core.report.compare import Comparison
from greenlab.core.store.rows import RunRow

FORMATS = ("text", "markdown", "csv", "json", "latex", "codecarbon")
MARKS = {"saves": "↓", "costs": "↑", "equivalent": "≈", "inconclusive": "?", "insufficient": "–", "no spread": "="}
TEX_MARKS = {
    "saves": r"$\downarrow$",
    "costs": r"$\uparrow$",
    "equivalent": r"$\approx$",
    "inconclusive": "?",
    "insufficient": "--",
    "no spread": "=",
}
NEGLIGIBLE_MARK = "≈"  # after ↓ or ↑: significant, yet inside the equivalence band
ESTIMATED_MARK = "*"  # the verdict rests on estimated energy (CPU time × watts)


def mark(c: Comparison, marks: dict[str, str] = MARKS) -> str:
    """A verdict's mark in a table: ↓, ↑, ≈, ?, –, =; '↓≈' significant but negligible; '*' estimated energy."""
    text = marks[c.verdict]
    if c.negligible:
        text += marks["equivalent"] if marks is not MARKS else NEGLIGIBLE_MARK
    if c.decided and c.energy_method in (compare.ESTIMATED, compare.MIXED):
        text += ESTIMATED_MARK
    return text


# The columns of CodeCarbon's emissions.csv (3.x, EmissionsData), in its order.
CODECARBON_COLUMNS = (
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
)
RUN_CSV_COLUMNS = (
    "id",
    "experiment",
    "model",
    "dataset",
    "technique",
    "repeat",
    "seed",
    "conditions",
    "group",
    "role",
    "energy_training_j",
    "energy_j",
    "duration_s",
    "val_accuracy",
    "val_f1",
    "target_accuracy",
    "energy_to_target_j",
    "energy_measured_j",
    "energy_estimated_j",
    # What the run computed in and how long it waited for data: a "float32" in TF32 and an input-bound run
    # measure something else than their names say.
    "compute_dtype",
    "fp32_precision",
    "data_wait_s",
)

# The columns of `runs` a format reads beyond what judging reads (compare.COLUMNS); the table's formats
# read none.
COLUMNS: dict[str, tuple[str, ...]] = {
    "csv": tuple(name for name in RUN_CSV_COLUMNS if name not in ("conditions", "group", "role")),
    "codecarbon": (
        "started_at",
        "finished_at",
        "energy_kwh",
        "energy_cpu_j",
        "energy_cpu_method",
        "energy_gpu_j",
        "energy_gpu_method",
        "energy_dram_j",
        "energy_dram_method",
        "co2e_g",
        "pue",
        "host",
        "meters",
    ),
}
_RUN_CSV_STORED = COLUMNS["csv"]  # the CSV's columns a run's row holds (the others are the report's)
# The CSV's run columns are a list of names: read as attributes, in one call a row (5,000 rows of 20).
_RUN_CSV_READ = RunRow.getter(*_RUN_CSV_STORED)

# What a table shows beside its headline metric: time and accuracy in each cell, accuracy and energy to target
# in the sentences under it.
BESIDE_THE_HEADLINE = ("duration_s", "val_accuracy", "energy_to_target_j")


def metrics_shown(fmt: str, headlines: Iterable[str], every: bool) -> tuple[str, ...]:
    """The metrics a report in `fmt` shows, in compare.METRICS's order, so that no other is judged (each
    metric's verdicts are the same judged alone): its headlines (the plans' primaries, or the one asked for),
    what a table shows beside them, and in json and csv `every` metric unless one was asked for; CodeCarbon's
    runs are those of any comparison."""
    shown = set(headlines)
    if fmt in ("text", "markdown", "latex"):
        shown.update(BESIDE_THE_HEADLINE)
    elif fmt in ("json", "csv") and every:
        shown.update(compare.METRICS)
    return tuple(m for m in compare.METRICS if m in shown)


# -- the study's table --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One technique's column group in one model's row."""

    change: str  # the headline metric's change [the interval matching its verdict]
    time: str
    accuracy: str
    comparison: Comparison


@dataclass(frozen=True)
class TableRow:
    label: str
    cells: dict[str, Cell]  # technique -> cell


def change_text(c: Comparison | None, with_ci: bool) -> str:
    """A comparison's change as a table shows it: +x % of the baseline (pp for accuracy) [the interval that
    matches its verdict: Holm-adjusted in a family of several]."""
    if c is None or c.stats.estimate is None:
        return "-"
    offset, unit = (0.0, "pp") if c.in_pp else (1.0, "%")
    text = f"{100 * (c.stats.estimate - offset):+.1f} {unit}"
    shown = c.interval
    if with_ci and shown is not None:
        text += f" [{100 * (shown[0] - offset):+.1f}, {100 * (shown[1] - offset):+.1f}]"
    return text


def _index(comparisons: Iterable[Comparison]) -> dict[tuple[str, str, str, str], Comparison]:
    return {(c.conditions, c.model, c.technique, c.metric): c for c in comparisons}


def study_table(comparisons: list[Comparison], metric: str = compare.HEADLINE) -> tuple[list[str], list[TableRow]]:
    """Techniques (column groups, in order of appearance) and one row per model (and dataset, and
    conditions where a model ran under several)."""
    index = _index(comparisons)
    techniques = list(dict.fromkeys(c.technique for c in comparisons))
    cells = list(dict.fromkeys((c.model, c.dataset, c.conditions) for c in comparisons))
    labels = {c.conditions: c.label for c in comparisons}  # the model and what sets it apart (report.groups)
    datasets = {d for _, d, _ in cells}
    rows = []
    for model, dataset, conditions in cells:
        label = labels[conditions]
        if len(datasets) > 1 and f"({dataset})" not in label:
            label = label.replace(model, f"{model} ({dataset})", 1)
        row: dict[str, Cell] = {}
        for technique in techniques:
            headline = index.get((conditions, model, technique, metric))
            if headline is None:
                continue
            row[technique] = Cell(
                change=change_text(headline, with_ci=True),
                time=change_text(index.get((conditions, model, technique, "duration_s")), with_ci=False),
                accuracy=change_text(index.get((conditions, model, technique, "val_accuracy")), with_ci=False),
                comparison=headline,
            )
        rows.append(TableRow(label, row))
    return techniques, rows


def holm_clause(comparisons: list[Comparison]) -> str:
    """How a table's p-values were adjusted: Holm over each plan's declared family, or, where no comparison
    has a p-value, that there is none to adjust ("Holm over 0" reads as a mistake)."""
    if not any(c.stats.p_value is not None for c in comparisons):
        return "no comparison has a p-value: fewer than 2 runs a side, or no spread"
    families = sorted({c.holm_family for c in comparisons})
    sizes = "/".join(str(f) for f in families)
    return f"Holm over each plan's declared family ({sizes} comparison{'s' if families != [1] else ''})"


def plan_lines(comparisons: list[Comparison]) -> list[str]:
    """One line per plan the shown verdicts were decided under, and one per value given post hoc."""
    plans: dict[str, Comparison] = {}
    for c in comparisons:
        plans.setdefault(c.plan.describe(), c)
    lines = []
    for described, c in plans.items():
        a = c.plan.analysis
        lines.append(
            f"Plan: {described}: primary {a.primary}, α = {a.alpha:g}, equivalence ±"
            f"{100 * a.equivalence_margin:g} % (ratio {1 / (1 + a.equivalence_margin):.3f}–"
            f"{1 + a.equivalence_margin:.3f}), accuracy ±{a.accuracy_margin_pp:g} pp."
        )
    for name, (used, declared) in compare.post_hoc_of(comparisons).items():
        lines.append(
            f"Post hoc: {name} = {used:g} was given after the runs, on the command line; the plan "
            f"declared {declared:g}. Verdicts under it are exploratory."
        )
    return lines


def legend(comparisons: list[Comparison], metric: str = compare.HEADLINE, *, tex: bool = False) -> str:
    headline = [c for c in comparisons if c.metric == metric]
    marks = TEX_MARKS if tex else MARKS
    label = metrics.label(metric)
    role = "primary" if any(c.primary for c in headline) else "secondary"
    what = (
        "difference in percentage points"
        if metric in compare.DIFFERENCE_METRICS
        else "ratio of geometric means - 1, in %"
    )
    insufficient = "fewer than 2 usable runs a side, or no baseline"
    if metric == "energy_to_target_j":
        insufficient += ", or a run that never reached the target"
    alphas = "/".join(sorted({f"{c.analysis.alpha:g}" for c in headline})) or "0.05"
    if metric in compare.DIFFERENCE_METRICS:
        band = "±" + "/".join(sorted({f"{c.analysis.accuracy_margin_pp:g}" for c in headline})) + " pp"
    else:
        band = (
            "±"
            + "/".join(sorted({f"{100 * c.analysis.equivalence_margin:g}" for c in headline}))
            + " % (log-symmetric)"
        )
    return (
        f"change: {label} ({role} metric) against the matching baseline ({what}), [the interval that "
        f"matches the verdict: Holm-adjusted where a plan has several comparisons; tested on "
        f"{'raw values' if metric in compare.DIFFERENCE_METRICS else 'log values'}]; time: change in duration; "
        f"acc: difference in validation accuracy, pp. Marks: {marks['saves']} saves, {marks['costs']} costs "
        f"(Holm-adjusted p < α = {alphas}; {holm_clause(headline)}), {marks['equivalent']} equivalent "
        f"(the (1 − 2α) CI within {band}), {marks['saves']}{NEGLIGIBLE_MARK if not tex else marks['equivalent']} "
        f"significant yet negligible (both), {marks['inconclusive']} inconclusive, {marks['insufficient']} "
        f"insufficient ({insufficient}), {marks['no spread']} no spread (identical runs: nothing to test); "
        f"{ESTIMATED_MARK} the energy is estimated (CPU time × watts): a time saving as much as an energy one."
    )


def _technique_lines(
    index: dict[tuple[str, str, str, str], Comparison],
    conditions: str,
    model: str,
    technique: str,
    metric: str,
    checks: list[str],
) -> list[str]:
    """One technique's sentences in a report — the headline metric's, then accuracy and energy to target
    where present, each tagged primary or secondary — with their diagnostics added to `checks`."""
    lines = []
    for wanted in dict.fromkeys((metric, "val_accuracy", "energy_to_target_j")):
        c = index.get((conditions, model, technique, wanted))
        if c is None or (wanted != metric and c.stats.n + c.stats.n_missing == 0):
            continue
        if wanted == "energy_to_target_j" and c.stats.n == 0 and c.stats.n_baseline == 0:
            continue
        for d in c.diagnostics:
            text = f"check ({metrics.label(wanted)}): {d.text}"
            if text not in checks:
                checks.append(text)
        lines.append(f"[{c.role}] {c.sentence}")
    return lines


def _sentences(comparisons: list[Comparison], metric: str) -> list[tuple[str, list[str]]]:
    """Per table row label: the diagnostics of its runs first, then the headline sentence, then accuracy and
    energy to target where present, each tagged primary or secondary."""
    techniques, rows = study_table(comparisons, metric)
    index = _index(comparisons)
    labels = {(c.model, c.dataset, c.conditions): None for c in comparisons}
    result = []
    for (model, _dataset, conditions), row in zip(labels, rows):
        checks: list[str] = []
        lines = []
        for technique in techniques:
            lines += _technique_lines(index, conditions, model, technique, metric, checks)
        result.append((row.label, checks + lines))
    return result


def explanation(chosen: Comparison, comparisons: Iterable[Comparison]) -> list[str]:
    """A verdict as `greenlab report` writes it for its technique: the checks of its runs, then its
    sentences (the headline metric's first, then those of the other metrics judged) — one function, so the
    TUI shows exactly the report's words."""
    checks: list[str] = []
    lines = _technique_lines(
        _index(comparisons), chosen.conditions, chosen.model, chosen.technique, chosen.metric, checks
    )
    return checks + lines


def by_primary(comparisons: list[Comparison]) -> list[tuple[str, list[Comparison]]]:
    """The comparisons split by their plan's primary metric, in the order first met: a table shows one
    metric, and a store whose plans declared different primaries gets one table per primary, so no row's
    headline is a metric its plan called secondary."""
    sections: dict[str, list[Comparison]] = {}
    for c in comparisons:
        sections.setdefault(c.plan.analysis.primary, []).append(c)
    return list(sections.items())


def render_sections(fmt: str, sections: list[tuple[str, list[Comparison]]]) -> str:
    """A text, markdown or LaTeX report of one table per (primary metric, comparisons) section; headed
    by its metric where there are several."""
    render = {"text": render_text, "markdown": render_markdown, "latex": render_latex}[fmt]
    if len(sections) == 1:
        metric, shown = sections[0]
        return render(shown, metric)
    parts = []
    for metric, shown in sections:
        label = f"{metrics.label(metric)} ({metric})"
        heading = {
            "text": f"== Plans whose primary metric is {label} ==\n\n",
            "markdown": f"## Plans whose primary metric is {_md(label)}\n\n",
            "latex": f"% plans whose primary metric is {label}\n",
        }[fmt]
        parts.append(heading + render(shown, metric))
    return "\n\n".join(part.rstrip("\n") for part in parts) + ("" if fmt == "text" else "\n")  # as render_text


def render_text(comparisons: list[Comparison], metric: str = compare.HEADLINE) -> str:
    if not comparisons:
        return "no comparisons: no completed technique runs"
    techniques, rows = study_table(comparisons, metric)
    heads = ("change [CI]", "time", "acc", "")
    widths: dict[str, tuple[int, int, int, int]] = {}
    for t in techniques:
        cells = [r.cells[t] for r in rows if t in r.cells]
        widths[t] = (
            max([len(heads[0]), *(len(c.change) for c in cells)]),
            max([len(heads[1]), *(len(c.time) for c in cells)]),
            max([len(heads[2]), *(len(c.accuracy) for c in cells)]),
            1,
        )
    label_width = max([len("model"), *(len(r.label) for r in rows)])

    def group(t: str, values: tuple[str, str, str, str]) -> str:
        w = widths[t]
        return f"{values[0]:>{w[0]}}  {values[1]:>{w[1]}}  {values[2]:>{w[2]}} {values[3]:<{w[3]}}"

    def group_width(t: str) -> int:
        return sum(widths[t]) + 5

    lines = [
        " " * label_width + "".join(f"   {t:^{group_width(t)}}" for t in techniques),
        f"{'model':<{label_width}}" + "".join(f"   {group(t, heads)}" for t in techniques),
    ]
    lines.append("-" * len(lines[1]))
    for row in rows:
        text = f"{row.label:<{label_width}}"
        for t in techniques:
            cell = row.cells.get(t)
            values = (cell.change, cell.time, cell.accuracy, mark(cell.comparison)) if cell else ("", "", "", "")
            text += f"   {group(t, values)}"
        lines.append(text.rstrip())
    lines += ["", legend(comparisons, metric), *plan_lines(comparisons), ""]
    for label, sentences in _sentences(comparisons, metric):
        lines.append(f"{label}:")
        lines += [f"  - {s}" for s in sentences]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(comparisons: list[Comparison], metric: str = compare.HEADLINE) -> str:
    if not comparisons:
        return "_No comparisons: no completed technique runs._\n"
    techniques, rows = study_table(comparisons, metric)
    header = ["model"]
    for t in techniques:
        header += [f"{t}: change [CI]", f"{t}: time", f"{t}: acc", f"{t}"]
    lines = [
        "| " + " | ".join(_md(h) for h in header) + " |",
        "|" + "|".join(["---"] + ["---:", "---:", "---:", ":---:"] * len(techniques)) + "|",
    ]
    for row in rows:
        values = [row.label]
        for t in techniques:
            cell = row.cells.get(t)
            values += [cell.change, cell.time, cell.accuracy, mark(cell.comparison)] if cell else ["", "", "", ""]
        lines.append("| " + " | ".join(_md(v) for v in values) + " |")
    lines += ["", f"*{legend(comparisons, metric)}*", "", *[f"*{_md(line)}*" for line in plan_lines(comparisons)], ""]
    for label, sentences in _sentences(comparisons, metric):
        lines.append(f"**{_md(label)}**")
        lines.append("")
        lines += [f"- {s}" for s in sentences]
        lines.append("")
    return "\n".join(lines)


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "±": r"$\pm$",
    "<": r"$<$",
    ">": r"$>$",
    "α": r"$\alpha$",
    "−": "-",
    "×": r"$\times$",
    "≤": r"$\leq$",
    "↓": r"$\downarrow$",
    "↑": r"$\uparrow$",
    "≈": r"$\approx$",
    "·": r"$\cdot$",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def render_latex(comparisons: list[Comparison], metric: str = compare.HEADLINE) -> str:
    """A booktabs table fragment (\\usepackage{booktabs}) and the sentences as an itemize list."""
    if not comparisons:
        return "% greenlab report: no comparisons (no completed technique runs)\n"
    techniques, rows = study_table(comparisons, metric)
    columns = "l" + " ".join("rrrc" for _ in techniques)
    lines = [
        "% greenlab report; needs \\usepackage{booktabs}",
        "\\begin{table}[ht]",
        "\\centering",
        "\\small",
        f"\\begin{{tabular}}{{{columns}}}",
        "\\toprule",
        " & " + " & ".join(f"\\multicolumn{{4}}{{c}}{{{tex_escape(t)}}}" for t in techniques) + " \\\\",
        " ".join(f"\\cmidrule(lr){{{2 + 4 * i}-{5 + 4 * i}}}" for i in range(len(techniques))),
        " & ".join(["model", *(["change [CI]", "time", "acc", ""] * len(techniques))]) + " \\\\",
        "\\midrule",
    ]
    for row in rows:
        values = [tex_escape(row.label)]
        for t in techniques:
            cell = row.cells.get(t)
            values += (
                [
                    tex_escape(cell.change),
                    tex_escape(cell.time),
                    tex_escape(cell.accuracy),
                    mark(cell.comparison, TEX_MARKS),
                ]
                if cell
                else ["", "", "", ""]
            )
        lines.append(" & ".join(values) + " \\\\")
    caption = " ".join([legend(comparisons, metric), *plan_lines(comparisons)])
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{tex_escape(caption)}}}",
        "\\end{table}",
        "",
        "\\begin{itemize}",
    ]
    for label, sentences in _sentences(comparisons, metric):
        lines += [f"  \\item {tex_escape(label)}: {tex_escape(s)}" for s in sentences]
    lines.append("\\end{itemize}")
    return "\n".join(lines) + "\n"


# -- machine-readable ---------------------------------------------------------------------------------------
def render_json(comparisons: list[Comparison], metrics: Iterable[str] | None = None) -> str:
    wanted = set(metrics) if metrics is not None else None
    objects = [c.to_dict() for c in comparisons if wanted is None or c.metric in wanted]
    return json_text.dumps(objects) + "\n"


def report_runs(rows: Sequence[RunRow], comparisons: list[Comparison]) -> list[RunRow]:
    """The runs a report speaks of: the compared runs and their baselines, by id."""
    ids = {i for c in comparisons for i in (*c.run_ids, *c.baseline_run_ids)}
    return sorted((r for r in rows if r.id in ids), key=lambda r: r.id)


def _csv_value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def render_csv(rows: Sequence[RunRow], comparisons: list[Comparison], metrics: Iterable[str]) -> str:
    """One row per run (compared runs and their baselines), with its comparison's columns per metric."""
    metrics = tuple(metrics)
    by_run: dict[tuple[int, str], Comparison] = {(i, c.metric): c for c in comparisons for i in c.run_ids}
    groups_of = {c.conditions: c.label for c in comparisons}
    per_metric = [
        "role",
        "n",
        "n_baseline",
        "ratio",
        "ratio_ci_low",
        "ratio_ci_high",
        "adjusted_ci_low",
        "adjusted_ci_high",
        "p_value",
        "p_holm",
        "holm_family",
        "equivalent",
        "verdict",
        "negligible",
        "energy_method",
        "post_hoc",
    ]
    header = list(RUN_CSV_COLUMNS)
    for m in metrics:
        header += [f"{m}_{k}" for k in per_metric]
        if m in compare.DIFFERENCE_METRICS:
            header += [f"{m}_difference_pp", f"{m}_difference_pp_ci_low", f"{m}_difference_pp_ci_high"]
    out = io.StringIO()
    # A plain writer of each line's values in the header's order: a DictWriter checks every line's keys.
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    # A comparison's columns, made once: each of its runs (25 a side in a study) repeats them.
    columns_of: dict[int, dict[str, Any]] = {}

    def comparison_columns(c: Comparison) -> dict[str, Any]:
        found = columns_of.get(id(c))
        if found is None:
            data = c.to_dict()
            data["post_hoc"] = "; ".join(
                f"{name}={used:g} (declared {declared:g})" for name, (used, declared) in c.post_hoc.items()
            )
            found = {f"{c.metric}_{k}": _csv_value(data[k]) for k in per_metric}
            if c.metric in compare.DIFFERENCE_METRICS:
                for k in ("difference_pp", "difference_pp_ci_low", "difference_pp_ci_high"):
                    found[f"{c.metric}_{k}"] = _csv_value(data[k])
            columns_of[id(c)] = found
        return found

    for row in report_runs(rows, comparisons):
        line: dict[str, Any] = dict(zip(_RUN_CSV_STORED, map(_csv_value, _RUN_CSV_READ(row))))
        line["conditions"] = compare.conditions_of(row)
        line["group"] = groups_of.get(line["conditions"], row.model)
        line["role"] = "baseline" if row.technique == "baseline" else "technique"
        for m in metrics:
            c = by_run.get((int(row.id or 0), m))
            if c is not None:
                line.update(comparison_columns(c))
        writer.writerow([line.get(k, "") for k in header])
    return out.getvalue()


def _kwh(joules: Any) -> float | None:
    return None if joules is None else float(joules) / 3.6e6


def _watts(joules: Any, seconds: Any) -> float | None:
    return None if joules is None or not seconds else float(joules) / float(seconds)


def codecarbon_row(row: RunRow) -> dict[str, Any]:
    """A run in CodeCarbon's emissions.csv layout. What GreenLab does not know (location, cloud,
    utilisation, water) stays empty, and codecarbon_version stays empty: CodeCarbon measured nothing.
    A component GreenLab could not read at all (method `unavailable`) stays empty rather than 0."""
    host = row.host
    components = row.meters.get("components", {})
    gpus = [facts for name, facts in components.items() if name.startswith("gpu") and isinstance(facts, dict)]
    cpu_facts = components.get("cpu") if isinstance(components.get("cpu"), dict) else {}
    duration = row.duration_s

    measured = {
        "cpu": (row.energy_cpu_j, row.energy_cpu_method),
        "gpu": (row.energy_gpu_j, row.energy_gpu_method),
        "dram": (row.energy_dram_j, row.energy_dram_method),
    }

    def component(kind: str) -> Any:
        joules, method = measured[kind]
        return None if method == "unavailable" else joules

    emissions = None if row.co2e_g is None else float(row.co2e_g) / 1000.0
    stamp = row.finished_at or row.started_at
    try:
        timestamp = datetime.fromisoformat(stamp).strftime("%Y-%m-%dT%H:%M:%S") if stamp else None
    except ValueError:
        timestamp = stamp
    names = [str(g["name"]) for g in gpus if g.get("name")]
    values = {
        "timestamp": timestamp,
        "project_name": row.experiment,
        "run_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"greenlab:run:{row.id}:{row.started_at}")),
        "experiment_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"greenlab:experiment:{row.experiment}")),
        "duration": duration,
        "emissions": emissions,
        "emissions_rate": emissions / duration if emissions is not None and duration else None,
        "cpu_power": _watts(component("cpu"), duration),
        "gpu_power": _watts(component("gpu"), duration),
        "ram_power": _watts(component("dram"), duration),
        "cpu_energy": _kwh(component("cpu")),
        "gpu_energy": _kwh(component("gpu")),
        "ram_energy": _kwh(component("dram")),
        "energy_consumed": row.energy_kwh,
        "os": host.get("platform"),
        "python_version": host.get("python"),
        "cpu_count": host.get("cpu_count"),
        "cpu_model": cpu_facts.get("cpu_model"),
        "gpu_count": len(gpus) or None,
        "gpu_model": f"{len(names)} x {names[0]}" if names and len(set(names)) == 1 else (", ".join(names) or None),
        "ram_total_size": host.get("memory_gb"),
        "pue": row.pue,
    }
    return {name: _csv_value(values.get(name)) for name in CODECARBON_COLUMNS}


def render_codecarbon(rows: Sequence[RunRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CODECARBON_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(codecarbon_row(row))
    return out.getvalue()


def estimated_runs(rows: Sequence[RunRow]) -> int:
    """How many runs hold estimated energy (CodeCarbon's layout has no column to say so)."""
    return sum(1 for r in rows if (r.energy_estimated_j or 0) > 0)


# -- the headless summary ----------------------------------------------------------------------------------
def verdict_summary(comparisons: list[Comparison], metric: str | None = None) -> str:
    """The diagnostics, then a compact table (change [CI], p, Holm p, verdict; a flagged row says so), the
    plan and the sentences, for the end of a headless grid; `metric` defaults to the plan's primary one."""
    if metric is None:
        metric = next((c.plan.analysis.primary for c in comparisons), compare.HEADLINE)
    chosen = [c for c in comparisons if c.metric == metric]
    if not chosen:
        return ""
    label = metrics.label(metric)
    role = "primary" if chosen[0].primary else "secondary"
    what = "difference in pp" if metric in compare.DIFFERENCE_METRICS else "ratio of geometric means, log scale"
    # Diagnostics come first: a reader who stops at the table has already been told what to look at.
    checks = list(dict.fromkeys(f"check: {c.label}: {d.text}" for c in chosen for d in c.diagnostics))
    lines = ["Look before you trust a verdict (flagged, never dropped):", *checks, ""] if checks else []
    lines += [
        f"Verdicts on {label}, the {role} metric ({what}; {holm_clause(chosen)}; the interval is the one "
        "that matches the verdict):"
    ]
    width = max(14, *(len(c.label) for c in chosen))  # a label names what sets a group apart: lr=0.01
    named = max(14, *(len(c.technique) for c in chosen))  # and a technique its settings: prune[amount=0.9]
    header = f"{'model':<{width}} {'technique':<{named}} {'n':>7} {'change [CI]':>24} {'p':>7} {'p Holm':>7}  verdict"
    lines += [header, "-" * len(header)]
    for c in chosen:
        s = c.stats
        p = "-" if s.p_value is None else ("<0.001" if s.p_value < 0.001 else f"{s.p_value:.3f}")
        p_holm = "-" if c.p_holm is None else ("<0.001" if c.p_holm < 0.001 else f"{c.p_holm:.3f}")
        lines.append(
            f"{c.label:<{width}} {c.technique:<{named}} {f'{s.n}v{s.n_baseline}':>7} "
            f"{change_text(c, with_ci=True):>24} {p:>7} {p_holm:>7}  {c.word}"
            + ("  (see check)" if c.diagnostics else "")
        )
    lines += ["", *plan_lines(chosen)]
    decided = [c for c in chosen if c.verdict != stats.INSUFFICIENT]
    if decided:
        lines.append("")
        lines += [f"{c.label}: {c.sentence}" for c in decided]
    if any(c.stats.n == 1 or c.stats.n_baseline == 1 for c in chosen):
        lines += [
            "",
            "One run per cell cannot show significance: set repeats = 3 (or more) under [defaults] "
            "in the experiments file and run the grid again; each repeat is an independent draw.",
        ]
    return "\n".join(lines)
