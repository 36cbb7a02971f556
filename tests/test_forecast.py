"""Before a grid: a forecast of its time and energy, from earlier runs where the store has them, else from a
short calibration, each part saying where it came from; after it, how far it was off."""

from __future__ import annotations

import os
from dataclasses import asdict, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlab.core.grid import forecast as fc
from greenlab.core.plan.config import build_experiments, expand_grid, parse_experiments
from greenlab.core.store.rows import RunRow
from tests.conftest import run_cli, sync


def grid(**defaults):
    data = {
        "defaults": {
            "dataset": "digits",
            "epochs": 2,
            "batch_size": 64,
            "device": "cpu",
            "idle_s": 3,
            "max_train_batches": 10,
            "repeats": 2,
            **defaults,
        },
        "experiment": [{"name": "f", "models": ["tinycnn"], "techniques": ["baseline", "prune"]}],
    }
    return expand_grid(build_experiments(data, source="test"))


def stored(run, run_id, seconds, joules, train_s=None, train_j=None):
    return RunRow.of(
        id=run_id,
        model=run.model,
        technique=run.technique,
        status="completed",
        settings_key=run.settings_key(),
        conditions_key=run.conditions_key(),
        settings={**asdict(run.settings), "techniques": run.technique_settings},
        dataset=run.settings.dataset,
        duration_s=seconds,
        energy_j=joules,
        train_s=train_s,
        energy_training_j=train_j,
    )


def no_calibration(specs):
    raise AssertionError(f"calibrated {specs} though earlier runs cover them")


def test_earlier_runs_of_the_same_work_give_the_forecast_and_say_so():
    runs = grid()
    earlier = [stored(run, i + 1, 10.0 + i, 100.0) for i, run in enumerate(runs)]
    result = fc.forecast(runs, earlier, force=True, calibrate=no_calibration)
    # each run's mean over its earlier runs (the same run key counted once per stored row), plus one idle
    # baseline and the grid's start-up (the fork server and the warm-up run)
    assert result.runs == 4 and result.sources == {fc.HISTORY: 4}
    assert result.seconds == pytest.approx(10 + 11 + 12 + 13 + 3 + fc.GRID_STARTUP_S)
    assert result.joules == pytest.approx(400.0)
    assert result.describe().startswith("4 runs · about 54 s · about 0.4 kJ, ")
    assert result.describe().endswith("(from 4 earlier runs)")
    assert result.co2e_g == pytest.approx(400 / 3.6e6 * runs[0].settings.carbon_g_per_kwh * runs[0].settings.pue)


def test_runs_already_stored_are_not_forecast():
    runs = grid()
    earlier = [stored(run, i + 1, 10.0, 100.0) for i, run in enumerate(runs)]
    result = fc.forecast(runs, earlier, stored_keys=[r.settings_key() for r in runs[:3]], calibrate=no_calibration)
    assert (result.runs, result.skipped) == (1, 3)
    assert result.describe().startswith("1 run (3 already stored) · about 18 s")
    assert fc.forecast(runs, earlier, stored_keys=[r.settings_key() for r in runs]).describe() == (
        "nothing to run: 4 already stored"
    )


def test_other_epochs_and_batches_are_scaled_by_the_work_the_rest_kept():
    before = grid(epochs=1, max_train_batches=5)
    earlier = [stored(run, i + 1, 10.0, 100.0, train_s=8.0, train_j=80.0) for i, run in enumerate(before)]
    runs = grid(epochs=2, max_train_batches=10)  # four times the batches: the training part × 4, start-up kept
    result = fc.forecast(runs, earlier, force=True, calibrate=no_calibration)
    assert result.sources == {fc.SCALED: 4}
    assert result.seconds == pytest.approx(4 * (2 + 4 * 8) + 3 + fc.GRID_STARTUP_S)
    assert result.joules == pytest.approx(4 * (20 + 4 * 80))
    assert "from 4 earlier runs (scaled by epochs and batches)" in result.describe()


