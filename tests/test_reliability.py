"""Nothing lost, nothing adopted, nothing hangs: the promises of docs/reliability.md, one test each."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from greenlab import cli
from greenlab.core.store.database import Store
from greenlab.core.store.schema import APPLICATION_ID, SCHEMA_VERSION
from tests.conftest import QUICK_DEFAULTS, REPO, run_cli

GRID = QUICK_DEFAULTS + '[[experiment]]\nname = "r"\nmodels = ["tinycnn"]\n'


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign(tmp_path, journal_mode="delete"):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"pragma journal_mode = {journal_mode}")
        conn.execute("create table foo (a integer)")
        conn.execute("insert into foo values (1)")
    conn.close()
    return path


# -- another application's file is never adopted ---------------------------------------------------------------
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_another_applications_database_is_refused_and_left_byte_for_byte(tmp_path, journal_mode):
    other = _foreign(tmp_path, journal_mode)
    before = _digest(other)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    result = run_cli("--headless", str(grid), "--db", str(other))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "another application's database (tables foo" in result.stderr and "Traceback" not in result.stderr
    assert _digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.toml", "other.db"]  # no -wal, no -shm


def test_the_report_refuses_it_the_same_way(tmp_path, capsys):
    other = _foreign(tmp_path)
    before = _digest(other)
    assert cli.main(["report", "--db", str(other)]) == 2
    assert "another application's database (tables foo" in capsys.readouterr().err
    assert _digest(other) == before


def test_a_foreign_runs_table_of_id_and_status_is_not_taken_for_an_old_store(tmp_path, capsys):
    path = tmp_path / "tasks.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table runs (id integer primary key, status text, owner text)")
        conn.execute("insert into runs (status, owner) values ('done', 'cron')")
    conn.close()
    before = _digest(path)
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    result = run_cli("--headless", str(grid), "--db", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "another application's database (tables runs; a runs table without GreenLab's columns" in result.stderr
    assert "settings_key" in result.stderr
    assert cli.main(["report", "--db", str(path)]) == 2
    assert "another application's database" in capsys.readouterr().err
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.toml", "tasks.db"]


def test_a_store_says_what_it_is(tmp_path):
    store = Store(tmp_path / "runs.db")
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    store.close()
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_store_from_before_application_ids_is_still_opened_and_marked(tmp_path):
    import sqlite_utils

    from greenlab.core.store import schema

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    schema._migrate_1(db)  # a schema-1 store: our tables, no application id yet
    db.execute("PRAGMA user_version = 1")
    db.close()
    store = Store(path)
    assert store.runs() == []
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


# -- a newer GreenLab's store is refused by every face, from one check -----------------------------------------------
def test_a_newer_store_is_refused_by_the_report_as_by_a_grid(tmp_path, capsys):
    path = tmp_path / "newer.db"
    store = Store(path)
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = _digest(path)
    assert cli.main(["report", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert "newer than this greenlab" in err and "upgrade greenlab" in err
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    result = run_cli("--headless", str(grid), "--db", str(path))
    assert result.returncode == 2 and "newer than this greenlab" in result.stderr
    # a store is in WAL mode: refusing it leaves no -wal or -shm beside it, and not a byte changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.toml", "newer.db"] and _digest(path) == before


# -- a busy store loses nothing ---------------------------------------------------------------------------------
LONG = GRID.replace("epochs = 1", "epochs = 3").replace("max_train_batches = 3", "max_train_batches = 6")


def _hold_lock(path, seconds):
    """Another process takes the store's write lock (as sqlite-utils in a terminal, or a backup, might) and
    keeps it for `seconds`; returns once it holds it."""
    import subprocess
    import sys

    code = (
        "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60); "
        "c.execute('begin exclusive'); print('locked', flush=True); time.sleep(float(sys.argv[2])); "
        "c.execute('rollback')"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _grid_under_lock(tmp_path, lock_s):
    """A 3-epoch run whose store another process locks for `lock_s` seconds from its first epoch on."""
    from greenlab.core.grid.local import LocalDriver
    from greenlab.core.grid.stop_rules import GridStopped
    from greenlab.core.plan.config import parse_grid
    from greenlab.core.run.run_events import ChildEvent, Notice
    from greenlab.core.train import child_events

    path = tmp_path / "runs.db"
    store = Store(path)
    notes, holders = [], []

    def listen(event):
        if isinstance(event, Notice):
            notes.append(event.text)
        if isinstance(event, GridStopped):
            notes.append(f"stopped: {event.cause}")
        if isinstance(event, ChildEvent) and isinstance(event.event, child_events.EpochFinished) and not holders:
            holders.append(_hold_lock(path, lock_s))

    outcomes, error = [], None
    try:
        outcomes = LocalDriver(store, on_event=listen).run_grid(parse_grid(LONG).grid())
    except Exception as exc:  # noqa: BLE001 - the test looks at it
        error = exc
    for holder in holders:
        holder.wait(timeout=60)
    store.close()
    return path, outcomes, notes, error


def test_a_store_locked_for_seconds_waits_and_stores_the_whole_run(tmp_path):
    path, outcomes, notes, error = _grid_under_lock(tmp_path, 7)
    assert error is None and [o.status for o in outcomes] == ["completed"]
    busy = [n for n in notes if n.startswith("store busy, waiting")]
    assert len(busy) >= 1 and len(busy) <= 2  # said once per waiting connection, never once per try
    store = Store(path)
    (row,) = store.runs()
    assert row.status == "completed" and len(store.epochs(row.id)) == 3 and store.samples(row.id)


def test_a_store_locked_past_the_budget_keeps_the_record_beside_it_and_imports_it_later(tmp_path, monkeypatch, capsys):
    from greenlab.core.store import journal

    monkeypatch.setenv("GREENLAB_STORE_BUSY_S", "1")
    path, outcomes, notes, error = _grid_under_lock(tmp_path, 16)
    assert error is None and outcomes == []  # the grid stopped on an unwritable store, with nothing lost
    kept = journal.pending(path)
    assert len(kept) == 1 and kept[0].parent.name == "runs.db.pending"
    (stopped,) = [n for n in notes if n.startswith("stopped: ")]
    assert "the run store stayed locked by another process" in stopped and str(kept[0]) in stopped
    assert "run 1's record" in stopped
    # The report reads only: it cannot take the record in, and says it leaves it out, and where it waits
    assert cli.main(["report", "--db", str(path)]) == 2  # the run's row is still `running`: nothing to compare
    said = capsys.readouterr().err
    assert "1 run record in " in said and "runs.db.pending is not in the store yet" in said
    assert journal.pending(path) == kept
    store = Store(path)  # the lock is gone: opening the store imports what waited
    (row,) = store.runs()
    assert row.status == "completed" and len(store.epochs(row.id)) == 3 and store.samples(row.id)
    assert row.energy_j is not None and store.components(row.id)
    assert journal.pending(path) == [] and not (tmp_path / "runs.db.pending").exists()


def test_a_store_locked_when_the_grid_starts_is_waited_for_aloud(tmp_path):
    """The lock is there before the grid: opening a current store and forecasting take no write lock, so
    the grid reaches its first write and says it waits, instead of hanging silently before its forecast."""
    import subprocess
    import sys
    import threading

    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    path = tmp_path / "runs.db"
    store = Store(path)
    assert store.version > 0  # a store of today's schema, made now
    store.close()
    code = (  # holds the write lock until told to let go
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
        "c.execute('begin exclusive'); print('locked', flush=True); sys.stdin.readline(); c.execute('rollback')"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    grid_process = subprocess.Popen(
        [sys.executable, "-m", "greenlab", "--headless", str(grid), "--db", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    said = []
    watchdog = threading.Timer(120, grid_process.kill)  # a grid waiting in silence fails the test, never hangs it
    watchdog.start()
    try:
        for line in grid_process.stdout:
            said.append(line)
            if line.startswith("store busy, waiting"):
                break
    finally:
        holder.communicate(b"\n", timeout=60)  # the lock goes; the grid goes on
    said += grid_process.stdout.readlines()
    watchdog.cancel()
    assert grid_process.wait(timeout=120) == 0, "".join(said)
    text = "".join(said)
    assert text.count("store busy, waiting") == 1
    assert text.index("forecast:") < text.index("store busy, waiting")
    (row,) = Store(path).runs()
    assert row.status == "completed"


def test_a_lock_held_past_the_budget_at_the_start_names_the_lock_not_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENLAB_STORE_BUSY_S", "1")
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    path = tmp_path / "runs.db"
    store = Store(path)
    store.start_run({"model": "tinycnn", "technique": "baseline", "status": "running", "supervisor_pid": 2**22 + 7})
    store.close()  # a row of a dead supervisor: opening the store must write, so it waits for the lock
    holder = _hold_lock(path, 20)
    result = run_cli("--headless", str(grid), "--db", str(path))
    holder.kill()
    assert result.returncode == 2, result.stderr
    assert "stayed locked by another process" in result.stderr and "close what holds it" in result.stderr
    assert "move that file away" not in result.stderr


def test_a_record_left_by_a_killed_supervisor_completes_its_row_instead_of_interrupting_it(tmp_path):
    """A supervisor that kept a record aside and was then killed: the row is `running` under a dead pid; the
    next open replays the record first, so the run is completed, not marked interrupted."""
    from greenlab.core.store import journal
    from greenlab.core.store.row_writes import AddEpoch, UpdateRun

    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline", "supervisor_pid": 2**22 + 12345})
    store.close()
    journal.save(
        path,
        run_id,
        [
            AddEpoch({"run_id": run_id, "epoch": 1, "val_accuracy": 0.5}),
            UpdateRun(run_id, {"status": "completed", "energy_j": 12.0}),
        ],
    )
    reopened = Store(path)
    row = reopened.run(run_id)
    assert row.status == "completed" and row.energy_j == 12.0 and len(reopened.epochs(run_id)) == 1


# -- runaway grids are refused before they cost anything ----------------------------------------------------------
def _refused_without_torch(path, tmp_path):
    """`greenlab --headless path` in a subprocess that reports whether torch was loaded before the refusal."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import sys\nfrom greenlab.cli import main\n"
        f"code = main(['--headless', {str(path)!r}, '--db', {str(tmp_path / 'runs.db')!r}])\n"
        "print('exit', code, 'torch' in sys.modules)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_a_million_repeats_is_refused_with_the_bound_and_the_fix(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID.replace("epochs = 1", "epochs = 1\nrepeats = 1000000"))
    result = _refused_without_torch(grid, tmp_path)
    assert result.stdout.split() == ["exit", "2", "False"], result.stdout + result.stderr
    assert "defaults.repeats: must be between 1 and 1000, got 1000000" in result.stderr
    assert not (tmp_path / "runs.db").exists()


