"""Resume keys and "same conditions": what a rerun skips, what it recomputes, which baseline a run meets."""

from __future__ import annotations

import json

import pytest
import sqlite_utils

from greenlab.core.grid.grid_events import RunSkipped
from greenlab.core.grid.local import LocalDriver
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.report import compare
from greenlab.core.store import schema
from greenlab.core.store.database import Store

GRID = """
[defaults]
epochs = 1
pretrained = false
device = "cpu"
repeats = {repeats}
price_per_kwh = {price}

[[experiment]]
name = "{name}"
models = ["tinycnn"]
techniques = ["baseline", "prune"]
"""


def grid(repeats=2, price=0.29, name="demo"):
    return expand_grid(parse_experiments(GRID.format(repeats=repeats, price=price, name=name)))


def store_completed(store, runs, energy=3600.0):
    """Rows as a finished grid leaves them (no training: the keys are what is under test)."""
    for run in runs:
        run_id = store.start_run(
            {
                "experiment": run.experiment,
                "model": run.model,
                "technique": run.technique,
                "dataset": run.settings.dataset,
                "settings": run.settings_dict(),
                "settings_key": run.settings_key(),
                "conditions_key": run.conditions_key(),
                "seed": run.seed,
                "repeat": run.repeat,
                **run.accounting(),
            }
        )
        store.update_run(run_id, status="completed", energy_j=energy, val_accuracy=0.9)


def supervise(store, runs):
    """run_grid with execution recorded instead of performed."""
    executed, skipped = [], []
    supervisor = LocalDriver(store, on_event=lambda e: skipped.append(e) if isinstance(e, RunSkipped) else None)
    supervisor.supervisor.execute = lambda run: executed.append(run)
    supervisor.supervisor.launcher.start = lambda env=None: None  # nothing is launched: execution is recorded only
    supervisor.supervisor.warm_up = lambda: None
    supervisor.run_grid(runs)
    return executed, skipped


def test_raising_repeats_runs_only_the_new_repeat(tmp_path):
    store = Store(tmp_path / "runs.db")
    store_completed(store, grid(repeats=2))
    executed, skipped = supervise(store, grid(repeats=3))
    assert [(r.technique, r.repeat) for r in executed] == [("baseline", 2), ("prune", 2)]
    assert len(skipped) == 4


def test_new_accounting_inputs_recompute_instead_of_rerunning(tmp_path):
    store = Store(tmp_path / "runs.db")
    store_completed(store, grid(price=0.29), energy=3.6e6)  # 1 kWh each
    executed, skipped = supervise(store, grid(price=0.5))
    assert executed == []
    assert all("recomputed" in event.reason for event in skipped)
    rows = store.runs()
    assert [row["cost"] for row in rows] == pytest.approx([0.5] * len(rows))
    assert {row["price_per_kwh"] for row in rows} == {0.5}
    assert {row["settings"]["price_per_kwh"] for row in rows} == {0.5}


def test_two_experiments_with_the_same_work_share_one_baseline(tmp_path):
    store = Store(tmp_path / "runs.db")
    store_completed(store, grid(name="first"))
    second = grid(name="second")
    executed, _ = supervise(store, second)
    assert executed == []  # the same work, already done under the first experiment's name
    # A technique of the second experiment still meets its baseline: conditions ignore the name.
    prune = next(r for r in store.runs() if r.technique == "prune").replaced(experiment="second")
    baseline = next(r for r in store.runs() if r.technique == "baseline")
    assert prune.conditions_key == baseline.conditions_key == second[0].conditions_key()
    assert compare.conditions_of(prune) == compare.conditions_of(baseline)


def test_conditions_and_keys_follow_the_work():
    base = next(r for r in grid() if r.technique == "baseline" and r.repeat == 0)
    same = [
        next(r for r in g if r.technique == "baseline" and r.repeat == 0)
        for g in (grid(price=0.5), grid(repeats=5), grid(name="other"))
    ]
    assert {r.settings_key() for r in same} == {base.settings_key()}
    epochs = expand_grid(
        parse_experiments(GRID.format(repeats=2, price=0.29, name="demo").replace("epochs = 1", "epochs = 2"))
    )[0]
    assert epochs.conditions_key() != base.conditions_key()
    baseline, prune = sorted(grid()[:2], key=lambda r: r.technique)
    assert baseline.conditions_key() == prune.conditions_key() and baseline.settings_key() != prune.settings_key()


def test_a_schema_1_store_gets_keys_of_its_own_epoch(tmp_path):
    """Old runs followed other rules (truncation toward zero, one data order for all repeats): they keep
    distinct keys, so a grid neither skips today's runs for them nor compares the two."""
    from greenlab.core.plan.config import LEGACY_KEY_EPOCH, conditions_key, run_key

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    schema._migrate_1(db)
    db.execute("PRAGMA user_version = 1")
    run = next(r for r in grid() if r.technique == "prune" and r.repeat == 1)
    settings = run.settings_dict()
    db["runs"].insert(
        {
            "experiment": "demo",
            "model": "tinycnn",
            "technique": "prune",
            "status": "completed",
            "settings": json.dumps(settings),
            "settings_key": "old-hash",
            "seed": 0,
            "repeat": 1,
            "train_dtype": "float32",
        }
    )
    db.close()
    store = Store(path)
    (row,) = store.runs()
    assert store.version == schema.SCHEMA_VERSION
    plain = {k: v for k, v in settings.items() if k != "techniques"}
    assert row["conditions_key"] == conditions_key("tinycnn", plain, epoch=LEGACY_KEY_EPOCH) != run.conditions_key()
    assert (
        row["settings_key"]
        == run_key("tinycnn", "prune", 1, plain, settings["techniques"], epoch=LEGACY_KEY_EPOCH)
        != run.settings_key()
    )
    assert row["seed"] == 1 and row["compute_dtype"] == "float32"
    schema._migrate_2(store.db)  # again: nothing moves
    assert store.runs()[0]["seed"] == 1 and store.runs()[0]["settings_key"] == row["settings_key"]


def test_one_grid_runs_a_shared_baseline_once(tmp_path):
    """Two experiments with the same model and settings share their baseline: it runs once per grid."""
    runs = grid(name="first") + grid(name="second")
    store = Store(tmp_path / "runs.db")
    executed = []

    def execute(run):
        executed.append(run)
        store_completed(store, [run])
        from greenlab.core.run.run_events import RunStored

        return RunStored(len(executed), run, "completed", None, store.runs()[-1])

    supervisor = LocalDriver(store)
    supervisor.supervisor.execute = execute
    supervisor.supervisor.launcher.start = lambda env=None: None  # nothing to launch: execution is recorded only
    supervisor.supervisor.warm_up = lambda: None
    supervisor.run_grid(runs)
    assert len(executed) == len(runs) // 2  # every key once, whichever experiment named it first
