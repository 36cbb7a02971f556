"""Ctrl-C during a headless grid: exit 130, the run stored as interrupted with its partial data."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import QUICK_DEFAULTS, REPO


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_stores_the_run_as_interrupted(tmp_path, sig):
    toml = tmp_path / "long.toml"
    toml.write_text(
        QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 400").replace("epochs = 1", "epochs = 50")
        + """
[[experiment]]
name = "long"
models = ["tinycnn"]
techniques = ["baseline"]
"""
    )
    db = tmp_path / "runs.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "greenlab", "--headless", str(toml), "--db", str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    epochs = 0
    while time.monotonic() < deadline and epochs == 0:  # wait until at least one epoch is stored
        time.sleep(0.5)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    epochs = conn.execute("select count(*) from epochs").fetchone()[0]
            except sqlite3.OperationalError:
                pass  # schema still being created
    assert epochs, "no epoch finished in time"
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    with sqlite3.connect(db) as conn:
        status, error, energy, finished = conn.execute(
            "select status, error, energy_j, finished_at from runs"
        ).fetchone()
        stored_epochs = conn.execute("select count(*) from epochs").fetchone()[0]
        samples = conn.execute("select count(*) from samples").fetchone()[0]
    assert status == "interrupted"
    # Ctrl-C is the user's; SIGTERM is a signal, and the row says which
    assert error == ("cancelled by the user" if sig == signal.SIGINT else "stopped by signal SIGTERM")
    assert energy > 0 and finished and stored_epochs >= 1 and samples > 0


def test_a_killed_training_process_is_stored_as_failed_with_partial_data(tmp_path):
    """What an OOM kill looks like to the supervisor: the child vanishes mid-epoch without a word."""
    import threading

    from greenlab.core.plan.config import expand_grid, parse_experiments
    from greenlab.core.run.run_events import ChildEvent
    from greenlab.core.run.supervisor import RunSupervisor
    from greenlab.core.store.database import Store
    from greenlab.core.train import child_events

    text = (
        QUICK_DEFAULTS.replace("max_train_batches = 3", "max_train_batches = 400").replace("epochs = 1", "epochs = 50")
        + '[[experiment]]\nname = "oom"\nmodels = ["tinycnn"]\n'
    )
    (run,) = expand_grid(parse_experiments(text))
    first_epoch = threading.Event()

    def watch(event):
        if isinstance(event, ChildEvent) and isinstance(event.event, child_events.EpochFinished):
            first_epoch.set()

    outcome = {}

    def supervise():  # a sqlite connection belongs to the thread that opened it, as in the TUI
        supervisor = RunSupervisor(Store(tmp_path / "runs.db"), on_event=watch)
        outcome["supervisor"] = supervisor
        outcome["stored"] = supervisor.execute(run)

    thread = threading.Thread(target=supervise)
    thread.start()
    assert first_epoch.wait(120)
    os.kill(outcome["supervisor"]._child.pid, signal.SIGKILL)
    thread.join(60)
    stored = outcome["stored"]
    store = Store(tmp_path / "runs.db")
    assert stored.status == "failed"
    assert "killed by signal 9" in stored.error and "out of memory" in stored.error
    assert len(store.epochs(stored.run_id)) >= 1 and stored.row["energy_j"] > 0
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cancel_during_the_idle_baseline_trains_nothing(tmp_path):
    import threading

    from greenlab.core.grid.local import LocalDriver
    from greenlab.core.plan.config import expand_grid, parse_experiments
    from greenlab.core.run.run_events import IdleMeasured, RunBegan
    from greenlab.core.store.database import Store

    text = QUICK_DEFAULTS.replace("idle_s = 0", "idle_s = 30") + '[[experiment]]\nname = "c"\nmodels = ["tinycnn"]\n'
    (run,) = expand_grid(parse_experiments(text))
    store = Store(tmp_path / "runs.db")
    heard: list[object] = []
    supervisor = LocalDriver(store, heard.append)
    threading.Timer(0.5, supervisor.cancel).start()
    assert supervisor.run_grid([run, run]) == []
    assert store.runs() == []
    # the cancel cut the 30 s baseline short (or came before it): no full baseline, no run began
    assert not any(isinstance(e, IdleMeasured) and e.seconds >= 30 for e in heard)
    assert not any(isinstance(e, RunBegan) for e in heard)


def test_the_interrupt_line_says_what_the_grid_kept():
    """A Ctrl-C between runs stores nothing new, but the runs completed before it stay: never "nothing"."""
    from greenlab.core.grid.presenter import QueueEntry
    from greenlab.headless import interrupt_text

    def queue(*statuses):
        return [QueueEntry(0, i, f"run {i}", s) for i, s in enumerate(statuses)]

    assert (
        interrupt_text(queue("completed", "completed", "starting", "waiting"))
        == "interrupted between runs: no run was in progress; the 2 runs that ended before it stay stored"
    )
    assert (
        interrupt_text(queue("completed", "interrupted", "waiting"))
        == "interrupted: the run in progress is stored as interrupted; the run that ended before it stays stored"
    )
    assert (
        interrupt_text(queue("failed", "starting"))
        == "interrupted between runs: no run was in progress; the run that ended before it stays stored"
    )
    assert interrupt_text(queue("starting", "waiting")).startswith("interrupted before the first run began")


def test_a_signal_swallowed_into_a_plain_keyboard_interrupt_keeps_its_name():
    """Ray's wait runs the SIGTERM handler in its C++ loop and raises a plain KeyboardInterrupt instead of
    the handler's SignalInterrupt: the reason is kept where the SignalInterrupt was made, read once."""
    from greenlab.core.run.cancel import SignalInterrupt, interrupt_reason

    SignalInterrupt("SIGTERM")  # made by the handler, then lost inside Ray
    assert interrupt_reason(KeyboardInterrupt()) == "stopped by signal SIGTERM"
    assert interrupt_reason(KeyboardInterrupt()) is None  # read once: a later Ctrl-C is the user's
    assert interrupt_reason(SignalInterrupt("SIGHUP")) == "stopped by signal SIGHUP"
    assert interrupt_reason(KeyboardInterrupt()) is None