def test_without_earlier_runs_a_calibration_gives_the_forecast():
    asked = []

    def calibrate(specs):
        asked.extend(specs)
        return {spec: {"flops_per_sample": 1e6, "flop_per_s": 1e9} for spec in specs}

    runs = grid()
    result = fc.forecast(runs, [], force=True, calibrate=calibrate)
    assert asked == [("tinycnn", 32, "cpu", 64, "sgd")]  # once per model, input, device, batch and optimizer
    assert result.sources == {fc.CALIBRATED: 4}
    # 1 ms a sample: 2 epochs × 10 batches × 64 trained, 2 × 6 × 64 (all 359 validation examples) evaluated
    # at a third of the work, + start-up
    per_run = fc.STARTUP_S + 1e-3 * (2 * 10 * 64 + 2 * 6 * 64 / 3)
    assert result.seconds == pytest.approx(4 * per_run + 3 + fc.GRID_STARTUP_S)
    assert "(calibrated at the power of the CPU estimate)" in result.describe()


def test_a_calibration_gives_the_grids_start_up_the_cores_its_energy_is_priced_at_and_a_scans_work():
    """The grid's start-up is the calibration child's own (torch imported, model built) plus the warm-up
    run; the CPU estimate's watts count the cores the steps kept busy; stego with bits = "auto" evaluates
    the model once per bit count before it trains."""
    calibration = {"flops_per_sample": 1e6, "flop_per_s": 1e9, "startup_s": 4.0, "cores": 0.5}
    runs = grid()
    result = fc.forecast(runs, [], force=True, calibrate=lambda specs: dict.fromkeys(specs, calibration))
    per_run = fc.STARTUP_S + 1e-3 * (2 * 10 * 64 + 2 * 6 * 64 / 3)
    assert result.seconds == pytest.approx(4 * per_run + 3 + 4.0 + fc.WARMUP_S)
    cpus = os.cpu_count() or 1
    watts, _from = fc._watts([])  # conftest's fixed 40 W for the whole machine
    assert result.joules == pytest.approx(4 * per_run * watts * min(0.5, cpus) / cpus)
    scanning = expand_grid(
        parse_experiments(
            '[defaults]\npretrained = false\ndevice = "cpu"\nepochs = 2\nmax_train_batches = 10\nidle_s = 0\n'
            '[[experiment]]\nname = "s"\nmodels = ["tinycnn"]\ntechniques = ["stego"]\n'
            '[experiment.stego]\nbits = "auto"\n'
        )
    )
    scanned = fc.forecast(scanning, [], force=True, calibrate=lambda specs: dict.fromkeys(specs, calibration))
    plain = fc.forecast(
        [
            replace(run, technique_settings={"stego": {**run.technique_settings["stego"], "bits": 16}})
            for run in scanning
        ],
        [],
        force=True,
        calibrate=lambda specs: dict.fromkeys(specs, calibration),
    )
    assert scanned.seconds - plain.seconds == pytest.approx(1e-3 * 24 * 6 * 64 / 3)


def test_an_unknown_forecast_says_why():
    result = fc.forecast(
        grid(),
        [],
        force=True,
        calibrate=lambda specs: {s: {"error": "not calibrated now: a grid is running"} for s in specs},
    )
    assert result.describe().endswith("(4 unknown: not calibrated now: a grid is running)")


def test_a_calibration_that_fails_leaves_the_run_unknown_and_says_why():
    result = fc.forecast(grid(), [], force=True, calibrate=lambda specs: {s: {"error": "no torch"} for s in specs})
    assert result.seconds is None and result.sources == {fc.UNKNOWN: 4} and result.notes == ("no torch",)
    assert "time unknown" in result.describe()


