"""Diverged runs stay visible: the runs table's Δ acc is never taken against a baseline that learned
nothing, a verdict with a diverged run says so in its check column, and the live queue and the toast call a
diverged run diverged, not completed."""

from __future__ import annotations

import json

import pytest

from greenlab.core.grid.grid_events import RunQueued
from greenlab.core.grid.presenter import GridPresenter
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.report import compare
from greenlab.core.run.run_events import RunBegan, RunStored
from greenlab.tui.live import queue_rows
from greenlab.tui.runs import checks_cell
from tests.test_progress import Tracker
from tests.test_report import row

DIVERGED = json.dumps(["diverged"])


def test_a_diverged_baseline_counts_for_energy_but_not_for_accuracy():
    baselines = [row("baseline", 100.0, acc=0.9), row("baseline", 300.0, acc=0.1)]
    baselines[1] = baselines[1].replaced(flags=DIVERGED)
    pruned = row("prune", 100.0, acc=0.8)
    rows = [*baselines, pruned]
    change = compare.changes(rows)[2]
    assert change["energy_j"] == pytest.approx(-50.0)  # against (100 + 300) / 2: the diverged run did that work
    assert change["val_accuracy"] == pytest.approx(-10.0)  # against 0.9 only, not (0.9 + 0.1) / 2
    groups = {g.technique: g for g in compare.summarize(rows)}
    assert groups["prune"].change["val_accuracy"] == pytest.approx(-10.0)  # the headless summary agrees


def test_a_verdict_with_a_diverged_run_names_it_in_its_check_column():
    rows = [row("baseline", e, acc=a) for e, a in ((100.0, 0.9), (104.0, 0.1), (98.0, 0.9))]
    rows += [row("prune", e) for e in (90.0, 92.0, 91.0)]
    rows = [r.replaced(id=number, settings_key=f"k{number}") for number, r in enumerate(rows, 1)]
    rows[1] = rows[1].replaced(flags=DIVERGED)
    (verdict,) = [c for c in compare.judge(rows, {}, metrics=("energy_j",)) if c.technique.startswith("prune")]
    assert "diverged" in str(checks_cell(verdict))


def test_the_live_queue_calls_a_diverged_run_diverged():
    (run,) = expand_grid(
        parse_experiments('[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\ntechniques = ["baseline"]\n')
    )
    presenter = GridPresenter()
    presenter.add_grid(1, [run])
    presenter.apply(RunQueued(0, 1, run), grid=1)
    presenter.apply(RunBegan(3, run, Tracker(), {}), grid=1)
    snapshot = presenter.apply(RunStored(3, run, "completed", None, {"energy_j": 49.1, "flags": DIVERGED}), grid=1)
    (entry,) = snapshot.queue
    assert entry.status == "completed" and entry.shown_status == "diverged"
    assert queue_rows(snapshot)[0][2] == "diverged 49.1 J"