def test_a_grid_beyond_max_runs_is_refused_counted_not_expanded(tmp_path):
    models = '["tinycnn", "resnet18", "alexnet"]'
    body = "".join(
        f'[[experiment]]\nname = "e{i}"\nmodels = {models}\ntechniques = ["baseline", "prune", "stego", "lowrank"]\n'
        for i in range(3)
    )
    grid = tmp_path / "g.toml"
    grid.write_text("[defaults]\nrepeats = 300\nmax_runs = 10_000\n" + body)  # 3 × 3 × 4 × 300 = 10,800
    result = _refused_without_torch(grid, tmp_path)
    assert result.stdout.split() == ["exit", "2", "False"], result.stdout + result.stderr
    assert "g.toml:3: defaults.max_runs: the grid expands to 10,800 runs" in result.stderr
    assert "3 models × 4 techniques × 300 repeats = 3,600" in result.stderr and "raise max_runs" in result.stderr
    grid.write_text("[defaults]\nrepeats = 300\nmax_runs = 10_800\n" + body)  # raised: the bound is the user's
    from greenlab.core.plan.config import load_grid

    assert len(load_grid(grid).grid()) == 10_800


def test_a_file_of_more_experiments_than_max_runs_is_refused_before_it_is_parsed(tmp_path):
    grid = tmp_path / "huge.toml"
    table = '[[experiment]]\nname = "e{}"\nmodels = ["tinycnn"]\n'
    with grid.open("w") as out:  # 60,000 tables, 3.4 MB: the parser alone would need a minute per 600,000
        out.write("[defaults]\nepochs = 1\n")
        out.writelines(table.format(i) for i in range(60_000))
    result = _refused_without_torch(grid, tmp_path)
    assert result.stdout.split() == ["exit", "2", "False"], result.stdout + result.stderr
    assert "huge.toml:30003: experiment: 60,000 experiments, each at least one run, exceed max_runs" in (result.stderr)
    assert not (tmp_path / "runs.db").exists()


