"""The forecast's calibration children never run beside a measurement: one at a time, stopped by a newer
request, by a grid starting and by the app closing, and never started while a grid holds the host."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from textual.widgets import Input

from greenlab.core.grid import calibrator
from greenlab.core.grid.calibrator import STOPPED, Calibrator
from greenlab.core.grid.forecast import busy_text
from greenlab.core.measure.host_lock import HostLock, read_holder
from tests.conftest import sync

REAL_CALIBRATE = Calibrator._calibrate  # conftest replaces it with an instant answer for every other test
SPEC = ("tinycnn", 32, "cpu", 64, "sgd")
ANSWER = {"flops_per_sample": 1e7, "flop_per_s": 2e10, "other_cores": 0.0, "cpus": 2}


BUSY_CORES = calibrator.BUSY_CORES


@pytest.fixture(autouse=True)
def real_calibrator(monkeypatch):
    monkeypatch.setattr(Calibrator, "_calibrate", REAL_CALIBRATE)
    monkeypatch.delenv(calibrator.OFF_ENV)  # conftest turns calibration off for every other test's grids
    # This machine may be busy with other work: only the test about a busy host counts it.
    monkeypatch.setattr(calibrator, "BUSY_CORES", float("inf"))
    calibrator.forget()
    yield
    calibrator.forget()


class SlowChild:
    """Starts children that answer after `seconds`, and keeps them to look at."""

    def __init__(self, seconds: float, answer: dict | None = None) -> None:
        self.seconds, self.answer = seconds, answer or ANSWER
        self.children: list[subprocess.Popen[str]] = []

    def __call__(self, todo):
        line = json.dumps(self.answer)
        code = f"import time; time.sleep({self.seconds}); print({line!r})"
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.children.append(child)
        return child


def _in_thread(cal: Calibrator, specs) -> tuple[threading.Thread, dict]:
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(cal(specs)))
    thread.start()
    return thread, answer


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_newer_request_stops_the_older_child_so_one_runs_at_a_time():
    start = SlowChild(30)
    cal = Calibrator(start=start)
    first, first_answer = _in_thread(cal, [SPEC])
    _wait_for(lambda: len(start.children) == 1 and cal.running)
    start.seconds = 0
    second, second_answer = _in_thread(cal, [SPEC])
    first.join(10)
    second.join(20)
    assert start.children[0].returncode is not None and start.children[0].returncode < 0  # killed
    assert first_answer[SPEC] == {"error": STOPPED}
    assert second_answer[SPEC]["flop_per_s"] == 2e10
    assert not cal.running


def test_pause_kills_the_child_and_answers_from_what_was_made_until_resumed():
    start = SlowChild(0)
    cal = Calibrator(start=start)
    assert cal([SPEC])[SPEC]["flop_per_s"] == 2e10  # made once, kept for the process
    start.seconds = 30
    other = ("resnet18", 32, "cpu", 64, "sgd")
    thread, answer = _in_thread(cal, [other])
    _wait_for(lambda: len(start.children) == 2 and cal.running)
    cal.pause("a grid is running")
    grid = HostLock("runs.db")
    assert grid.try_acquire()  # the host is free as soon as pause returns: a grid starting next waits for nothing
    grid.release()
    thread.join(10)
    assert start.children[1].returncode is not None and answer[other] == {"error": STOPPED}
    paused = cal([SPEC, other])
    assert paused[SPEC]["flop_per_s"] == 2e10  # the last calibration stands in
    assert paused[other] == {"error": "not calibrated now: a grid is running"}
    assert len(start.children) == 2  # no child started while paused
    start.seconds = 0
    cal.resume()
    assert cal([other])[other]["flop_per_s"] == 2e10


def test_close_kills_the_child_at_once():
    start = SlowChild(60)
    cal = Calibrator(start=start)
    thread, answer = _in_thread(cal, [SPEC])
    _wait_for(lambda: cal.running)
    cal.close()
    thread.join(10)
    assert not thread.is_alive() and answer[SPEC] == {"error": STOPPED}
    assert start.children[0].poll() is not None


def test_no_calibration_while_a_grid_holds_the_host_and_a_grid_waits_for_a_running_one(tmp_path):
    start = SlowChild(0)
    cal = Calibrator(start=start)
    grid = HostLock(tmp_path / "runs.db")
    assert grid.try_acquire()
    try:
        assert cal([SPEC])[SPEC] == {"error": "not calibrated while a grid measures on this host"}
        assert start.children == []
    finally:
        grid.release()
    start.seconds = 30
    thread, _answer = _in_thread(cal, [SPEC])
    _wait_for(lambda: cal.running)
    assert not HostLock(tmp_path / "runs.db").try_acquire()  # a grid starting now waits for the calibration
    holder = read_holder()
    assert holder is not None and "forecast calibration" in holder.describe()
    cal.close()
    thread.join(10)
    grid = HostLock(tmp_path / "runs.db")
    assert grid.try_acquire()
    grid.release()


def test_calibrate_0_starts_no_child_and_the_forecast_says_why(monkeypatch):
    from greenlab.core.grid.forecast import forecast
    from tests.test_forecast import grid

    start = SlowChild(0)
    monkeypatch.setenv(calibrator.OFF_ENV, "0")
    assert Calibrator(start=start)([SPEC])[SPEC] == {"error": "not calibrated: GREENLAB_CALIBRATE=0"}
    told = forecast(grid(), [], force=True, calibrate=Calibrator(start=start)).describe()
    assert told.endswith("(4 unknown: not calibrated: GREENLAB_CALIBRATE=0)"), told
    assert start.children == []
    monkeypatch.setenv(calibrator.OFF_ENV, "1")  # any other value calibrates
    assert Calibrator(start=start)([SPEC])[SPEC]["flop_per_s"] == ANSWER["flop_per_s"]
    assert len(start.children) == 1


def test_a_calibration_on_a_busy_host_says_so_and_is_not_kept(monkeypatch):
    monkeypatch.setattr(calibrator, "BUSY_CORES", BUSY_CORES)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process on a core
    try:
        start = SlowChild(1.5)
        cal = Calibrator(start=start)
        made = cal([SPEC])[SPEC]
        assert made["other_cores"] > 0.5 and made["cpus"] >= 1
        text = busy_text([made])
        assert text.startswith("forecast taken while the host was busy: ") and text.endswith(
            " cores used by other processes"
        )
        start.seconds = 0
        cal([SPEC])
        assert len(start.children) == 2  # taken again next time: the host may be quiet by then
    finally:
        burner.kill()
        burner.wait()
    assert busy_text([{**ANSWER, "other_cores": 1.94, "cpus": 2}]) == (
        "forecast taken while the host was busy: 1.9 of 2 cores used by other processes"
    )
    assert busy_text([ANSWER]) == ""


def test_the_real_child_reports_its_steps_and_the_hosts_load():
    answer = Calibrator()([SPEC])[SPEC]
    assert "error" not in answer, answer
    # the run's own batch of 64, or fewer where the probe says a step would take over 2 s (a loaded host)
    assert answer["steps"] >= 5 and 2 <= answer["batch"] <= 64 and answer["cpus"] >= 1
    assert answer["other_cores"] >= 0


def _app_with_slow_calibration(tmp_path):
    from greenlab.tui.app import GreenLabApp
    from tests.test_tui_usability import FILE

    path = tmp_path / "experiments.toml"
    # the keyboard tests' grid, cut to a few batches: the grid only has to run and be stored
    path.write_text(FILE.replace("epochs = 2", "epochs = 1\nmax_train_batches = 3\nmax_eval_batches = 2"))
    app = GreenLabApp(db=tmp_path / "runs.db", experiments=str(path))
    start = SlowChild(60)
    app.calibrator = Calibrator(start=start)  # before compose: the setup pane takes it from the app
    return app, start


async def _calibrating(app, pilot) -> None:
    """Wait for the form's first forecast to start its (slow) calibration child."""
    deadline = time.monotonic() + 20
    while not app.calibrator.running:
        assert time.monotonic() < deadline, "the form's forecast never calibrated"
        await pilot.pause(0.05)


@pytest.mark.slow
@sync
async def test_the_tui_kills_its_calibration_before_a_grid_and_starts_none_during_it(tmp_path):
    app, start = _app_with_slow_calibration(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _calibrating(app, pilot)
        await pilot.press("ctrl+r")
        assert start.children[0].poll() is not None  # killed before the grid's idle baseline and first run
        assert app.running
        app.query_one("#f-repeats", Input).value = "2"  # a forecast asked for while the grid runs
        await pilot.pause(1)
        assert len(start.children) == 1 and not app.calibrator.running
        deadline = time.monotonic() + 120
        while app.running:
            assert time.monotonic() < deadline, "the grid did not end"
            await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        await pilot.pause()
        # after the grid, the form is forecast from the runs it stored, without a calibration
        assert "earlier run" in str(app.query_one("#setup-forecast").render())


@sync
async def test_quitting_kills_a_calibration_instead_of_waiting_for_it(tmp_path):
    app, start = _app_with_slow_calibration(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await _calibrating(app, pilot)
        await pilot.press("q")
        await pilot.pause()
    assert start.children[0].poll() is not None
