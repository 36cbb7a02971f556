"""The report's figure: energy against accuracy per model (95 % error bars, Pareto front marked) and the
energy change of every technique with its 95 % CI. One file, SVG or PNG, drawn by matplotlib.

The comparison axis stays readable: its range comes from the decided comparisons (`change_range`), so a
single-run estimate (+487 %, insufficient) is marked hollow at the edge instead of stretching it, and an
interval far wider than the others is clipped at the edge, drawn as an arrow, its ends written beside it.

The bars are drawn within the physical range (accuracy 0–100 %, energy and time ≥ 0, a change ≥ -100 %):
a symmetric t-interval of three runs easily reaches past it, and a bar to -20 % accuracy reads as data.
The figure says so; the report's numbers (json, csv) keep the whole interval.

matplotlib is imported when a figure is drawn, never at import: the rest of GreenLab does not need it.
The object-oriented Figure API is used (no pyplot), so no GUI backend or global state is touched.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import Any

from greenlab.core.errors import GreenLabError
from greenlab.core.report import compare, stats
from greenlab.core.report.compare import Comparison
from greenlab.core.store.rows import RunRow

PLOT_FORMATS = ("svg", "png")
CLIP_NOTE = (
    "Error bars are cut at the physical range (accuracy 0–100 %, energy and time ≥ 0, change ≥ -100 %); "
    "the report's json and csv keep the whole 95 % interval."
)
# The comparison axis: an interval may reach this many times the estimates' span past them before it is
# clipped (and drawn as an arrow); the span is at least MIN_SPAN points, so equal estimates still get an axis.
CLIP_FACTOR = 1.0
MIN_SPAN = 10.0
VERDICT_COLOURS = {
    "saves": "#1b7837",
    "costs": "#b2182b",
    "equivalent": "#2166ac",
    "inconclusive": "#7f7f7f",
    "insufficient": "#bdbdbd",
    "no spread": "#bdbdbd",
}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower energy (x) and higher accuracy (y),
    ordered by energy."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def bar_extent(
    centre: float, below: float, above: float, low: float = 0.0, high: float = math.inf
) -> tuple[float, float]:
    """The lengths below and above `centre` of an error bar [centre - below, centre + above], cut to
    [low, high]; never negative, so a centre on a bound draws no bar past it."""
    return max(0.0, min(below, centre - low)), max(0.0, min(above, high - centre))


def _bounds(metric: str) -> tuple[float, float]:
    """The physical range of a metric as the figure plots it: accuracy and F1 as fractions, the rest ≥ 0."""
    return (0.0, 1.0) if metric in compare.DIFFERENCE_METRICS else (0.0, math.inf)


def _mean_ci(metric: str, values: list[Any]) -> tuple[float | None, float]:
    """Mean and 95 % half-width of the values the analysis takes (compare.mean_and_ci): a damaged run's
    NaN or -inf is no point on the figure, as it is no measurement in the verdicts. No bar (0) where one
    run gives no interval or the interval is beyond the float range."""
    mean, half = compare.mean_and_ci(metric, values)
    return mean, half if half is not None and math.isfinite(half) else 0.0


def _cells(
    rows: Sequence[RunRow], comparisons: list[Comparison], metric: str
) -> dict[tuple[str, str, str], list[tuple[str, float, float, float, float]]]:
    """Per (group label, dataset, conditions): (technique, energy, energy CI, accuracy, accuracy CI), baseline
    first. The label names what sets the group apart from its model's others (report.groups)."""
    by_id = {r.id: r for r in rows if r.id is not None}
    groups: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for c in comparisons:
        if c.metric != metric:
            continue
        cell = groups.setdefault((c.label, c.dataset, c.conditions), {})
        cell["baseline"] = list(c.baseline_run_ids)
        cell[c.technique] = list(c.run_ids)
    result: dict[tuple[str, str, str], list[tuple[str, float, float, float, float]]] = {}
    for key, techniques in groups.items():
        points = []
        for technique, ids in techniques.items():
            members = [by_id[i] for i in ids if i in by_id]
            energy, energy_ci = _mean_ci(metric, [r.value(metric) for r in members])  # the metric chosen
            accuracy, accuracy_ci = _mean_ci("val_accuracy", [r.val_accuracy for r in members])
            if energy is not None and accuracy is not None:
                points.append((technique, energy, energy_ci, 100 * accuracy, 100 * accuracy_ci))
        result[key] = points
    return result


