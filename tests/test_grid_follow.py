"""A grid you can follow: its place ("run 2 of 3"), its ETA, its phase between runs (the idle baseline is one),
its closing counts; a queue that folds runs already stored and follows the run in progress; a cancel
question and a second ctrl+r that count only what will really run."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from greenlab.core.grid.forecast import Forecast
from greenlab.core.grid.grid_events import RunQueued, RunSkipped
from greenlab.core.grid.presenter import GridPresenter, grid_eta
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.run.run_events import IdleMeasured, RunBegan, RunStored
from greenlab.tui import messages
from greenlab.tui.dialogs import CancelChoice
from greenlab.tui.live import queue_rows
from greenlab.tui.setup import SetupPane
from tests.conftest import sync
from tests.test_progress import Tracker
from tests.test_tui_usability import app_for, screen_text

GRID = expand_grid(
    parse_experiments(
        '[defaults]\npretrained = false\nrepeats = 2\norder = "as-written"\nidle_s = 3\n'
        '[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\n'
        'techniques = ["baseline", "prune"]\n'
    )
)


def test_the_grid_has_a_place_a_phase_an_eta_and_closing_counts():
    clock = [100.0]
    presenter = GridPresenter(clock=lambda: clock[0])
    presenter.add_grid(1, GRID, skip=[0], forecast=forecast_of(3, 30.0, 20.0))  # run 0 already stored: 3 run
    snapshot = presenter.start_grid(1)
    (grid,) = snapshot.grids
    assert (grid.total, grid.skipped, grid.to_run) == (4, 1, 3) and snapshot.waiting() == 3
    assert snapshot.active_grid == grid and "warming up" in grid.phase
    # before any run ends: the forecast (without per-run figures: its mean for each of the 3 runs)
    assert grid_eta(grid, snapshot.remaining(1, current_running=False), None) == pytest.approx(30.0)
    snapshot = presenter.apply(RunQueued(1, 4, GRID[1]), grid=1)
    assert snapshot.active_grid.phase == "measuring the idle baseline (3 s)"  # a phase, not "no run"
    assert snapshot.position(1) == 1 and snapshot.waiting() == 2
    snapshot = presenter.apply(IdleMeasured({"cpu": 3.0}, 3.0), grid=1)
    assert snapshot.active_grid.phase == "starting the run"
    presenter.apply(RunBegan(7, GRID[1], Tracker(), {}), grid=1)
    clock[0] = 112.0
    snapshot = presenter.apply(RunStored(7, GRID[1], "completed", None, {"energy_j": 5.0}), grid=1)
    grid = snapshot.active_grid
    assert grid.run_seconds == (12.0,) and grid.phase == "between runs"
    presenter.apply(RunQueued(2, 4, GRID[2]), grid=1)
    snapshot = presenter.apply(RunBegan(8, GRID[2], Tracker(), {}), grid=1)
    remaining = snapshot.remaining(1, current_running=True)
    assert [e.index for e in remaining] == [3]  # 0 was stored before, 1 is stored, 2 is in progress
    # the run in progress, then one more at the 12 s the grid's runs took so far
    assert grid_eta(grid, remaining, 4.0) == pytest.approx(4.0 + 12.0)
    presenter.apply(RunSkipped(0, GRID[0], "already completed"), grid=1)  # foreseen: not counted twice
    presenter.apply(RunStored(8, GRID[2], "failed", "boom", {}), grid=1)
    snapshot = presenter.end_grid(1, cancelled=False)
    assert snapshot.active_grid is None and snapshot.grids[0].skipped == 1
    assert snapshot.grids[0].message() == (
        "grid 1 finished: 1 completed, 1 failed, 0 interrupted, 1 skipped (already stored), 1 not run"
    )
    assert snapshot.log[-1].text == snapshot.grids[0].message()  # a grid cut short is no forecast's test


def forecast_of(runs: int, seconds: float, joules: float) -> Forecast:
    return Forecast(runs, 0, seconds, joules, None, None, "", {"calibrated": runs})


def test_a_grid_that_ran_all_its_runs_closes_with_how_far_the_forecast_was_off():
    """The TUI's closing message, like headless's last line, sets the grid's time (start to end) and its
    stored runs' energy against the forecast it was queued with."""
    clock = [100.0]
    presenter = GridPresenter(clock=lambda: clock[0])
    presenter.add_grid(1, GRID[:2], forecast=forecast_of(2, 30.0, 20.0))
    presenter.start_grid(1)
    for index, (run_id, joules) in enumerate([(7, 4.0), (8, 6.0)]):
        presenter.apply(RunQueued(index, 2, GRID[index]), grid=1)
        presenter.apply(RunBegan(run_id, GRID[index], Tracker(), {}), grid=1)
        clock[0] += 12.0
        presenter.apply(RunStored(run_id, GRID[index], "completed", None, {"energy_j": joules}), grid=1)
    (grid,) = presenter.end_grid(1, cancelled=False).grids
    assert grid.message() == (
        "grid 1 finished: 2 completed, 0 failed, 0 interrupted, 0 skipped (already stored); forecast against the "
        "grid: took 24 s against about 30 s forecast (-20 %); used 10 J against about 20 J (-50 %)"
    )
    unforecast = GridPresenter(clock=lambda: clock[0])
    unforecast.add_grid(1, GRID[:1])
    unforecast.start_grid(1)
    (grid,) = unforecast.end_grid(1, cancelled=False).grids
    assert "forecast" not in grid.message()


