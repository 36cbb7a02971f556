"""A run that diverged is flagged, named and kept out of energy to target, not stored as a normal run."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest

from greenlab.core.report import compare, render
from greenlab.core.report import energy_to_target as e2t
from greenlab.core.run import divergence
from greenlab.core.store.rows import EpochRow, RunRow
from greenlab.tui.runs import status_text
from tests.conftest import run_cli


# -- the rule -----------------------------------------------------------------------------------------------
def test_a_loss_that_is_not_finite_or_exploded_diverged():
    assert "not finite" in divergence.diverged(last_loss=math.nan, accuracy=0.9, num_classes=10, evaluated=256)
    assert "not finite" in divergence.diverged(last_loss=math.inf, accuracy=None, num_classes=None, evaluated=None)
    why = divergence.diverged(last_loss=1.97e9, accuracy=0.10, num_classes=10, evaluated=256)
    assert why is not None and "exploded" in why and "23.0 = 10 × ln 10" in why
    # ten times a uniform guess's cross-entropy is the bound: just under it is a slow learner, not a runaway
    assert divergence.diverged(last_loss=23.0, accuracy=0.9, num_classes=10, evaluated=256) is None
    assert divergence.diverged(last_loss=23.1, accuracy=0.9, num_classes=10, evaluated=256) is not None


def test_an_accuracy_at_chance_diverged_given_how_many_examples_were_evaluated():
    # 256 examples of 10 classes: a guesser's accuracy has a standard error of 1.9 pp; two of them above 10 %
    assert divergence.at_chance(0.137, 10, 256) and not divergence.at_chance(0.14, 10, 256)
    assert divergence.at_chance(0.14, 10, 64)  # fewer examples: a wider band
    why = divergence.diverged(last_loss=2.3, accuracy=0.102, num_classes=10, evaluated=256)
    assert why is not None and "at chance (10.0% for 10 classes, over 256 examples)" in why
    assert divergence.diverged(last_loss=0.4, accuracy=0.80, num_classes=10, evaluated=256) is None
    # random labels (torchvision's FakeData) can only be learned to chance: not a divergence
    assert divergence.diverged(last_loss=2.3, accuracy=0.1, num_classes=10, evaluated=256, dataset="fake") is None


# -- a real run ---------------------------------------------------------------------------------------------
def test_a_run_with_a_huge_learning_rate_is_stored_flagged_and_said(tmp_path):
    toml = tmp_path / "experiments.toml"
    toml.write_text("""
[defaults]
dataset = "digits"
epochs = 1
batch_size = 64
optimizer = "sgd"
lr = 1e9
pretrained = false
device = "cpu"
idle_s = 0
max_train_batches = 4
max_eval_batches = 4

[[experiment]]
name = "runaway"
models = ["tinycnn"]
techniques = ["baseline"]
""")
    db = tmp_path / "runs.db"
    result = run_cli("--headless", str(toml), "--db", str(db))
    assert result.returncode == 0, result.stdout + result.stderr  # it completed: the flag tells the rest
    with sqlite3.connect(db) as conn:
        (flags,) = conn.execute("select flags from runs").fetchone()
    assert "diverged" in json.loads(flags)
    assert "run 1 diverged: " in result.stdout and "(flag diverged)" in result.stdout


# -- energy to target and the report ------------------------------------------------------------------------
def _row(run_id, technique, accuracy, energy=10.0, flags=()):
    return RunRow.of(
        id=run_id,
        experiment="e",
        model="tinycnn",
        dataset="digits",
        technique=technique,
        status="completed",
        settings_key=f"k{run_id}",
        conditions_key="c",
        settings={},
        val_accuracy=accuracy,
        energy_j=energy,
        energy_training_j=energy,
        duration_s=1.0,
        flags=json.dumps(list(flags)),
    )


def test_a_diverged_baseline_sets_no_target_and_a_diverged_run_gets_no_figure():
    rows = [
        _row(1, "baseline", 0.90),
        _row(2, "baseline", 0.92),
        _row(3, "baseline", 0.10, flags=["diverged"]),  # would drag the target down to 63 %
        _row(4, "prune", 0.91),
        _row(5, "prune", 0.10, flags=["diverged"]),
    ]
    targets = e2t.default_targets(rows)
    assert targets["c"] == pytest.approx(0.90)
    computed = e2t.compute(rows, lambda run_id: [EpochRow(run_id, 1, val_accuracy=0.95, energy_j=10.0)])
    assert set(computed) == {1, 2, 4}


def test_the_report_names_diverged_runs_and_energy_to_target_judges_the_others():
    rows = [_row(i, "baseline", 0.9 + i / 1000, energy=10.0 + i / 10) for i in (1, 2, 3)]
    rows += [_row(i, "prune", 0.9, energy=9.0 + i / 10) for i in (4, 5, 6)]
    rows.append(_row(7, "prune", 0.1, energy=9.5, flags=["diverged"]))
    rows = [row.replaced(energy_to_target_j=None if "diverged" in row.flags else row.energy_j) for row in rows]
    judged = compare.judge(rows, metrics=("energy_training_j", "energy_to_target_j"))
    energy = next(c for c in judged if c.metric == "energy_training_j")
    to_target = next(c for c in judged if c.metric == "energy_to_target_j")
    assert any("1 of 7 runs diverged (flag diverged" in note for note in energy.notes)
    assert "diverged (flag diverged" in energy.sentence and "run 7" in energy.sentence
    # left out by name, not counted as a run that never reached the target (which would withhold the verdict)
    assert to_target.verdict != "insufficient" and to_target.stats.n == 3
    assert [e.run_id for e in to_target.excluded] == [7] and "1 run that diverged left out: id 7" in to_target.sentence
    assert "diverged" in render.render_text(judged)
    assert json.loads(render.render_json(judged))[0]["notes"]


def test_the_runs_table_shows_a_diverged_run_as_diverged():
    assert status_text(_row(1, "baseline", 0.1, flags=["diverged"])) == "diverged"
    assert status_text(_row(2, "baseline", 0.9)) == "completed"
    assert status_text(_row(3, "baseline", 0.1, flags=["diverged"]).replaced(status="superseded")) == "superseded"
