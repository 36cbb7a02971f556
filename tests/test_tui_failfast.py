"""The TUI's side of issue 10: a grid refused by preflight is notified and never started, and a grid
waiting for the host's measurement lock says so in the live pane and can be cancelled while it waits."""

from __future__ import annotations

import os

from textual.widgets import Static

from greenlab.core.measure import host_lock
from greenlab.core.store.database import Store
from greenlab.tui.app import GreenLabApp
from tests.conftest import sync
from tests.test_tui_app import QUICK, _file, _wait


@sync
async def test_a_grid_preflight_refuses_is_notified_and_not_started(tmp_path):
    experiments = _file(
        tmp_path, QUICK.replace('techniques = ["baseline"]', 'techniques = ["baseline"]\nimage_size = 100000')
    )
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=experiments)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+o")  # loads the file named in Setup: this one
        await _wait(
            pilot,
            lambda: any(n.title == "Grid not started" for n in app._notifications),
            20,
            "the preflight notification",
        )
        await _wait(pilot, lambda: not app.running, 10, "the grid to end")
        (note,) = [n for n in app._notifications if n.title == "Grid not started"]
        assert "experiment 'pilot'.image_size: image_size 100000 px is beyond" in note.message
        assert str(app.query_one("#queue").get_row_at(0)[1]) == "not run"
        told = str(app.query_one("#setup-status", Static).render())  # the forecast replaces "forecasting"
        assert "forecasting" not in told and f"{experiments}: 1 run · about " in told
    assert Store(tmp_path / "runs.db").runs() == []


@sync
async def test_waiting_for_the_lock_shows_in_the_live_pane_and_cancels(tmp_path):
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=_file(tmp_path, QUICK))
    with host_lock.HostLock("the-other-grid.db"):
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+r")
            await _wait(pilot, lambda: "waiting for another grid" in app.live.note, 30, "the waiting note")
            assert f"pid {os.getpid()}" in app.live.note and "the-other-grid.db" in app.live.note
            await pilot.press("x", "a")  # stop the whole queue
            await _wait(pilot, lambda: not app.running, 20, "the cancel while waiting")
            assert str(app.query_one("#queue").get_row_at(0)[1]) == "not run"
    assert Store(tmp_path / "runs.db").runs() == []
