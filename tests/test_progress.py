"""The presenter: supervisor events folded into snapshots both faces read, and the shared wording."""

from __future__ import annotations

import pytest

from greenlab.core import events, formatting
from greenlab.core.config import expand_grid, parse_experiments
from greenlab.core.gridstop import GridStopped
from greenlab.core.progress import GridPresenter, live
from greenlab.core.runner import ChildEvent, IdleMeasured, RunBegan, RunQueued, RunSkipped, RunStored

GRID = expand_grid(parse_experiments('[defaults]\npretrained = false\nrepeats = 2\norder = "as-written"\n'
                                     '[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\n'
                                     'techniques = ["baseline", "prune"]\n'))


class Tracker:
    """What the presenter reads of an EnergyTracker."""

    def __init__(self):
        self.t = 10.0

    def methods(self):
        return {"cpu": "estimate", "dram": "estimate"}

    def components(self):
        return ["cpu", "dram"]

    def now(self):
        return self.t

    def running_j(self, since):
        return {"cpu": 4.0 * (self.t - since), "dram": 1.0 * (self.t - since)}


def started(presenter, tracker, run_id=7, index=1):
    presenter.add_grid(1, GRID)
    presenter.apply(RunQueued(index, len(GRID), GRID[index]), grid=1)
    return presenter.apply(RunBegan(run_id, GRID[index], tracker, {"cpu": "no RAPL"}), grid=1)


def test_a_run_moves_through_the_queue_and_the_log():
    clock = [100.0]
    presenter = GridPresenter(clock=lambda: clock[0])
    tracker = Tracker()
    snapshot = started(presenter, tracker)
    assert [e.status for e in snapshot.queue] == ["waiting", "running", "waiting", "waiting"]
    assert snapshot.current.label == "tinycnn · prune #1" and snapshot.current.kind == "estimated"
    texts = [line.text for line in snapshot.log]
    assert texts == ["[2/4] tinycnn · prune #1: starting", "energy: cpu estimate, dram estimate",
                     "energy: cpu: no RAPL"]
    presenter.apply(ChildEvent(7, events.RunStarted("cpu", "digits", 1400, 359, 10, 32, "3x32x32", 5, 2)), grid=1)
    presenter.apply(ChildEvent(7, events.BatchFinished(1, 3, 5, 0.9)), grid=1)
    snapshot = presenter.apply(ChildEvent(7, events.EpochFinished(1, 0.8, 0.5, 0.45, 0.7, 1.0, 0.2)), grid=1)
    view = snapshot.current
    assert (view.epoch, view.batch, view.batches, view.val_accuracy) == (1, 5, 5, 0.5)
    assert snapshot.log[-1].text == "tinycnn · prune #1: epoch 1 loss 0.8000 val acc 50.00% f1 0.450 (1.2 s)"
    clock[0], tracker.t = 104.0, 12.0
    figures = live(view, clock[0])
    assert figures.elapsed_s == pytest.approx(4.0) and figures.eta_s == pytest.approx(4.0)  # half done
    assert figures.energy_j == pytest.approx(10.0)  # the tracker's own readings since the run began
    row = {"energy_j": 12.5, "energy_measured_j": 0.0, "energy_estimated_j": 12.5, "duration_s": 4.2,
           "val_accuracy": 0.55}
    snapshot = presenter.apply(RunStored(7, GRID[1], "completed", None, row), grid=1)
    assert snapshot.queue[1].status == "completed" and snapshot.queue[1].energy_j == 12.5
    assert snapshot.stored == (7,) and live(snapshot.current, 200.0).energy_j == 12.5
    assert "completed in 4.2 s, 12.5 J" in snapshot.log[-1].text


def test_a_face_reads_only_the_lines_it_has_not_shown():
    presenter = GridPresenter(hints={"skipped": "--force reruns"})
    presenter.add_grid(1, GRID)
    first = presenter.apply(RunSkipped(0, GRID[0], "already completed"), grid=1)
    second = presenter.apply(IdleMeasured({"cpu": 3.0}, 2.0), grid=1)
    assert [line.text for line in second.new_lines(first.log[-1].seq)] == ["idle baseline over 2 s: cpu 3.0 W"]
    assert first.log[-1].text == "[1] tinycnn · baseline #1: skipped (already completed); --force reruns"
    assert first.queue[0].status == "skipped"


def test_events_of_another_run_do_not_move_the_current_one():
    presenter = GridPresenter()
    snapshot = started(presenter, Tracker())
    after = presenter.apply(ChildEvent(99, events.BatchFinished(1, 3, 5, 0.9)), grid=1)
    assert after.current == snapshot.current


def test_a_stopped_grid_and_its_unrun_entries():
    presenter = GridPresenter()
    started(presenter, Tracker())
    snapshot = presenter.apply(GridStopped("no CUDA here", GRID[2:]), grid=1)
    assert snapshot.stopped == "no CUDA here" and snapshot.log[-1].level == "error"
    assert "2 runs not started" in snapshot.log[-1].text
    snapshot = presenter.end_grid(1, cancelled=False)
    assert [e.status for e in snapshot.queue] == ["not run", "not run", "not run", "not run"]


def test_shared_wording():
    assert formatting.energy(12345.6) == "3.43 Wh" and formatting.energy(1234.5) == "1,234.5 J"
    assert formatting.clock(3725) == "1:02:05" and formatting.duration(12.34) == "12.3 s"
    assert formatting.kind_of_methods({"gpu0": "counter", "cpu": "estimate"}) == "mixed"
    assert formatting.kind_of_methods({"cpu": "unavailable"}) == "unavailable"
    assert formatting.kind_of_row({"energy_measured_j": 0.0, "energy_estimated_j": 3.0}) == "estimated"