MIXED = expand_grid(
    parse_experiments(
        '[defaults]\npretrained = false\nrepeats = 2\norder = "as-written"\nidle_s = 0\n'
        '[[experiment]]\nname = "e"\nmodels = ["tinycnn", "resnet18"]\ntechniques = ["baseline"]\n'
    )
)


def test_the_grid_eta_adds_each_runs_own_forecast_at_its_models_pace():
    """resnet18's runs take ten times tinycnn's: the ETA counts each remaining run at its own forecast,
    corrected by how its model's runs kept to theirs so far (else by the grid's pace)."""
    own = {run.settings_key(): (10.0 if run.model == "tinycnn" else 100.0) for run in MIXED}
    forecast = Forecast(4, 0, 220.0, None, None, None, "", {"calibrated": 4}, seconds_by_key=own)
    clock = [0.0]
    presenter = GridPresenter(clock=lambda: clock[0])
    presenter.add_grid(1, MIXED, forecast=forecast)
    presenter.start_grid(1)
    assert sorted(run.model for run in MIXED) == ["resnet18", "resnet18", "tinycnn", "tinycnn"]
    first_tiny = next(i for i, run in enumerate(MIXED) if run.model == "tinycnn")
    snapshot = presenter.apply(RunQueued(first_tiny, 4, MIXED[first_tiny]), grid=1)
    (grid,) = snapshot.grids
    assert grid_eta(grid, snapshot.remaining(1, current_running=False), None) == pytest.approx(220.0)
    presenter.apply(RunBegan(1, MIXED[first_tiny], Tracker(), {}), grid=1)
    clock[0] = 20.0  # tinycnn ran at twice its forecast
    snapshot = presenter.apply(RunStored(1, MIXED[first_tiny], "completed", None, {"energy_j": 1.0}), grid=1)
    grid = snapshot.active_grid
    # one tinycnn at 10 s x 2, two resnet18 at 100 s x the grid's pace so far (2)
    assert grid_eta(grid, snapshot.remaining(1, current_running=False), None) == pytest.approx(20 + 400)
    first_resnet = next(i for i, run in enumerate(MIXED) if run.model == "resnet18")
    presenter.apply(RunQueued(first_resnet, 4, MIXED[first_resnet]), grid=1)
    presenter.apply(RunBegan(2, MIXED[first_resnet], Tracker(), {}), grid=1)
    clock[0] = 120.0  # resnet18 kept to its forecast
    snapshot = presenter.apply(RunStored(2, MIXED[first_resnet], "completed", None, {"energy_j": 1.0}), grid=1)
    assert grid_eta(snapshot.active_grid, snapshot.remaining(1, current_running=False), None) == pytest.approx(20 + 100)


def test_time_spent_waiting_for_another_grid_is_no_part_of_the_grid_or_its_forecast():
    from greenlab.core.grid.grid_events import HostTaken
    from greenlab.core.measure.host_lock import WaitingForLock

    clock = [100.0]
    presenter = GridPresenter(clock=lambda: clock[0])
    presenter.add_grid(1, GRID[:1], forecast=forecast_of(1, 3.0, 20.0))
    presenter.start_grid(1)
    presenter.apply(WaitingForLock(None, "/tmp/measure.lock"), grid=1)
    clock[0] += 21 * 60
    snapshot = presenter.apply(HostTaken(21 * 60.0), grid=1)
    assert snapshot.active_grid.waited_s == 21 * 60.0
    presenter.apply(RunQueued(0, 1, GRID[0]), grid=1)
    presenter.apply(RunBegan(7, GRID[0], Tracker(), {}), grid=1)
    clock[0] += 2.0
    presenter.apply(RunStored(7, GRID[0], "completed", None, {"energy_j": 18.0}), grid=1)
    (grid,) = presenter.end_grid(1, cancelled=False).grids
    assert grid.message().endswith(
        "forecast against the grid: waited 21 min for the host; ran 2 s against about 3 s forecast (-33 %); "
        "used 18 J against about 20 J (-10 %)"
    )


