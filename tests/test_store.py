"""The run store: schema, migrations, round trips and evidence left by a dead supervisor."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greenlab.core.errors import GreenLabError
from greenlab.core.store import database as store_module
from greenlab.core.store import rows as stored_rows
from greenlab.core.store import schema
from greenlab.core.store.database import Store
from greenlab.core.store.record import RunRecord, record_writes
from greenlab.core.store.rows import EpochRow, RunRow
from greenlab.core.store.schema import APPLICATION_ID, RUN_COLUMNS, SCHEMA_VERSION
from tests.conftest import REPO, run_cli

DOCUMENTED_RUN_COLUMNS = [
    "id",
    "experiment",
    "model",
    "dataset",
    "technique",
    "settings",
    "seed",
    "repeat",
    "status",
    "error",
    "started_at",
    "finished_at",
    "duration_s",
    "device",
    "params_total",
    "params_nonzero",
    "model_bytes",
    "val_accuracy",
    "val_f1",
    "energy_j",
    "energy_kwh",
    "energy_gpu_j",
    "energy_gpu_method",
    "energy_cpu_j",
    "energy_cpu_method",
    "energy_dram_j",
    "energy_dram_method",
    "energy_measured_j",
    "energy_estimated_j",
    "idle_w",
    "co2e_g",
    "cost",
    "greenlab_version",
    "host",
]


def test_schema_has_the_public_columns(tmp_path):
    store = Store(tmp_path / "runs.db")
    columns = {c.name for c in store.db["runs"].columns}
    assert set(DOCUMENTED_RUN_COLUMNS) <= columns
    assert {c.name for c in store.db["epochs"].columns} >= {
        "run_id",
        "epoch",
        "train_loss",
        "val_accuracy",
        "val_f1",
        "duration_s",
        "energy_j",
    }
    assert {c.name for c in store.db["samples"].columns} == {"run_id", "t_s", "component", "watts"}
    assert store.version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_schema_page_documents_every_runs_column():
    from tests.conftest import REPO

    schema = (REPO / "docs" / "schema.md").read_text()
    missing = [c for c in RUN_COLUMNS if f"`{c}`" not in schema]
    assert not missing, f"docs/schema.md lacks: {missing}"


def test_only_a_store_built_as_not_durable_skips_waiting_for_the_disk(tmp_path):
    durable, throwaway = Store(tmp_path / "a.db"), Store(tmp_path / "b.db", durable=False)
    for store in (durable, throwaway):
        store.start_run({"model": "tinycnn", "technique": "baseline", "status": "running"})
    assert durable.db.execute("PRAGMA synchronous").fetchone()[0] != 0
    assert throwaway.db.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF


def test_round_trip(tmp_path):
    store = Store(tmp_path / "runs.db")
    run_id = store.start_run(
        {
            "experiment": "e",
            "model": "tinycnn",
            "technique": "baseline",
            "settings": {"lr": 0.1},
            "seed": 0,
            "repeat": 0,
            "settings_key": "k1",
        }
    )
    row = store.run(run_id)
    assert row["status"] == "running" and row["settings"] == {"lr": 0.1}
    assert row["host"]["cpu_count"] >= 1 and row["greenlab_version"]
    store.add_epoch(
        {
            "run_id": run_id,
            "epoch": 1,
            "train_loss": 1.5,
            "val_accuracy": 0.5,
            "val_f1": 0.4,
            "duration_s": 2.0,
            "energy_j": 10.0,
        }
    )
    store.add_samples(run_id, [(0.1, "cpu", 20.0), (0.2, "cpu", 21.0)])
    store.set_components(
        run_id, [{"component": "cpu", "energy_j": 10.0, "method": "estimate", "inputs": {"tdp_w": 85}, "flags": []}]
    )
    store.update_run(run_id, status="completed", energy_j=10.0)
    assert store.completed_keys() == {"k1"}
    assert [e.epoch for e in store.epochs(run_id)] == [1]
    assert [s.watts for s in store.samples(run_id)] == [20.0, 21.0]
    assert store.components(run_id)[0].inputs == {"tdp_w": 85}  # decoded by the store, as runs' columns are
    store.close()
    # readable by plain sqlite3, as sqlite-utils users will
    with sqlite3.connect(tmp_path / "runs.db") as conn:
        assert conn.execute("select status, energy_j from runs").fetchone() == ("completed", 10.0)


def test_running_rows_of_a_dead_supervisor_become_interrupted(tmp_path, monkeypatch):
    store = Store(tmp_path / "runs.db")
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline", "supervisor_pid": 999_999_999})
    store.close()
    reopened = Store(tmp_path / "runs.db")
    row = reopened.run(run_id)
    assert row["status"] == "interrupted" and "ended before" in row["error"]


def test_migrations_run_once_and_refuse_newer_stores(tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    Store(path).close()
    Store(path).close()  # reopening is a no-op, not a failure
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(GreenLabError, match="newer"):
        Store(path)


@pytest.mark.parametrize("kind", ["folder", "not-a-database"])
def test_unusable_db_paths_are_user_errors(tmp_path, kind):
    path = tmp_path / "x.db"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_text("hello, not sqlite " * 100)
    with pytest.raises(GreenLabError, match="--db"):
        Store(path)
    result = run_cli("--headless", str(REPO / "experiments.toml"), "--db", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_db_path_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENLAB_DB", str(tmp_path / "env.db"))
    assert store_module.resolve_path(None) == tmp_path / "env.db"
    assert store_module.resolve_path(tmp_path / "arg.db") == tmp_path / "arg.db"


def test_every_row_says_where_it_ran(tmp_path):
    """A local run: executor 'local' on this host; rows from before schema 2 were all local."""
    import socket

    import sqlite_utils

    store = Store(tmp_path / "runs.db")
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline"})
    row = store.run(run_id)
    assert (row["executor"], row["node"], row["attempts"]) == ("local", socket.gethostname(), 1)
    assert row["concurrent_runs"] == []
    ray_id = store.start_run({"model": "tinycnn", "technique": "prune", "executor": "ray", "node": "abc123"})
    assert (store.run(ray_id)["executor"], store.run(ray_id)["node"]) == ("ray", "abc123")
    store.close()

    old = tmp_path / "old.db"
    db = sqlite_utils.Database(old)
    schema._migrate_1(db)
    db.execute("PRAGMA user_version = 1")
    db["runs"].insert(
        {
            "model": "tinycnn",
            "technique": "baseline",
            "status": "completed",
            "settings": "{}",
            "host": json.dumps({"hostname": "lab-3"}),
        }
    )
    db.close()
    (row,) = Store(old).runs()
    assert (row["executor"], row["node"], row["attempts"], row["concurrent_runs"]) == ("local", "lab-3", 1, [])


def test_a_completed_rerun_supersedes_the_earlier_runs_of_its_key(tmp_path):
    """Only a completed rerun replaces: a failed one leaves the earlier run counting; deleting the rerun
    makes the earlier run count again."""
    store = Store(tmp_path / "runs.db")
    first = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k"})
    store.update_run(first, status="completed")
    other = store.start_run({"model": "tinycnn", "technique": "prune", "settings_key": "other"})
    store.update_run(other, status="completed")
    failed = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k"})
    store.update_run(failed, status="failed")
    assert store.run(first)["status"] == "completed"
    rerun = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k"})
    store.write_record(rerun, record_writes(rerun, RunRecord(values={"status": "completed"})))  # as a sink stores it
    assert (store.run(first)["status"], store.run(first)["superseded_by"]) == ("superseded", rerun)
    assert store.run(other)["status"] == "completed" and store.run(failed)["status"] == "failed"
    assert [r["id"] for r in store.completed_runs()] == [other, rerun]
    store.delete_runs([rerun])
    assert (store.run(first)["status"], store.run(first)["superseded_by"]) == ("completed", None)
    store.close()


def test_migration_3_marks_earlier_forced_reruns_superseded(tmp_path):
    import sqlite_utils

    old = tmp_path / "old.db"
    db = sqlite_utils.Database(old)
    schema._migrate_1(db)
    schema._migrate_2(db)
    db.execute("PRAGMA user_version = 2")
    for status in ("completed", "completed", "failed", "completed"):
        db["runs"].insert({"model": "tinycnn", "technique": "baseline", "status": status, "settings_key": "k"})
    db["runs"].insert({"model": "tinycnn", "technique": "prune", "status": "completed", "settings_key": "p"})
    db.close()
    rows = Store(old).runs()
    assert [(r["status"], r["superseded_by"]) for r in rows] == [
        ("superseded", 4),
        ("superseded", 4),
        ("failed", None),
        ("completed", None),
        ("completed", None),
    ]


def test_a_deleted_runs_id_is_never_given_again_in_a_new_store_or_a_migrated_one(tmp_path):
    """Logs and pending records are keyed by run id: run 24 deleted, the next run is 25, not 24 again."""
    import sqlite_utils

    fresh = Store(tmp_path / "runs.db")
    first, last = fresh.start_run({"model": "m", "technique": "t"}), fresh.start_run({"model": "m", "technique": "t"})
    fresh.delete_runs([last])
    assert fresh.start_run({"model": "m", "technique": "t"}) == last + 1 and first == last - 1
    fresh.close()

    old = tmp_path / "old.db"  # a store of schema 4, with data, its newest run deleted
    db = sqlite_utils.Database(old)
    for migration in schema.MIGRATIONS[:4]:
        migration(db)
    db.execute("PRAGMA user_version = 4")
    for n in range(3):
        db["runs"].insert({"model": "tinycnn", "technique": "baseline", "status": "completed", "settings_key": f"k{n}"})
    db["epochs"].insert({"run_id": 2, "epoch": 1, "energy_j": 5.0})
    db.close()
    store = Store(old)
    assert store.version == SCHEMA_VERSION
    assert [r["settings_key"] for r in store.runs()] == ["k0", "k1", "k2"]  # rows kept, in order, with their ids
    assert [(e.run_id, e.energy_j) for e in store.epochs(2)] == [(2, 5.0)]
    indexes = {
        r[0] for r in store.db.execute("select name from sqlite_master where type = 'index' and tbl_name = 'runs'")
    }
    assert {"idx_runs_settings_key_status", "idx_runs_conditions_key_technique_status"} <= indexes
    store.delete_runs([3])
    assert store.start_run({"model": "m", "technique": "t"}) == 4


@pytest.mark.parametrize("face", [["--headless", str(REPO / "experiments.toml")], [], ["report"]])
def test_a_db_in_a_missing_folder_is_refused_and_nothing_created(tmp_path, face):
    """A folder the user typed is never created (a typo would grow a tree): one line, exit 2."""
    db = tmp_path / "nodir" / "runs.db"
    command = ["report", "--db", str(db)] if face == ["report"] else [*face, "--db", str(db)]
    result = run_cli(*command, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    if face != ["report"]:  # report names the missing store in its own words
        assert result.stderr.strip() == (
            f"greenlab: --db {db}: folder {db.parent} does not exist; create it or choose another --db"
        )
    assert not db.parent.exists()


def test_a_greenlab_db_in_a_missing_folder_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENLAB_DB", str(tmp_path / "nodir" / "runs.db"))
    with pytest.raises(
        GreenLabError,
        match=r"^GREENLAB_DB=.*: folder .*nodir does not exist; create it or set "
        r"GREENLAB_DB to another path$",
    ):
        Store()
    assert not (tmp_path / "nodir").exists()


def test_the_default_store_creates_its_data_folder_on_the_first_write(tmp_path, monkeypatch):
    monkeypatch.delenv("GREENLAB_DB")
    monkeypatch.chdir(tmp_path)
    store = Store()
    assert store.runs() == [] and not (tmp_path / "data").exists()
    store.start_run({"model": "m", "technique": "baseline"})
    assert (tmp_path / "data" / "runs.db").is_file()


def test_opening_and_reading_a_new_store_creates_no_file(tmp_path):
    """Only the first write creates the file: a grid stopped before its first run leaves no store."""
    path = tmp_path / "runs.db"
    store = Store(path)
    assert store.runs() == [] and store.completed_by_key() == {} and store.run(1) is None
    assert store.running_elsewhere("key") is None and store.last_epoch_accuracies() == {}
    store.close()
    assert not path.exists()
    store = Store(path)
    run_id = store.start_run({"model": "m", "technique": "baseline"})
    assert path.is_file() and [r["id"] for r in Store(path).runs()] == [run_id]


def test_runs_of_one_key_completing_out_of_order_leave_one_completed(tmp_path):
    """Two supervisors on one store: the later-started run may finish first; the latest (by id) counts."""
    store = Store(tmp_path / "runs.db")
    first = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k"})
    second = store.start_run({"model": "tinycnn", "technique": "baseline", "settings_key": "k"})
    store.update_run(second, status="completed")
    store.update_run(first, status="completed")
    assert (store.run(first)["status"], store.run(first)["superseded_by"]) == ("superseded", second)
    assert store.run(second)["status"] == "completed"
    store.close()


def test_a_store_that_fails_to_open_keeps_no_half_open_connection(tmp_path):
    """The file appears (another, newer greenlab made it) after this store was set up without one: its first
    use refuses it, and so does every later one, never reading through a connection left half-open."""
    db = tmp_path / "runs.db"
    store = Store(db)
    with sqlite3.connect(db) as conn:
        conn.execute("create table runs (id integer primary key, status text)")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # a newer greenlab marks its store
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for _ in range(2):
        with pytest.raises(GreenLabError, match="newer than this greenlab"):
            store.runs()


# -- the store's own errors: one of its kinds for each failure, never SQLite's ------------------------------------
def _sqlite_error(path, sql, uri_mode=""):
    """The exception SQLite itself raises for `sql` on `path` (opened `?mode=...` when given), unwaited."""
    conn = sqlite3.connect(f"file:{path}{uri_mode}", uri=True, timeout=0)
    try:
        conn.execute(sql)
        conn.commit()
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{sql} did not fail")


def test_every_store_error_is_a_greenlab_error_of_one_hierarchy():
    from greenlab.core.store import errors

    kinds = [errors.StoreBusy, errors.StoreDamaged, errors.StoreForeign, errors.StoreNewer, errors.StoreReadOnly]
    kinds += [errors.StoreReplaced, errors.StoreWriteError]
    assert all(issubclass(kind, errors.StoreError) for kind in kinds)
    assert issubclass(errors.StoreError, GreenLabError) and not issubclass(errors.StoreError, sqlite3.Error)
    assert errors.StoreError("x").exit_code == 2
    assert store_module.StoreBusy is errors.StoreBusy and store_module.StoreReplaced is errors.StoreReplaced


def test_a_store_locked_past_the_budget_raises_store_busy(tmp_path, monkeypatch):
    from greenlab.core.store.errors import StoreBusy, translated
    from tests.test_reliability import _hold_lock

    path = tmp_path / "runs.db"
    store = Store(path)
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    monkeypatch.setenv("GREENLAB_STORE_BUSY_S", "0.3")
    holder = _hold_lock(path, 30)
    try:
        assert isinstance(translated(_sqlite_error(path, "insert into runs (model) values ('x')")), StoreBusy)
        with pytest.raises(StoreBusy, match="stayed locked by another process") as in_use:
            store.start_run({"model": "resnet18", "technique": "baseline"})
        assert not in_use.value.refused  # a grid keeps the record beside the store
        assert isinstance(in_use.value.__cause__, sqlite3.OperationalError)
    finally:
        holder.kill()
        holder.wait()
        store.close()


def test_a_damaged_store_raises_store_damaged(tmp_path):
    from greenlab.core.store.errors import StoreDamaged, translated
    from tests.test_hostile import _garble, _store_of_runs

    path = tmp_path / "runs.db"
    _store_of_runs(path)
    _garble(path)
    for opening in (lambda: Store(path), lambda: Store.reader(path, check=True)):
        with pytest.raises(StoreDamaged, match="is damaged") as refused:
            opening()
        assert refused.value.refused
    in_use = translated(sqlite3.DatabaseError("database disk image is malformed"))  # a page read mid-grid
    assert isinstance(in_use, StoreDamaged) and not in_use.refused


@pytest.mark.parametrize("kind", ["another application's", "not a database"])
def test_a_file_that_is_not_a_greenlab_store_raises_store_foreign(tmp_path, kind):
    from greenlab.core.store.errors import StoreForeign
    from tests.test_reliability import _foreign

    if kind == "not a database":
        path = tmp_path / "x.db"
        path.write_text("hello, not sqlite " * 100)
    else:
        path = _foreign(tmp_path)
    for opening in (lambda: Store(path), lambda: Store.reader(path)):
        with pytest.raises(StoreForeign, match="another application's|not a GreenLab run store") as refused:
            opening()
        assert refused.value.refused


def test_a_newer_store_raises_store_newer(tmp_path):
    from greenlab.core.store.errors import StoreNewer

    path = tmp_path / "runs.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for opening in (lambda: Store(path), lambda: Store.reader(path)):
        with pytest.raises(StoreNewer, match="newer than this greenlab"):
            opening()


def test_writing_a_store_that_cannot_be_written_raises_store_read_only(tmp_path):
    from greenlab.core.store.errors import StoreReadOnly, translated

    path = tmp_path / "runs.db"
    store = Store(path)
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    store.close()
    reader = Store.reader(path)
    with pytest.raises(StoreReadOnly, match="opened to read only"):
        reader.start_run({"model": "tinycnn", "technique": "baseline"})
    reader.close()
    said = _sqlite_error(path, "insert into runs (model) values ('x')", "?mode=ro")
    assert isinstance(translated(said), StoreReadOnly) and str(translated(said)) == str(said)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes a read-only file")
def test_a_read_only_store_file_is_refused_as_read_only(tmp_path):
    from greenlab.core.store.errors import StoreReadOnly

    path = tmp_path / "runs.db"
    store = Store(path)
    store.start_run({"model": "tinycnn", "technique": "baseline"})
    store.close()
    path.chmod(0o444)
    with pytest.raises(StoreReadOnly, match="is read-only") as refused:
        Store(path)
    assert refused.value.refused


def test_a_store_removed_while_open_raises_store_replaced(tmp_path):
    from greenlab.core.store.errors import StoreReplaced

    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline"})
    for suffix in ("", "-wal", "-shm"):
        os.replace(f"{path}{suffix}", tmp_path / f"moved.db{suffix}")
    with pytest.raises(StoreReplaced) as in_use:
        store.update_run(run_id, status="completed")
    assert not in_use.value.refused
    store.close()


def test_any_other_sqlite_failure_leaves_the_store_as_a_store_error(tmp_path):
    from greenlab.core.store.errors import StoreError

    store = Store(tmp_path / "runs.db")
    run_id = store.start_run({"model": "tinycnn", "technique": "baseline"})
    with pytest.raises(StoreError, match="no_such_column") as failed:
        store.update_run(run_id, no_such_column=1)
    assert type(failed.value) is StoreError and not failed.value.refused
    assert isinstance(failed.value.__cause__, sqlite3.OperationalError)  # SQLite's, kept as the cause only
    store.close()


def test_a_read_of_named_columns_reads_those_and_the_id_and_leaves_the_rest_at_their_defaults(tmp_path):
    path = tmp_path / "runs.db"
    store = Store(path)
    run_id = store.start_run(
        {"model": "tinycnn", "technique": "baseline", "settings": {"lr": 0.1}, "settings_key": "k"}
    )
    store.add_epoch({"run_id": run_id, "epoch": 1, "val_accuracy": 0.5, "energy_j": 10.0, "train_loss": 1.5})
    store.update_run(run_id, status="completed", energy_j=10.0, flags=["host_busy"], data_wait_s=0.5)
    store.close()
    reader = Store.reader(path)
    (row,) = reader.runs(columns=("status", "energy_j", "flags", "data_wait_s"))
    assert row == RunRow(id=run_id, status="completed", energy_j=10.0, flags=["host_busy"], data_wait_s=0.5)
    (whole,) = reader.runs()
    assert (whole.model, whole.settings, whole.settings_key) == ("tinycnn", {"lr": 0.1}, "k")
    assert reader.epochs_by_run(columns=("epoch", "val_accuracy")) == {run_id: [EpochRow(run_id, 1, val_accuracy=0.5)]}
    with pytest.raises(ValueError, match="no runs column 'energy'"):
        reader.runs(columns=("energy",))
    reader.close()
    # A store of an older schema, read without migrating, has no newer columns: they keep their defaults.
    with sqlite3.connect(path) as conn:
        conn.execute("alter table runs drop column data_wait_s")
    reader = Store.reader(path)
    (row,) = reader.runs(columns=("status", "data_wait_s"))
    assert (row.status, row.data_wait_s) == ("completed", None)
    reader.close()


STORED_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["1.5", "7", "1e400", "nan", "-inf", "abc", '{"a": 1}', "[1, 2]", "[]", "{}", "null", b"3"]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(set(RUN_COLUMNS) - {"id"})), STORED_VALUES, max_size=12))
def test_a_row_is_read_as_each_of_its_columns_reads_alone(values):
    """RunRow.from_stored keeps the values `_read` would keep without asking it: whatever SQLite hands
    back (a hand edit's text in a number's column, an integer in a real one, bytes), the row is the one
    the dataclass makes of each column read on its own."""
    values = {"id": 1, **values}
    read = {name: stored_rows._read(name, value) for name, value in values.items()}
    found = RunRow.from_stored({**values, "unknown_column": 1})
    assert repr(found.as_dict()) == repr(RunRow(**read).as_dict())  # repr: a NaN read from text is equal to none
