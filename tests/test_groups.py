"""Groups are named by what differs: two grids of one model with other learning rates or seeds never read
the same (`tinycnn [lr=0.01]`, not `tinycnn` twice or a hash), in every face."""

from __future__ import annotations

import csv
import io
import json

import pytest

from greenlab.core.plan.config import conditions_key
from greenlab.core.report import compare, groups, plot, render
from greenlab.core.store.rows import RunRow


def _row(run_id, technique, energy, *, lr=0.01, seed=0, model="tinycnn", dataset="digits"):
    settings = {"lr": lr, "seed": seed, "dataset": dataset, "epochs": 2, "techniques": {}}
    return RunRow.of(
        id=run_id,
        experiment="e",
        model=model,
        dataset=dataset,
        technique=technique,
        status="completed",
        settings_key=f"k{run_id}",
        conditions_key=conditions_key(model, settings),
        settings=json.dumps(settings),
        energy_j=energy,
        energy_training_j=energy,
        duration_s=energy / 10,
        val_accuracy=0.9,
    )


def _grid(first_id, **conditions):
    rows = [_row(first_id + i, "baseline", 10.0 + i / 10, **conditions) for i in range(3)]
    return rows + [_row(first_id + 3 + i, "prune", 8.0 + i / 10, **conditions) for i in range(3)]


def test_labels_name_the_settings_that_differ_from_the_siblings():
    rows = _grid(1, lr=0.01) + _grid(10, lr=0.1, seed=5) + _grid(20, model="resnet18")
    labels = groups.group_labels((compare.conditions_of(r), r["model"], r) for r in rows)
    assert sorted(labels.values()) == ["resnet18", "tinycnn [lr=0.01, seed=0]", "tinycnn [lr=0.1, seed=5]"]


def test_a_dataset_that_differs_is_named_as_the_dataset_and_equal_settings_fall_back_to_the_key():
    rows = _grid(1) + _grid(10, dataset="cifar10")
    labels = set(groups.group_labels((compare.conditions_of(r), r["model"], r) for r in rows).values())
    assert labels == {"tinycnn (digits)", "tinycnn (cifar10)"}
    twin = [r.replaced(conditions_key="old:abcdef123") for r in _grid(30)]  # same settings, an older key epoch
    labels = groups.group_labels((compare.conditions_of(r), r["model"], r) for r in _grid(1) + twin)
    assert "tinycnn [abcdef]" in labels.values()


@pytest.fixture
def judged():
    rows = _grid(1, lr=0.01) + _grid(10, lr=0.1)
    return rows, compare.judge(rows)


def test_every_report_format_names_the_groups_apart(judged):
    rows, comparisons = judged
    for text in (
        render.render_text(comparisons),
        render.render_markdown(comparisons),
        render.render_latex(comparisons),
        render.verdict_summary(comparisons),
    ):
        assert "tinycnn [lr=0.01]" in text and "tinycnn [lr=0.1]" in text
    groups_in_json = {c["group"] for c in json.loads(render.render_json(comparisons))}
    assert groups_in_json == {"tinycnn [lr=0.01]", "tinycnn [lr=0.1]"}
    table = list(csv.DictReader(io.StringIO(render.render_csv(rows, comparisons, ["energy_training_j"]))))
    assert {r["group"] for r in table} == {"tinycnn [lr=0.01]", "tinycnn [lr=0.1]"}


def test_the_plot_titles_its_panels_and_rows_by_group(judged):
    rows, comparisons = judged
    figure = plot.build_figure(rows, comparisons)
    titles = sorted(a.get_title() for a in figure.axes if a.get_title())
    assert titles == ["tinycnn [lr=0.01] (digits)", "tinycnn [lr=0.1] (digits)"]
    ticks = sorted(t.get_text() for t in figure.axes[-1].get_yticklabels())
    assert ticks == ["tinycnn [lr=0.01] · prune", "tinycnn [lr=0.1] · prune"]
