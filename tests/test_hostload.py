"""How busy the rest of the host was during a run: the arithmetic, and a real run beside a CPU hog."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from greenlab.core.measure import hostload
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.report import formatting
from greenlab.core.run import supervisor
from greenlab.core.store.database import Store
from tests.test_measured_run import QUICK_RUN, fake_hardware  # noqa: F401 - a fixture


def test_others_are_the_busy_time_less_the_run_and_its_supervisor():
    start = hostload.Mark(at=100.0, busy_s=1000.0, steal_s=5.0, own_s=2.0)
    end = hostload.Mark(at=110.0, busy_s=1012.0, steal_s=7.0, own_s=3.0)  # 10 s on 2 CPUs: 20 CPU-s capacity
    load = hostload.others(start, end, run_cpu_s=7.0, cpus=2)
    assert load["other_cpu_s"] == pytest.approx(4.0) and load["other_share"] == pytest.approx(0.2)
    assert load["steal_share"] == pytest.approx(0.1) and hostload.busy(load)
    quiet = hostload.others(start, end, run_cpu_s=10.5, cpus=2)
    assert quiet["other_share"] == pytest.approx(0.025) and not hostload.busy(quiet)
    # a sub-second run: 20 % of its capacity is only the exit cost of its process, not a busy host
    brief = hostload.others(hostload.Mark(0.0, 0.0, 0.0, 0.0), hostload.Mark(0.5, 0.9, 0.0, 0.0), 0.7, cpus=2)
    assert brief["other_share"] == pytest.approx(0.2) and not hostload.busy(brief)
    unknown = hostload.others(start, end, run_cpu_s=None, cpus=2)
    assert unknown["other_share"] is None and not hostload.busy(unknown)


def test_a_mark_counts_this_process_and_the_host():
    before = hostload.mark()
    sum(i * i for i in range(2_000_000))
    after = hostload.mark()
    assert after.own_s > before.own_s and after.busy_s >= before.busy_s + (after.own_s - before.own_s) * 0.5


def _hog(seconds: float) -> None:
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_run_beside_a_cpu_hog_is_flagged_host_busy(tmp_path):
    """Other processes burn every CPU while the run trains: its CPU figures cannot be its own alone."""
    (run,) = expand_grid(parse_experiments(QUICK_RUN.replace("idle_s = 0.5", "idle_s = 0")))
    store = Store(tmp_path / "runs.db")
    hogs = [
        multiprocessing.get_context("spawn").Process(target=_hog, args=(60,), daemon=True)
        for _ in range(os.cpu_count() or 1)
    ]
    for hog in hogs:
        hog.start()
    try:
        outcome = supervisor.RunSupervisor(store).execute(run)
    finally:
        for hog in hogs:
            hog.terminate()
    row = outcome.row
    load = row["meters"]["host_load"]
    assert outcome.status == "completed" and load["other_share"] > hostload.BUSY_SHARE
    assert hostload.FLAG_HOST_BUSY in row["flags"]
    warning = formatting.host_busy(row)
    assert "the host was busy" in warning and f"{load['other_share']:.0%}" in warning


def test_every_run_under_a_grid_baseline_stores_the_load_it_was_measured_under(fake_hardware, tmp_path):
    """The idle baseline is measured once (here with fake RAPL counters) and shared, as a Ray worker shares
    it between the supervisors of its tasks: the runs that reuse it carry the load it was measured under."""
    runs = expand_grid(
        parse_experiments(
            QUICK_RUN.replace("max_train_batches = 30", "max_train_batches = 2").replace(
                "idle_s = 0.5", "idle_s = 0.5\nrepeats = 2"
            )
        )
    )
    cache: dict = {}
    store = Store(tmp_path / "runs.db")
    outcomes = [supervisor.RunSupervisor(store, idle_cache=cache).execute(run) for run in runs]
    loads = [o.row["meters"]["idle_host_load"] for o in outcomes]
    assert [o.status for o in outcomes] == ["completed", "completed"]
    assert loads[0] is not None and loads[0]["other_share"] is not None and loads[1] == loads[0]
