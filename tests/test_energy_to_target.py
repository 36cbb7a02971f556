"""Energy to accuracy: the cumulative epoch energy until the target accuracy is first reached."""

from __future__ import annotations

import json
import sqlite3

import pytest

from greenlab.core.report import energy_to_target as e2t
from greenlab.core.store import schema
from greenlab.core.store.database import Store
from greenlab.core.store.rows import EpochRow, RunRow


def epoch(n, acc, energy=None, train=None, evaluate=None):
    return EpochRow(0, n, val_accuracy=acc, energy_j=energy, train_energy_j=train, eval_energy_j=evaluate)


def test_energy_until_the_target_is_first_reached():
    epochs = [epoch(3, 0.95, 30.0), epoch(1, 0.70, 10.0), epoch(2, 0.89, 20.0)]  # order of storage is not order
    assert e2t.energy_to_target(epochs, 0.89) == pytest.approx(30.0)
    assert e2t.energy_to_target(epochs, 0.50) == pytest.approx(10.0)
    assert e2t.energy_to_target(epochs, 0.90) == pytest.approx(60.0)


def test_never_reached_is_none():
    assert e2t.energy_to_target([epoch(1, 0.5, 10.0), epoch(2, 0.6, 10.0)], 0.9) is None
    assert e2t.energy_to_target([], 0.1) is None


def test_phase_windows_stand_in_for_the_epoch_energy_and_unknown_energy_is_none():
    assert e2t.energy_to_target([epoch(1, 0.5, train=8.0, evaluate=2.0), epoch(2, 0.9, 5.0)], 0.9) == 15.0
    assert e2t.energy_to_target([epoch(1, 0.5, train=8.0), epoch(2, 0.9, 5.0)], 0.9) is None
    # an unknown epoch after the target was reached does not matter
    assert e2t.energy_to_target([epoch(1, 0.95, 5.0), epoch(2, 0.9)], 0.9) == 5.0


def _run(store, technique, accuracy, epochs, *, epochs_setting=2, status="completed"):
    run_id = store.start_run(
        {
            "experiment": "e",
            "model": "tinycnn",
            "dataset": "digits",
            "technique": technique,
            "settings": {"epochs": epochs_setting, "techniques": {}},
        }
    )
    for number, (acc, energy) in enumerate(epochs, start=1):
        store.add_epoch({"run_id": run_id, "epoch": number, "val_accuracy": acc, "energy_j": energy})
    store.update_run(run_id, status=status, val_accuracy=accuracy)
    return run_id


def test_update_writes_target_and_energy_for_runs_with_baselines(tmp_path):
    store = Store(tmp_path / "runs.db")
    b1 = _run(store, "baseline", 0.90, [(0.80, 10.0), (0.90, 10.0)])
    b2 = _run(store, "baseline", 0.92, [(0.85, 10.0), (0.92, 10.0)])
    fast = _run(store, "stego", 0.91, [(0.905, 7.0), (0.91, 7.0)])
    never = _run(store, "prune", 0.60, [(0.5, 10.0), (0.6, 10.0)])
    alone = _run(store, "prune", 0.90, [(0.9, 1.0)], epochs_setting=5)  # no baseline of its conditions
    failed = _run(store, "lowrank", 0.95, [(0.95, 1.0)], status="failed")
    from greenlab.core.grid.session import with_targets

    assert with_targets(store) == 4
    target = (0.90 + 0.92) / 2 - 0.01
    rows = {r["id"]: r for r in store.runs()}
    assert rows[fast]["target_accuracy"] == pytest.approx(target)
    assert rows[fast]["energy_to_target_j"] == pytest.approx(7.0)
    assert rows[b1]["energy_to_target_j"] == pytest.approx(20.0) and rows[b2]["energy_to_target_j"] == 20.0
    assert rows[never]["target_accuracy"] == pytest.approx(target) and rows[never]["energy_to_target_j"] is None
    assert rows[alone]["target_accuracy"] is None and rows[failed]["target_accuracy"] is None


def test_rows_of_an_older_store_are_filled_in_memory():
    rows = [
        RunRow.of(
            id=run_id,
            status="completed",
            technique=technique,
            model="m",
            dataset="d",
            settings=json.dumps({"epochs": 1}),
            val_accuracy=0.9,
        )
        for run_id, technique in ((1, "baseline"), (2, "prune"))
    ]
    epochs = {1: [epoch(1, 0.9, 10.0)], 2: [epoch(1, 0.89, 4.0)]}
    filled = e2t.with_energy_to_target(rows, epochs.__getitem__)
    assert [r.energy_to_target_j for r in filled] == [10.0, 4.0]
    assert rows[0].energy_to_target_j is None  # the input is not modified


def test_migration_adds_the_columns_to_a_version_1_store_once(tmp_path):
    path = tmp_path / "old.db"
    import sqlite_utils

    db = sqlite_utils.Database(path)
    schema.MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    db["runs"].insert({"model": "m", "technique": "baseline", "status": "completed"})
    db.close()
    store = Store(path)
    assert {"target_accuracy", "energy_to_target_j"} <= {c.name for c in store.db["runs"].columns}
    assert store.version == schema.SCHEMA_VERSION
    schema._migrate_2(store.db)  # idempotent
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("select count(*) from runs").fetchone() == (1,)
