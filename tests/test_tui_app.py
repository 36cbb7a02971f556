"""Pilot tests: the app driven by keys as a user would, two of them training tinycnn for real.

Real runs use tinycnn on digits, one short epoch, no idle baseline, into a tmp_path store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, SelectionList, Static, TabbedContent

from greenlab.core.grid.presenter import live
from greenlab.core.report import compare
from greenlab.core.store.database import Store
from greenlab.tui.app import GreenLabApp
from greenlab.tui.detail import DetailScreen
from greenlab.tui.dialogs import CancelChoice, ConfirmQuit
from tests.conftest import sync
from tests.tui_demo import seed_store

QUICK = """
[defaults]
dataset = "digits"
epochs = 2
batch_size = 32
device = "cpu"
pretrained = false
idle_s = 0
max_train_batches = 3
max_eval_batches = 1
sample_hz = 20

[[experiment]]
name = "pilot"
models = ["resnet18"]
techniques = ["baseline"]
"""


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "experiments.toml"
    path.write_text(text)
    return str(path)


async def _wait(pilot, condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.1)


async def _type(pilot, selector: str, text: str) -> None:
    """Focus an input, clear it and type, as a user would."""
    pilot.app.query_one(selector, Input).focus()
    await pilot.pause()
    await pilot.press("ctrl+a", "ctrl+k", *list(text))  # start of line, delete to the end, type


def runs_table_status(app: GreenLabApp) -> str:
    return str(app.query_one("#runs-table").get_row_at(0)[3])


def _status(app: GreenLabApp) -> Static:
    return app.query_one("#setup-status", Static)


@pytest.mark.slow
@sync
async def test_run_tinycnn_from_the_keyboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short paths to type
    experiments = _file(tmp_path, QUICK)
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=experiments)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        # pick tinycnn, drop resnet18 (the file's choice), one epoch
        models = app.query_one("#f-models", SelectionList)
        models.focus()
        await pilot.press("space", "down", "down", "space")
        assert models.selected == ["tinycnn"]
        await _type(pilot, "#f-epochs", "1")
        assert "1 runs: 1 model" in str(_status(app).render())
        await pilot.press("ctrl+r")
        assert app.query_one("#panes", TabbedContent).active == "live"

        seen = {"batch": 0, "watts": 0, "energy": 0.0}

        def observe() -> bool:
            current = app.live.current
            if current is not None:
                seen["batch"] = max(seen["batch"], current.batch)
                seen["energy"] = max(seen["energy"], live(current, app.live.clock()).energy_j or 0.0)
                sparks = app.live.query("Sparkline")
                seen["watts"] = max([seen["watts"], *(len(s.data or []) for s in sparks)])
            return current is not None and current.stored is not None

        await _wait(pilot, lambda: app.live.current is not None, 60, "the run to begin")
        # the UI answers keys while the child trains
        await pilot.press("3")
        assert app.query_one("#panes", TabbedContent).active == "runs"
        await pilot.press("2")
        await _wait(pilot, observe, 90, "the run to be stored")
        assert seen["batch"] >= 1 and seen["watts"] > 0 and seen["energy"] > 0
        assert "tinycnn" in str(app.query_one("#run-title", Static).render())

        # the stored run appears in the runs table, with its energy
        runs = app.runs_pane
        # read again on its thread once the run is stored: on a busy machine the rows come a moment later
        await _wait(pilot, lambda: bool(runs.shown), 30, "the stored run to be listed")
        assert [(r.run.model, r.run.status) for r in runs.shown] == [("tinycnn", "completed")]
        assert runs.shown[0].run.energy_j > 0
        queue = app.query_one("#queue")
        # three batches of a random-init tinycnn may stay at chance: the queue then says diverged, as the table
        shown = "diverged" if compare.diverged(runs.shown[0].run) else "completed"
        assert str(queue.get_row_at(0)[1]).startswith(f"{shown} ")
        assert runs_table_status(app) == shown

        # the same settings from the file: skipped, not trained again
        await _wait(pilot, lambda: not app.running, 10, "the grid to end")
        same = tmp_path / "same.toml"
        same.write_text(QUICK.replace("resnet18", "tinycnn").replace("epochs = 2", "epochs = 1"))
        told: list[str] = []
        notify = app.notify
        # toasts are short: under load one may be gone before the check, so keep what was said
        monkeypatch.setattr(
            app, "notify", lambda message, *a, **k: (told.append(str(message)), notify(message, *a, **k))[1]
        )
        await _type(pilot, "#f-file", same.name)
        await pilot.press("enter")
        await _wait(
            pilot,
            lambda: queue.row_count == 2 and not app.running and str(queue.get_row_at(1)[1]) == "skipped",
            20,
            "the file's grid to be skipped",
        )
        assert any(
            "nothing new from same.toml: 1 already stored (tick force rerun in Setup)" in message for message in told
        )  # not "Started 1 runs"
        assert str(queue.get_row_at(1)[0]) == "1 already stored"  # folded into one line
        await pilot.press("3")
        assert app.query_one("#runs-table").row_count == 1


def _long_tinycnn_app(tmp_path):
    """An app whose file offers a tinycnn run long enough to cancel or quit in the middle of."""
    long = QUICK.replace("epochs = 2", "epochs = 50").replace("max_train_batches = 3\n", "")
    return GreenLabApp(db=tmp_path / "runs.db", experiments=_file(tmp_path, long.replace("resnet18", "tinycnn")))


@pytest.mark.slow
@sync
async def test_cancel_stores_the_run_as_interrupted(tmp_path):
    app = _long_tinycnn_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        # Cancel while the child still starts up: the same path as mid-training, without waiting for torch.
        await _wait(pilot, lambda: app.live.current is not None, 30, "the run to begin")
        await pilot.pause(1.0)  # a second of samples to keep
        # a second request while one runs is queued behind it; its one run is the first grid's, so it will
        # be skipped, and the queue says so (folded: "1 queued in an earlier grid")
        await pilot.press("ctrl+r")
        queue = app.query_one("#queue")
        assert queue.row_count == 2 and str(queue.get_row_at(1)[0]) == "1 queued in an earlier grid"
        # quitting during a run asks first; "n" keeps it running
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmQuit) and app.running
        await pilot.press("x")  # asks: this run, the whole queue, or keep running
        assert isinstance(app.screen, CancelChoice)
        await pilot.press("a")
        await _wait(pilot, lambda: app.live.current.stored is not None, 30, "the cancelled run to be stored")
        await _wait(pilot, lambda: not app.running, 10, "the grid to end")
        assert app.runs_pane.shown[0].run.status == "interrupted"
        assert str(queue.get_row_at(0)[1]).startswith("interrupted")  # the same word everywhere
        assert str(queue.get_row_at(1)[1]) == "not run"  # cancel stops what was queued too, as the summary says
    store = Store(tmp_path / "runs.db")
    row = store.runs()[0]
    assert row["status"] == "interrupted" and row["error"] == "cancelled by the user"
    assert row["energy_j"] and store.samples(row["id"])  # the partial data is kept
    store.close()


@pytest.mark.slow
@sync
async def test_x_can_stop_only_the_current_run_and_the_queue_goes_on(tmp_path):
    long = QUICK.replace("epochs = 2", "epochs = 50").replace("max_train_batches = 3\n", "")
    app = GreenLabApp(
        db=tmp_path / "runs.db", experiments=_file(tmp_path, long.replace("resnet18", "tinycnn") + "repeats = 2\n")
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: app.live.current is not None, 30, "the first run to begin")
        first = app.live.current.run_id
        await pilot.press("x")
        await pilot.press("escape")  # keep running
        assert not isinstance(app.screen, CancelChoice) and app.running
        await pilot.press("x", "r")
        await _wait(
            pilot,
            lambda: app.live.current is not None and app.live.current.run_id != first,
            60,
            "the next run to begin after the first was stopped",
        )
        await pilot.press("x", "a")
        await _wait(pilot, lambda: not app.running, 30, "the grid to end")
    store = Store(tmp_path / "runs.db")
    rows = store.runs()
    assert [r["status"] for r in rows] == ["interrupted", "interrupted"]
    assert "this run only" in rows[0]["error"] and rows[1]["error"] == "cancelled by the user"
    store.close()


@pytest.mark.slow
@sync
async def test_stopping_this_run_before_the_grid_has_started_still_stops_it(tmp_path, monkeypatch):
    """x, r while the grid is still being checked (preflight, a fetch, joining Ray): no supervisor yet."""
    import threading

    from greenlab.core.plan import preflight

    checked, release = threading.Event(), threading.Event()
    check = preflight.check

    def slow_check(*args, **kwargs):
        checked.set()
        release.wait(30)
        return check(*args, **kwargs)

    monkeypatch.setattr(preflight, "check", slow_check)
    app = GreenLabApp(
        db=tmp_path / "runs.db", experiments=_file(tmp_path, QUICK.replace("resnet18", "tinycnn") + "repeats = 2\n")
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        await _wait(pilot, checked.is_set, 30, "the grid's checks to begin")
        await pilot.press("x", "r")
        await _wait(pilot, lambda: app._stop_current_requested, 10, "the stop to be noted")
        release.set()
        await _wait(pilot, lambda: not app.running, 90, "the grid to end")
    rows = Store(tmp_path / "runs.db").runs()
    assert [r["status"] for r in rows] == ["interrupted", "completed"]  # the first stopped, the queue went on


@sync
async def test_invalid_settings_are_refused_inline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short paths to type
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=_file(tmp_path, QUICK))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await _type(pilot, "#f-epochs", "0")
        status = _status(app)
        assert "settings: defaults.epochs: must be at least 1, got 0; write e.g. epochs = 2 (the default)" in str(
            status.render()
        )
        assert status.has_class("-error") and app.query_one("#f-epochs").has_class("-invalid")
        await pilot.press("ctrl+r")
        assert not app.running and app.query_one("#panes", TabbedContent).active == "setup"
        await _type(pilot, "#f-epochs", "1")
        assert not status.has_class("-error") and not app.query_one("#f-epochs").has_class("-invalid")
        # messages are shown as text: a value that looks like markup is quoted, not swallowed
        await _type(pilot, "#f-dataset", "[b]")
        assert "unknown dataset '[b]'" in str(status.render())
        await _type(pilot, "#f-dataset", "digits")
        # a technique setting: ticking stego, then a bits value out of range
        await _type(pilot, "#f-stego-bits", "30")
        app.query_one("#t-stego").value = True
        await pilot.pause()
        assert "stego.bits: bits must be an integer from 0 to 23" in str(status.render())
        # a file that does not exist: the loader's message, nothing run
        await _type(pilot, "#f-file", "missing.toml")
        await pilot.press("enter")
        assert "file not found" in str(status.render()) and not app.running


@sync
async def test_worker_failure_is_notified_and_the_app_carries_on(tmp_path, monkeypatch):
    from greenlab.core.grid.local import LocalDriver

    def broken(self, runs, force=False, wait=True):
        raise RuntimeError("meters exploded")

    monkeypatch.setattr(LocalDriver, "run_grid", broken)
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=_file(tmp_path, QUICK))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: not app.running, 10, "the failed worker to be routed")
        assert any("meters exploded" in str(n.message) for n in app._notifications)
        assert all(n.timeout <= 8 for n in app._notifications)  # toasts go after a few seconds
        assert str(app.query_one("#queue").get_row_at(0)[1]) == "not run"


@sync
async def test_runs_pane_sorts_filters_marks_and_opens_detail(tmp_path):
    db = tmp_path / "demo.db"
    seed_store(db)
    app = GreenLabApp(db=db, experiments=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("3")
        runs = app.runs_pane
        assert len(runs.shown) == 14
        await pilot.press("s", "s", "s", "s")  # id -> model -> technique -> status -> energy
        assert runs.sort_column == "energy"
        energies = [r.run.energy_j for r in runs.shown]
        assert energies == sorted(energies)
        await pilot.press("r")
        assert [r.run.energy_j for r in runs.shown] == sorted(energies, reverse=True)
        await pilot.click("#runs-table", offset=(24, 1))  # the technique header, under the border
        assert runs.sort_column == "technique"
        app.query_one("#filter-technique").value = "stego"
        await pilot.pause()
        assert {r.run.technique for r in runs.shown} == {"stego"} and len(runs.shown) == 3
        assert all(r.change["energy_j"] < -30 for r in runs.shown)
        assert "Sort" in {c.title for c in app.get_system_commands(app.screen)}  # the focused pane's keys
        await pilot.press("space")
        assert len(runs.marked) == 1 and "1 marked" in str(runs.query_one("#tradeoff").border_title)
        await pilot.press("c")
        assert not runs.query_one("#tradeoff").display
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        summary = str(app.screen.query_one("#detail-summary", Static).render())
        assert "MIXED" in summary and "(gpu0)" in summary and "(cpu, dram)" in summary
        assert app.screen.query_one("#detail-components").row_count == 3
        assert app.screen.query_one("#detail-epochs").row_count == 3
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


@sync
async def test_command_palette_offers_actions_and_themes(tmp_path):
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=None, theme="greenlab-dark")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {"Run selection", "Load experiments file", "Show Runs", "Theme: greenlab-light"} <= titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"light")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause()
        assert app.theme == "greenlab-light"


@pytest.mark.slow
@sync
async def test_quit_during_a_run_cancels_it_first(tmp_path):
    app = _long_tinycnn_app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: app.live.current is not None, 30, "the run to begin")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("y")
        deadline = time.monotonic() + 30
        while app.return_value is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    assert app.return_value == 0  # the user confirmed: quitting is no interrupt
    store = Store(tmp_path / "runs.db")
    assert [r["status"] for r in store.runs()] == ["interrupted"]
    store.close()


@sync
async def test_yes_to_quit_after_the_grid_has_ended_exits_at_once(tmp_path):
    """The question "a run is in progress, quit?" was asked, and the grid ended before the answer: there is
    nothing left to cancel, and the app exits at once (it waited 20 s for a grid that had already ended)."""
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=None)
    async with app.run_test(size=(120, 40)) as pilot:
        app._grid_active = True  # as while a grid runs
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, ConfirmQuit)
        app._grid_active = False  # its last run stored, the grid ends
        await pilot.press("y")
        await _wait(pilot, lambda: app.return_value is not None, 3, "the app to exit")
    assert app.return_value == 0


@pytest.mark.slow
@sync
async def test_ctrl_q_as_the_last_run_is_stored_quits_when_the_grid_ends_unanswered(tmp_path):
    """ctrl+q pressed while the grid finishes (its run stored, the grid not yet ended) asks whether to cancel
    the run; once the grid has ended there is no run to cancel, and the app quits without an answer (as the
    README's first-contact check meets it: it waited 20 s)."""
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=_file(tmp_path, QUICK.replace("resnet18", "tinycnn")))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+r")
        await _wait(pilot, lambda: app.live.current is not None and app.live.current.stored is not None, 60, "a run")
        await pilot.press("ctrl+q")
        started = time.monotonic()
        await _wait(pilot, lambda: app.return_value is not None, 15, "the app to quit")
        assert time.monotonic() - started < 15
    assert app.return_value == 0