def test_inline_experiment_tables_count_as_experiments_before_any_is_validated(tmp_path):
    """`experiment = [{...}, ...]` has no [[experiment]] headers to count: the parsed array's length is
    checked before its 60,000 tables are validated one by one (which took minutes at 600,000)."""
    grid = tmp_path / "inline.toml"
    with grid.open("w") as out:
        out.write("experiment = [\n")  # top-level keys come before the first [table]
        out.writelines(f'  {{name = "e{i}", models = ["tinycnn"]}},\n' for i in range(60_000))
        out.write("]\n[defaults]\nepochs = 1\n")
    result = _refused_without_torch(grid, tmp_path)
    assert result.stdout.split() == ["exit", "2", "False"], result.stdout + result.stderr
    assert "experiment: 60,000 experiments, each at least one run, exceed max_runs = 10,000" in result.stderr
    assert not (tmp_path / "runs.db").exists()


def test_max_runs_belongs_to_defaults(tmp_path):
    from greenlab.core.errors import ConfigError
    from greenlab.core.plan.config import parse_grid

    for text, message in (
        (GRID.replace('name = "r"', 'name = "r"\nmax_runs = 5'), "move it to [defaults]"),
        (GRID.replace("epochs = 1", "epochs = 1\nmax_runs = 0"), "must be a whole number of runs of at least 1"),
        (GRID.replace("epochs = 1", 'epochs = 1\nmax_runs = "many"'), "write e.g. max_runs = 10000"),
    ):
        try:
            parse_grid(text, "g.toml")
        except ConfigError as exc:
            assert message in str(exc)
        else:
            raise AssertionError(f"accepted: {text}")