def _change(c: Comparison, offset: float, floor: float) -> tuple[float, float | None, float | None] | None:
    """(centre, interval low, interval high) of a comparison as a change in % (pp), the interval cut at the
    physical floor (-100 %); None without an estimate."""
    if c.stats.estimate is None:
        return None
    centre = 100 * (c.stats.estimate - offset)
    shown = c.interval
    if shown is None:
        return centre, None, None
    return centre, max(floor, 100 * (shown[0] - offset)), 100 * (shown[1] - offset)


def _end(value: float | None, in_pp: bool) -> str:
    return "-" if value is None else f"{value:+.0f}{' pp' if in_pp else ' %'}"


def change_range(
    changes: Sequence[tuple[float, float | None, float | None]], marks: Sequence[float] = ()
) -> tuple[float, float]:
    """The comparison axis's range: every decided comparison's estimate, no change, the equivalence band
    (`marks`) and each interval — except that no interval stretches it past `CLIP_FACTOR` times the
    estimates' own span on either side, so one wide interval does not squash every useful row (it is
    drawn to the edge with an arrow). Insufficient comparisons are left out by the caller: one run's
    +487 % has no interval and sets nothing."""
    core = [0.0, *marks, *(centre for centre, _low, _high in changes)]
    low, high = min(core), max(core)
    span = max(high - low, MIN_SPAN)
    ends = [end for _centre, a, b in changes for end in (a, b) if end is not None]
    left = max(min([low, *ends]), low - CLIP_FACTOR * span)
    right = min(max([high, *ends]), high + CLIP_FACTOR * span)
    pad = 0.05 * (right - left)
    return left - pad, right + pad


def render_plot(
    rows: Sequence[RunRow], comparisons: list[Comparison], fmt: str, metric: str = compare.HEADLINE
) -> bytes:
    """The figure as bytes of `fmt` (svg or png)."""
    if fmt not in PLOT_FORMATS:
        raise GreenLabError(f"--plot writes .svg or .png, not .{fmt}; name the file plot.svg or plot.png")
    figure = build_figure(rows, comparisons, metric)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=150)
    return buffer.getvalue()


