"""The presenter: supervisor events folded into snapshots both faces read, and the shared wording."""

from __future__ import annotations

import pytest

from greenlab.core.grid.grid_events import RunQueued, RunSkipped
from greenlab.core.grid.presenter import GridPresenter, live
from greenlab.core.grid.stop_rules import GridStopped
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.report import formatting
from greenlab.core.run.run_events import ChildEvent, IdleMeasured, RunBegan, RunStored
from greenlab.core.store.rows import RunRow
from greenlab.core.train import child_events

GRID = expand_grid(
    parse_experiments(
        '[defaults]\npretrained = false\nrepeats = 2\norder = "as-written"\n'
        '[[experiment]]\nname = "e"\nmodels = ["tinycnn"]\n'
        'techniques = ["baseline", "prune"]\n'
    )
)


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
    assert texts == [
        "[2/4] tinycnn · prune #1: starting",
        "energy: cpu estimate, dram estimate",
        "energy: cpu: no RAPL",
    ]
    presenter.apply(ChildEvent(7, child_events.RunStarted("cpu", "digits", 1400, 359, 10, 32, "3x32x32", 5, 2)), grid=1)
    presenter.apply(ChildEvent(7, child_events.BatchFinished(1, 3, 5, 0.9)), grid=1)
    snapshot = presenter.apply(ChildEvent(7, child_events.EpochFinished(1, 0.8, 0.5, 0.45, 0.7, 1.0, 0.2)), grid=1)
    view = snapshot.current
    assert (view.epoch, view.batch, view.batches, view.val_accuracy) == (1, 5, 5, 0.5)
    assert snapshot.log[-1].text == "tinycnn · prune #1: epoch 1 loss 0.8000 val acc 50.00% f1 0.450 (1.2 s)"
    clock[0], tracker.t = 104.0, 12.0
    figures = live(view, clock[0])
    assert figures.elapsed_s == pytest.approx(4.0) and figures.eta_s == pytest.approx(4.0)  # half done
    assert figures.energy_j == pytest.approx(10.0)  # the tracker's own readings since the run began
    row = {
        "energy_j": 12.5,
        "energy_measured_j": 0.0,
        "energy_estimated_j": 12.5,
        "duration_s": 4.2,
        "val_accuracy": 0.55,
    }
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
    after = presenter.apply(ChildEvent(99, child_events.BatchFinished(1, 3, 5, 0.9)), grid=1)
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
    assert formatting.kind_of_row(RunRow.of(energy_measured_j=0.0, energy_estimated_j=3.0)) == "estimated"


def test_several_runs_in_flight_each_follow_their_own_events():
    """On Ray several runs run at once: `running` holds them in start order, `current` is the latest."""
    clock = [100.0]
    presenter = GridPresenter(clock=lambda: clock[0])
    presenter.add_grid(1, GRID)
    for index in (0, 1, 2):  # all three queued before any begins
        presenter.apply(RunQueued(index, len(GRID), GRID[index]), grid=1)
    presenter.apply(RunBegan(11, GRID[1], Tracker()), grid=1)
    snapshot = presenter.apply(RunBegan(10, GRID[0], Tracker()), grid=1)
    assert [v.run_id for v in snapshot.running] == [11, 10] and snapshot.current.run_id == 10
    assert [(e.status, e.run_id) for e in snapshot.queue] == [
        ("running", 10),
        ("running", 11),
        ("starting", None),
        ("waiting", None),
    ]
    presenter.apply(ChildEvent(11, child_events.BatchFinished(1, 4, 5, 0.7)), grid=1)
    snapshot = presenter.apply(ChildEvent(10, child_events.BatchFinished(1, 1, 5, 2.0)), grid=1)
    by_id = {v.run_id: v for v in snapshot.running}
    assert (by_id[11].batch, by_id[11].loss) == (4, 0.7) and (by_id[10].batch, by_id[10].loss) == (1, 2.0)
    # The older run is stored first: the newer one stays current and running.
    snapshot = presenter.apply(RunStored(11, GRID[1], "completed", None, {"energy_j": 3.0}), grid=1)
    assert [v.run_id for v in snapshot.running] == [10] and snapshot.current.run_id == 10
    assert snapshot.queue[1].status == "completed" and snapshot.queue[0].status == "running"
    # A retried run begins again under its id, and moves to the end.
    presenter.apply(RunBegan(12, GRID[2], Tracker()), grid=1)
    presenter.apply(RunQueued(0, len(GRID), GRID[0]), grid=1)
    snapshot = presenter.apply(RunBegan(10, GRID[0], Tracker()), grid=1)
    assert [v.run_id for v in snapshot.running] == [12, 10] and snapshot.running[1].batch == 0
    presenter.apply(RunStored(10, GRID[0], "interrupted", "cancelled by the user", {}), grid=1)
    snapshot = presenter.apply(RunStored(12, GRID[2], "failed", "boom", {}), grid=1)
    assert snapshot.running == () and snapshot.current.run_id == 12 and snapshot.current.stored == RunRow(12)
    assert [e.status for e in snapshot.queue] == ["interrupted", "completed", "failed", "waiting"]


def test_a_run_stored_without_beginning_marks_its_queue_entry():
    """A Ray task whose worker died before its run began: the row is stored failed, the queue says so."""
    presenter = GridPresenter()
    presenter.add_grid(1, GRID)
    presenter.apply(RunQueued(2, len(GRID), GRID[2]), grid=1)
    snapshot = presenter.apply(RunStored(5, GRID[2], "failed", "the Ray worker died", {}), grid=1)
    assert snapshot.queue[2].status == "failed" and snapshot.queue[2].run_id == 5 and snapshot.running == ()
    assert "FAILED: the Ray worker died" in snapshot.log[-1].text


def test_live_energy_counts_only_the_components_of_the_run():
    from greenlab.core.run.run_events import RunMetered

    class TwoGpus(Tracker):
        def methods(self):
            return {"gpu0": "counter", "gpu1": "counter", "cpu": "estimate"}

        def running_j(self, since):
            return {"gpu0": 100.0, "gpu1": 90.0, "cpu": 5.0}

    presenter = GridPresenter(clock=lambda: 200.0)
    started(presenter, TwoGpus())
    assert live(presenter.snapshot().current, 200.0).energy_j == pytest.approx(195.0)
    snapshot = presenter.apply(RunMetered(7, ["gpu1", "cpu"]), grid=1)  # it trained on gpu1
    assert live(snapshot.current, 200.0).energy_j == pytest.approx(95.0)


def test_an_idle_baseline_taken_on_a_busy_host_is_a_warning():
    """Others working while idle power is measured make the baseline too high: the faces say so."""
    presenter = GridPresenter()
    presenter.add_grid(1, GRID)
    busy = presenter.apply(IdleMeasured({"cpu": 30.0}, 2.0, {"other_share": 0.6, "other_cpu_s": 2.4}), grid=1).log[-1]
    assert busy.level == "warning" and "other processes used 60% of its CPUs" in busy.text
    quiet = presenter.apply(IdleMeasured({"cpu": 3.0}, 2.0, {"other_share": 0.02, "other_cpu_s": 0.08}), grid=1)
    assert quiet.log[-1].level == "info" and quiet.log[-1].text == "idle baseline over 2 s: cpu 3.0 W"
    estimated = presenter.apply(IdleMeasured({}, 2.0, {"other_share": 0.6, "other_cpu_s": 2.4}), grid=1).log[-1]
    assert estimated.level == "info"  # nothing measured: no baseline to spoil
