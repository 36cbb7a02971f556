"""The report's figure stays readable: a single-run estimate and one wide interval never squash the rest."""

from __future__ import annotations

import json

from greenlab.core.plan.config import conditions_key
from greenlab.core.report import compare
from greenlab.core.report.plot import build_figure, change_range
from greenlab.core.store.rows import RunRow


def _row(run_id, technique, energy, lr):
    settings = {"lr": lr, "dataset": "digits", "techniques": {}}
    return RunRow.of(
        id=run_id,
        experiment="e",
        model="tinycnn",
        dataset="digits",
        technique=technique,
        status="completed",
        settings_key=f"k{run_id}",
        conditions_key=conditions_key("tinycnn", settings),
        settings=json.dumps(settings),
        energy_j=energy,
        energy_training_j=energy,
        duration_s=1.0,
        val_accuracy=0.9,
    )


def _study():
    rows = []
    for lr, baseline, technique in (
        (0.01, [10.0, 10.2, 10.1], [9.0, 9.1, 9.05]),  # a clear, tight -10 %
        (0.02, [10.0, 10.3, 9.9], [8.4, 8.6, 8.5]),  # -15 %
        (0.03, [10.0, 10.1, 10.2], [58.7]),  # one run: +480 %, insufficient
        (0.04, [1.0, 10.0, 100.0], [3.0, 9.0, 30.0]),  # about -7 %, in an interval from -99 % to +10,000 %
    ):
        first = len(rows) + 1
        rows += [_row(first + i, "baseline", e, lr) for i, e in enumerate(baseline)]
        rows += [_row(first + 3 + i, "prune", e, lr) for i, e in enumerate(technique)]
    return rows


def test_insufficient_cells_and_wide_intervals_do_not_set_the_comparison_axis():
    rows = _study()
    comparisons = compare.judge(rows, metrics=("energy_training_j",))
    assert {c.verdict for c in comparisons} >= {"saves", "insufficient"}
    axes = build_figure(rows, comparisons).axes[-1]
    left, right = axes.get_xlim()
    assert right < 150 and left > -110  # not +10,000 %, not +480 %
    texts = [t.get_text() for t in axes.texts]
    assert any(t.startswith("insufficient (+48") for t in texts)  # the single run is marked, with its figure
    clipped = [t for t in texts if "[" in t]
    assert len(clipped) == 1 and "+" in clipped[0]  # the wide interval's ends are written beside it
    arrows = [line for line in axes.lines if line.get_marker() == ">"]
    assert len(arrows) == 1 and arrows[0].get_xdata()[0] == right  # drawn to the edge, an arrow


def test_the_range_follows_the_decided_estimates_and_clips_only_what_reaches_far_past_them():
    assert change_range([(-10.0, -12.0, -8.0)]) == change_range([(-10.0, -12.0, -8.0)], ())
    left, right = change_range([(-10.0, -12.0, -8.0), (-15.0, -20.0, -11.0)], [-4.8, 5.0])
    assert left < -20 and 5 < right < 10  # the intervals, the band and no change all in sight
    left, right = change_range([(-10.0, -12.0, -8.0), (20.0, -100.0, 9000.0)])
    assert right < 100 and left >= -100 - 0.05 * (right + 100)  # 30 points of estimates: clipped past ±30


def _one_cell():
    return [r for r in _study() if r["id"] <= 6]


def test_the_change_panel_names_its_metric_primary_or_secondary_and_every_post_hoc_value():
    from greenlab.core.plan.analysis import PostHoc

    rows = _one_cell()
    primary = build_figure(rows, compare.judge(rows)).axes[-1]
    assert "(primary metric" in primary.get_title(loc="left")
    assert "post hoc" not in primary.get_title(loc="left")
    secondary = build_figure(rows, compare.judge(rows), metric="duration_s").axes[-1]
    assert "(secondary metric" in secondary.get_title(loc="left")

    judged = compare.judge(rows, post_hoc=PostHoc(equivalence_margin=0.1))
    axes = build_figure(rows, judged).axes[-1]
    title = axes.get_title(loc="left")
    assert "post hoc: equivalence_margin = 0.1" in title and "the plan declared 0.05" in title
    assert all(t.get_text().endswith("(post hoc)") or "(post hoc)" in t.get_text() for t in axes.texts)


def test_every_label_of_a_one_model_figure_fits_inside_it():
    rows = _one_cell()
    figure = build_figure(rows, compare.judge(rows))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()  # constrained layout places the labels at draw time
    renderer = canvas.get_renderer()
    page = figure.bbox
    texts = [axes.xaxis.label for axes in figure.axes] + [figure._supxlabel]
    for text in texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1, text.get_text()