@settings(max_examples=200, deadline=None)
@given(
    fast=st.floats(1e-5, 1.0),
    slowdowns=st.lists(st.floats(1.0, 300.0), min_size=2, max_size=19),
    batch_size=st.integers(1, 512),
)
def test_a_probe_step_slowed_by_another_process_does_not_shrink_the_timed_batch(fast, slowdowns, batch_size):
    """The calibration's timed batch is the run's own unless the probe's fastest step says it would take
    longer than MAX_STEP_S: any number of steps made slower (a torch thread descheduled) give the batch the
    undisturbed probe gives."""
    from greenlab.core.train.calibration import MAX_STEP_S, PROBE_BATCH, timed_batch

    undisturbed = timed_batch([fast] * 3, batch_size)
    assert timed_batch([fast * s for s in slowdowns] + [fast], batch_size) == undisturbed
    assert PROBE_BATCH <= undisturbed <= max(PROBE_BATCH, batch_size)
    step_s = fast / PROBE_BATCH * batch_size  # a step of the run's own batch, as the probe foresees it
    if step_s <= MAX_STEP_S:
        assert undisturbed == max(PROBE_BATCH, batch_size)  # the run's own batch is timed
    elif undisturbed > PROBE_BATCH:  # cut down to what fits in a step of MAX_STEP_S
        assert undisturbed * fast / PROBE_BATCH <= MAX_STEP_S * 1.000001 < (undisturbed + 1) * fast / PROBE_BATCH


def test_a_grid_longer_than_a_day_is_too_long_and_the_actual_is_compared():
    runs = grid(epochs=3000, max_train_batches=None)
    earlier = [stored(run, i + 1, 10.0, 100.0, train_s=9.0, train_j=90.0) for i, run in enumerate(grid())]
    result = fc.forecast(runs, earlier, force=True, calibrate=no_calibration)
    assert result.seconds > fc.CONFIRM_ABOVE_S and result.too_long
    assert "longer than 1 day 0 h" in fc.too_long_text(result)
    short = fc.forecast(grid(), earlier, force=True)
    assert not short.too_long
    assert short.against(33.0, [100.0, None, 200.0]) == (
        "took 33 s against about 48 s forecast (-31 %); used 0.3 kJ against about 0.4 kJ (-25 %)"
    )


def test_durations_and_energies_read_as_forecasts():
    assert [fc.about_duration(s) for s in (40, 90, 900, 7500, 3 * 86400 + 7200)] == [
        "40 s",
        "1 min 30 s",
        "15 min",
        "2 h 5 min",
        "3 days 2 h",
    ]
    assert [fc.about_energy(j) for j in (45, 900, 12_345, 3.6e7)] == ["45 J", "0.9 kJ", "12 kJ", "10 kWh"]


def test_headless_prints_the_forecast_first_and_how_far_it_was_off_last(write_toml, tmp_path, monkeypatch):
    monkeypatch.delenv("GREENLAB_CALIBRATE")  # the real calibration child, as a user's grid runs it
    toml = write_toml("""
[[experiment]]
name = "forecast"
models = ["tinycnn"]
techniques = ["baseline"]
""")
    db = tmp_path / "runs.db"
    first = run_cli("--headless", str(toml), "--db", str(db))
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "forecast: 1 run · about " in out and "(calibrated at the power of the CPU estimate)" in out
    assert out.index("forecast: 1 run") < out.index("[1/1]")  # before the first run
    assert "forecast against the grid: took " in out and " forecast (" in out
    again = run_cli("--headless", str(toml), "--db", str(db), "--force")
    assert "forecast: 1 run · about " in again.stdout and "(from 1 earlier run)" in again.stdout


@sync
async def test_setup_shows_the_forecast_as_the_selection_changes_and_a_day_asks_first(tmp_path):
    from textual.widgets import Input

    from greenlab.tui.dialogs import ConfirmLongGrid
    from tests.test_tui_usability import app_for

    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()  # the forecast is made on a worker thread
        await pilot.pause()
        shown = str(app.query_one("#setup-forecast").render())
        assert shown.startswith("forecast: 1 run · about ") and shown.endswith(
            "(calibrated at the power of the CPU estimate)"
        )
        app.query_one("#f-repeats", Input).value = "3"
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert str(app.query_one("#setup-forecast").render()).startswith("forecast: 3 runs · about ")
        app.query_one("#f-epochs", Input).value = "200000"
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "longer than 1 day 0 h: ctrl+r asks first" in str(app.query_one("#setup-forecast").render())
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmLongGrid) and "Start it?" in app.screen.question
        await pilot.press("n")
        await pilot.pause()
        assert not app.running and app.presenter.snapshot().queue == ()