def build_figure(rows: Sequence[RunRow], comparisons: list[Comparison], metric: str = compare.HEADLINE) -> Any:
    """The matplotlib Figure, unsaved (tests read its artists)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise GreenLabError("--plot needs matplotlib: pip install matplotlib (or reinstall greenlab)") from None

    label = compare.METRIC_LABELS.get(metric, metric)
    cells = _cells(rows, comparisons, metric)
    headline = [c for c in comparisons if c.metric == metric]
    columns = min(3, max(1, len(cells)))
    model_rows = max(1, math.ceil(len(cells) / columns))
    change_height = max(2.5, 0.35 * len(headline) + 1.2)
    width = max(8.0, 5.0 * columns)
    figure = Figure(figsize=(width, 4.0 * model_rows + change_height), layout="constrained")
    grid = figure.add_gridspec(model_rows + 1, columns, height_ratios=[4.0] * model_rows + [change_height])

    for index, ((model, dataset, _), points) in enumerate(cells.items()):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        low, high = _bounds(metric)
        for technique, energy, energy_ci, accuracy, accuracy_ci in points:
            x_below, x_above = bar_extent(energy, energy_ci, energy_ci, low, high)
            y_below, y_above = bar_extent(accuracy, accuracy_ci, accuracy_ci, 0.0, 100.0)
            axes.errorbar(
                energy,
                accuracy,
                xerr=[[x_below], [x_above]],
                yerr=[[y_below], [y_above]],
                fmt="o",
                capsize=3,
                label=technique,
                color="black" if technique == "baseline" else None,
            )
        front = pareto_front([(p[1], p[3]) for p in points])
        if len(front) > 1:
            axes.plot([points[i][1] for i in front], [points[i][3] for i in front], "--", color="#555555", linewidth=1)
        axes.scatter(
            [points[i][1] for i in front],
            [points[i][3] for i in front],
            s=160,
            facecolors="none",
            edgecolors="#555555",
            linewidths=1,
            label="Pareto front",
        )
        axes.set_title(model if f"({dataset})" in model else f"{model} ({dataset})")
        axes.set_xlabel(f"{label} ({'J' if metric.endswith('_j') else 's' if metric.endswith('_s') else 'mean'})")
        axes.set_ylabel("validation accuracy (%)")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")

    axes = figure.add_subplot(grid[model_rows, :])
    names = [f"{c.label} · {c.technique}" for c in headline]
    in_pp = metric in compare.DIFFERENCE_METRICS
    offset = 0.0 if in_pp else 1.0
    floor = -math.inf if in_pp else -100.0
    bands = {c.stats.equivalence_bounds for c in headline}
    edges = [100 * (edge - offset) for band in bands for edge in band]
    changes = [_change(c, offset, floor) for c in headline]
    left, right = change_range(
        [change for c, change in zip(headline, changes) if change is not None and c.verdict != stats.INSUFFICIENT],
        edges,
    )
    for y, (c, change) in enumerate(zip(headline, changes)):
        if change is None:
            continue
        centre, start, stop = change
        colour = VERDICT_COLOURS[c.verdict]
        if c.verdict == stats.INSUFFICIENT:
            # One run a side, or no baseline: an estimate with nothing to bound it. Marked, hollow, at its
            # place or at the axis's edge, with its figure in words; it never sets the axis's range.
            shown = min(max(centre, left), right)
            axes.plot(shown, y, "o", markerfacecolor="none", color=colour)
            axes.annotate(
                f"{c.word} ({centre:+.0f} {'pp' if in_pp else '%'})",
                (shown, y),
                textcoords="offset points",
                xytext=(-6 if shown >= right else 6, 4),
                ha="right" if shown >= right else "left",
                fontsize="small",
                color=colour,
            )
            continue
        drawn = min(max(centre, left), right)
        error = None
        if start is not None and stop is not None:
            error = [[max(0.0, drawn - max(start, left))], [max(0.0, min(stop, right) - drawn)]]
        axes.errorbar(drawn, y, xerr=error, fmt="o", capsize=3, color=colour)
        for end, limit, arrow in ((start, left, "<"), (stop, right, ">")):
            if end is not None and (end < limit if arrow == "<" else end > limit):
                axes.plot(limit, y, arrow, color=colour, markersize=7)  # the interval goes on past the axis
        clipped = (start is not None and start < left) or (stop is not None and stop > right)
        axes.annotate(
            c.word
            + (" (post hoc)" if c.post_hoc else "")
            + (f" [{_end(start, in_pp)}, {_end(stop, in_pp)}]" if clipped else ""),
            (drawn, y),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize="small",
            color=colour,
        )
    axes.set_xlim(left, right)
    axes.axvline(0, color="black", linewidth=0.8)
    for band in bands:
        for edge in band:
            axes.axvline(100 * (edge - offset), color="#2166ac", linewidth=0.8, linestyle=":")
    axes.set_yticks(range(len(names)), names)
    axes.set_ylim(len(names) - 0.5, -0.5)  # first comparison on top
    unit = "pp" if in_pp else "%"
    # Wrapped to the figure's width: constrained layout makes room for lines, not for one line too long.
    characters = int(width * 12)
    axes.set_title(change_title(headline, label), fontsize="medium", loc="left")
    axes.set_xlabel(
        textwrap.fill(
            f"change in {label} vs the baseline ({unit}), the interval that matches each verdict "
            "(Holm-adjusted in a family); dotted: the equivalence band; ◁ ▷ the interval goes on (its ends "
            "in brackets); hollow: insufficient, off the axis's range",
            characters,
            break_on_hyphens=False,
        )
    )
    axes.grid(True, axis="x", alpha=0.3)
    footer = textwrap.fill(CLIP_NOTE, int(characters * 1.4))
    figure.supxlabel(footer, fontsize="x-small", color="#555555")  # constrained layout makes room for it
    return figure


def change_title(headline: Sequence[Comparison], label: str) -> str:
    """The comparison panel's title: the metric, whether the plan made it primary, and each value given
    after the runs (the plan's own value beside it), so a figure cut out of the report still says so."""
    role = "primary" if any(c.primary for c in headline) else "secondary"
    title = f"Change in {label} ({role} metric of the runs' plan)"
    for name, (used, declared) in compare.post_hoc_of(headline).items():
        title += f"\npost hoc: {name} = {used:g} given after the runs (the plan declared {declared:g}); exploratory"
    return title
