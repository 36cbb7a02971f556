"""One measurement at a time per host: the lock's API, --no-wait, two headless grids in turn, a cancel
while waiting, and a store whose run is `running` under another live supervisor."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from greenlab.core.grid.grid_events import RunSkipped
from greenlab.core.grid.local import LocalDriver
from greenlab.core.measure import host_lock
from greenlab.core.measure.host_lock import WaitingForLock
from greenlab.core.plan.config import expand_grid, parse_experiments
from greenlab.core.store.database import Store
from tests.conftest import QUICK_DEFAULTS, REPO, run_cli


def test_lock_holds_says_who_and_releases(tmp_path):
    first = host_lock.HostLock(tmp_path / "a.db")
    assert host_lock.current_holder() is False
    assert first.try_acquire()
    holder = host_lock.current_holder()
    assert holder.pid == os.getpid() and holder.store == str(tmp_path / "a.db") and holder.since
    second = host_lock.HostLock(tmp_path / "b.db")
    assert not second.try_acquire()  # a second descriptor conflicts, even in one process
    with pytest.raises(host_lock.LockBusy) as busy:
        second.acquire(wait=False)
    assert f"pid {os.getpid()}" in str(busy.value) and "a.db" in str(busy.value) and busy.value.exit_code == 2
    first.release()
    assert host_lock.current_holder() is False and host_lock.read_holder() is None
    assert second.try_acquire()
    second.release()


def test_the_os_releases_the_lock_of_a_killed_holder(tmp_path):
    code = (
        "import sys, time; from greenlab.core.measure.host_lock import HostLock; HostLock('x.db').acquire(); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert host_lock.current_holder().pid == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        assert host_lock.current_holder() is False
    finally:
        holder.kill()
        holder.wait()


def test_lock_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GREENLAB_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert host_lock.lock_path() == tmp_path / "run" / "greenlab" / "measure.lock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert host_lock.lock_dir() == tmp_path / "home" / ".cache" / "greenlab"


def test_no_wait_exits_2_at_once_naming_the_holder(write_toml, tmp_path):
    toml = write_toml('[[experiment]]\nname = "q"\nmodels = ["tinycnn"]\n')
    db = tmp_path / "runs.db"
    with host_lock.HostLock("somebody-else.db"):
        done = run_cli("--headless", str(toml), "--db", str(db), "--no-wait", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"another grid is measuring on this host (pid {os.getpid()} on" in done.stderr
    assert "somebody-else.db" in done.stderr
    assert not db.exists()


def _grid(name: str, techniques: str = '["baseline", "prune"]') -> str:
    return QUICK_DEFAULTS + f'[[experiment]]\nname = "{name}"\nmodels = ["tinycnn"]\ntechniques = {techniques}\n'


def _spans(db) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("select started_at, finished_at from runs order by id"))


@pytest.mark.slow
def test_two_headless_grids_run_one_after_the_other(tmp_path):
    procs = {}
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(_grid(name, '["baseline"]'))
        procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "greenlab",
                "--headless",
                str(tmp_path / f"{name}.toml"),
                "--db",
                str(tmp_path / f"{name}.db"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ},
        )
    outputs = {name: proc.communicate(timeout=300)[0] for name, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), outputs
    waited = [name for name, text in outputs.items() if "waiting for another grid measuring on this host" in text]
    assert len(waited) == 1, outputs  # the later one waited, and said for whom
    second = waited[0]
    first = "b" if second == "a" else "a"
    assert f"writing {tmp_path / f'{first}.db'}" in outputs[second]
    first_spans, second_spans = _spans(tmp_path / f"{first}.db"), _spans(tmp_path / f"{second}.db")
    assert len(first_spans) == len(second_spans) == 1
    assert max(f for _, f in first_spans) <= min(s for s, _ in second_spans)  # never measured at once


def test_cancel_while_waiting_runs_nothing(tmp_path):
    (run,) = expand_grid(parse_experiments(_grid("c", '["baseline"]')))
    store = Store(tmp_path / "runs.db")
    heard = []
    supervisor = LocalDriver(store, on_event=heard.append)
    with host_lock.HostLock("other.db"):
        result = {}
        thread = threading.Thread(target=lambda: result.update(outcomes=supervisor.run_grid([run])))
        thread.start()
        deadline = time.monotonic() + 30
        while not any(isinstance(e, WaitingForLock) for e in heard) and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor.cancel()
        thread.join(30)
    assert not thread.is_alive() and result["outcomes"] == []
    (waiting,) = [e for e in heard if isinstance(e, WaitingForLock)]
    assert waiting.holder.pid == os.getpid() and waiting.holder.store == os.path.abspath("other.db")
    assert store.runs() == []
    assert host_lock.current_holder() is False


def test_ctrl_c_while_waiting_leaves_no_store(tmp_path):
    """ "no run was stored" is true of the disk too: the store file is created by the first run only."""
    (tmp_path / "w.toml").write_text(_grid("w", '["baseline"]'))
    db = tmp_path / "runs.db"
    lines: list[str] = []
    with host_lock.HostLock("other.db"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "greenlab", "--headless", str(tmp_path / "w.toml"), "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ},
        )
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while not any("waiting for another grid" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "interrupted before the first run began (waiting for the host" in output and "no run was stored" in output
    assert not db.exists() and not list(tmp_path.glob("runs.db*"))


def test_a_run_running_under_another_live_supervisor_is_skipped(tmp_path):
    runs = expand_grid(parse_experiments(_grid("s")))
    store = Store(tmp_path / "runs.db")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for run in runs:
            run_id = store.start_run(
                {
                    "experiment": run.experiment,
                    "model": run.model,
                    "technique": run.technique,
                    "settings_key": run.settings_key(),
                }
            )
            # Another machine sharing this store (NFS, say): its supervisor is alive there.
            store.update_run(run_id, supervisor_pid=other.pid, host={"hostname": "another-machine"})
        assert store.running_elsewhere(runs[0].settings_key()) == other.pid
        heard = []
        assert LocalDriver(store, on_event=heard.append).run_grid(runs) == []
        skipped = [e for e in heard if isinstance(e, RunSkipped)]
        assert [e.run for e in skipped] == runs
        assert skipped[0].reason == f"running now under supervisor pid {other.pid}"
    finally:
        other.kill()
        other.wait()
    assert store.running_elsewhere(runs[0].settings_key()) is None  # a dead supervisor's run is not running


def test_a_running_row_of_this_host_under_another_pid_is_stale(tmp_path):
    """Under the host lock no other supervisor of this host can be running: a reused pid blocks nothing."""
    runs = expand_grid(parse_experiments(_grid("s")))
    store = Store(tmp_path / "runs.db")
    run_id = store.start_run(
        {
            "experiment": "s",
            "model": runs[0].model,
            "technique": runs[0].technique,
            "settings_key": runs[0].settings_key(),
        }
    )
    store.update_run(run_id, supervisor_pid=1)  # pid 1 is alive, and is no supervisor of ours
    assert store.running_elsewhere(runs[0].settings_key()) is None


def test_ray_tasks_share_a_nodes_lock_that_a_plain_grid_cannot_take(tmp_path):
    first = host_lock.HostLock("runs.db (a Ray grid driven from head)", shared=True)
    second = host_lock.HostLock("runs.db (a Ray grid driven from head)", shared=True)
    assert first.try_acquire() and second.try_acquire()  # two runs of a Ray grid on one node
    plain = host_lock.HostLock(tmp_path / "a.db")
    assert not plain.try_acquire()
    assert "a Ray grid driven from head" in host_lock.current_holder().store  # a waiting grid says who
    first.release()
    assert not plain.try_acquire()  # the other task still measures
    second.release()
    assert plain.try_acquire()
    assert not host_lock.HostLock("x", shared=True).try_acquire()  # and a task waits for a plain grid
    plain.release()
