"""End to end, as a user runs it: `greenlab --headless FILE`, then read data/runs.db."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def grid_db(tmp_path_factory):
    """One headless grid shared by the tests below: a good run, and a run that must fail in isolation."""
    folder = tmp_path_factory.mktemp("headless")
    toml = folder / "experiments.toml"
    toml.write_text("""
[defaults]
dataset = "digits"
epochs = 2
batch_size = 32
optimizer = "adam"
lr = 0.01
pretrained = false
device = "cpu"
idle_s = 0.5
max_train_batches = 4
max_eval_batches = 3
sample_hz = 20

[[experiment]]
name = "quick"
models = ["tinycnn", "inception_v3"]   # inception_v3 cannot take 32 px: that run fails, the grid goes on
image_size = 32
""")
    db = folder / "runs.db"
    result = run_cli("--headless", str(toml), "--db", str(db))
    return toml, db, result


def _rows(db, sql):
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


def test_grid_runs_and_reports(grid_db):
    _, _, result = grid_db
    assert result.returncode == 1, result.stdout + result.stderr  # one run failed
    assert "tinycnn" in result.stdout and "baseline" in result.stdout
    assert "FAILED" in result.stdout and "75 px" in result.stdout
    assert "energy: cpu estimate, dram estimate" in result.stdout and "no RAPL" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_completed_run_row(grid_db):
    _, db, _ = grid_db
    (run,) = _rows(db, "select * from runs where model = 'tinycnn'")
    assert run["status"] == "completed" and run["error"] is None
    assert run["params_total"] > 20_000
    assert 0.9 * run["params_total"] < run["params_nonzero"] <= run["params_total"]  # BN biases start at 0
    assert run["model_bytes"] == 4 * run["params_total"]
    assert 0 <= run["val_accuracy"] <= 1 and 0 <= run["val_f1"] <= 1
    assert run["energy_j"] > 0 and abs(run["energy_kwh"] * 3.6e6 - run["energy_j"]) < 1e-6
    # nothing is measured on a machine without RAPL/NVML, and the row says so
    assert run["energy_cpu_method"] == "estimate" and run["energy_estimated_j"] == pytest.approx(run["energy_j"])
    assert run["energy_measured_j"] == 0
    assert run["co2e_g"] == pytest.approx(run["energy_kwh"] * 475.0)
    assert run["finished_at"] >= run["started_at"] and run["duration_s"] > 0
    assert json.loads(run["settings"])["epochs"] == 2  # the raw column: JSON text
    assert run["sampler_cpu_s"] is not None
    assert 0 < run["energy_training_j"] < run["energy_j"]
    components = _rows(db, f"select * from energy_components where run_id = {run['id']}")
    assert {c["component"]: c["method"] for c in components} == {"cpu": "estimate", "dram": "estimate"}
    cpu = next(c for c in components if c["component"] == "cpu")
    assert json.loads(cpu["inputs"])["cpu_seconds"] > 0  # the raw column: JSON text


def test_epochs_and_samples_stored(grid_db):
    _, db, _ = grid_db
    (run,) = _rows(db, "select id from runs where model = 'tinycnn'")
    epochs = _rows(db, f"select * from epochs where run_id = {run['id']} order by epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(e["energy_j"] > 0 and e["train_energy_j"] > 0 for e in epochs)
    samples = _rows(db, f"select * from samples where run_id = {run['id']}")
    (duration,) = [r["duration_s"] for r in _rows(db, f"select duration_s from runs where id = {run['id']}")]
    # Sampled at 20 Hz for the whole run; the CPU estimate's watts appear once a second of readings exists.
    assert len(samples) >= int(duration * 20) - 1
    assert {s["component"] for s in samples} <= {"cpu", "dram"} and "dram" in {s["component"] for s in samples}
    assert all(s["t_s"] >= 0 for s in samples)


def test_failing_run_is_isolated_and_stored(grid_db):
    _, db, _ = grid_db
    (failed,) = _rows(db, "select * from runs where model = 'inception_v3'")
    assert failed["status"] == "failed" and "75 px" in failed["error"]
    assert failed["finished_at"] is not None


def test_rerun_skips_completed_and_force_reruns(grid_db):
    toml, db, _ = grid_db
    again = run_cli("--headless", str(toml), "--db", str(db))
    assert "skipped" in again.stdout
    assert len(_rows(db, "select id from runs where model = 'tinycnn'")) == 1
    assert "tinycnn" in again.stdout  # the summary still shows the skipped run's numbers


def test_a_forced_rerun_supersedes_the_run_it_repeats(grid_db, tmp_path):
    """Both stay stored, but only the rerun counts: `status = 'completed'` sees each run key once."""
    import shutil

    toml, db, _ = grid_db
    copy = tmp_path / "runs.db"
    shutil.copy(db, copy)
    (before,) = _rows(copy, "select id from runs where model = 'tinycnn'")
    forced = run_cli("--headless", str(toml), "--db", str(copy), "--force")
    assert forced.returncode == 1  # inception_v3 fails again, by design
    rows = _rows(copy, "select id, status, superseded_by from runs where model = 'tinycnn' order by id")
    assert [r["status"] for r in rows] == ["superseded", "completed"]
    assert rows[0]["id"] == before["id"] and rows[0]["superseded_by"] == rows[1]["id"]


def test_energy_to_target_is_written_at_the_end_of_the_grid(grid_db):
    _, db, _ = grid_db
    (run,) = _rows(db, "select * from runs where model = 'tinycnn'")
    # a baseline is compared with itself: its target is its own final accuracy minus 1 pp, always reached
    assert run["target_accuracy"] == pytest.approx(run["val_accuracy"] - 0.01)
    assert 0 < run["energy_to_target_j"] <= run["energy_training_j"] + 1e-6