def test_a_waiting_grid_tells_the_presenter_how_long_it_waited(tmp_path):
    import threading

    from greenlab.core.grid.driver import take_host
    from greenlab.core.grid.grid_events import HostTaken
    from greenlab.core.measure.host_lock import HostLock, WaitingForLock

    other = HostLock(tmp_path / "other.db")
    assert other.try_acquire()
    threading.Timer(0.6, other.release).start()
    heard: list[object] = []
    lock = HostLock(tmp_path / "runs.db")
    assert take_host(lock, wait=True, on_event=heard.append, stop=threading.Event())
    lock.release()
    assert isinstance(heard[0], WaitingForLock) and isinstance(heard[-1], HostTaken)
    assert heard[-1].waited_s >= 0.5
    heard.clear()
    assert take_host(lock, wait=True, on_event=heard.append, stop=threading.Event())  # no wait: nothing told
    lock.release()
    assert heard == []


def test_runs_already_stored_fold_into_one_line_per_grid():
    presenter = GridPresenter()
    presenter.add_grid(1, GRID, skip=[0, 1, 2])
    snapshot = presenter.add_grid(2, GRID, skip=[3])
    assert [(label, status) for _key, label, status in queue_rows(snapshot)] == [
        ("3 already stored", "skipped"),
        ("tinycnn · prune #2", "waiting"),
        ("tinycnn · baseline #1", "waiting"),
        ("tinycnn · prune #1", "waiting"),
        ("tinycnn · baseline #2", "waiting"),
        ("1 already stored", "skipped"),
    ]


@sync
async def test_the_live_pane_follows_the_grid_and_its_queue_the_running_row(tmp_path):
    app = app_for(tmp_path)
    long_grid = GRID * 6  # more rows than the queue shows
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        app.live.snapshot = app.presenter.add_grid(5, long_grid, skip=[0, 1])
        app.live.snapshot = app.presenter.start_grid(5)

        def post(event) -> None:
            app.post_message(messages.GridChanged(app.presenter.apply(event, grid=5)))

        post(RunQueued(20, len(long_grid), long_grid[20]))
        await pilot.pause()
        app.live.redraw()
        grid_line, title = (str(app.query_one(selector).render()) for selector in ("#grid-line", "#run-title"))
        assert grid_line.startswith("Grid 5: run 1 of 22 (2 already stored) · grid: ")
        assert title == "Measuring the idle baseline (3 s)"  # a phase of the grid, not "No run in progress"
        assert "No run in progress" not in screen_text(app)
        queue = app.query_one("#queue", DataTable)
        assert queue.cursor_row == queue.get_row_index("g5-20")  # the cursor followed the run, far down
        assert str(queue.get_row_at(0)[0]) == "2 already stored"
        await pilot.press("up", "up")  # and the keyboard still scrolls it
        assert queue.cursor_row == queue.get_row_index("g5-20") - 2


@sync
async def test_the_cancel_question_and_a_second_grid_count_only_what_will_run(tmp_path):
    app = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app._grid_active = True  # a grid runs: requests queue after it (nothing is launched here)
        app.post_message(SetupPane.GridRequested(GRID, False, "the setup form"))
        await pilot.pause()
        app.post_message(SetupPane.GridRequested(GRID, False, "the setup form"))  # the same runs again
        await pilot.pause()
        second = app._notifications.last if hasattr(app._notifications, "last") else list(app._notifications)[-1]
        assert "nothing new from the setup form: 4 already queued in an earlier grid" in second.message
        assert [label for _key, label, _status in queue_rows(app.presenter.snapshot())][-1] == (
            "4 queued in an earlier grid"
        )
        app._token = None
        app.action_cancel_run()
        await pilot.pause()
        assert isinstance(app.screen, CancelChoice)
        assert "and the 4 runs queued after it" in app.screen.question  # not 8: the second grid skips all
