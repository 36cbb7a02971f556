"""The public schema of runs.db: its tables and columns in their documented order (docs/schema.md), the
migrations that bring an older store to today's, and the identity a GreenLab store carries.

A GreenLab store says what it is with SQLite's `PRAGMA application_id` (APPLICATION_ID), set when it is
created or migrated; `identify` reads a file without changing it and tells a GreenLab store (of any
version, the oldest ones had no id yet but a `runs` table of ours) from another application's database,
which GreenLab refuses rather than adopts.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from greenlab.core.store.errors import StoreDamaged, StoreForeign, StoreNewer, is_busy

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION = 6
# `superseded`: a completed run whose settings a forced rerun completed again; its data stays, its figures
# no longer count (a query over `status = 'completed'` sees each run key once).
STATUSES = ("running", "completed", "failed", "interrupted", "superseded")

# The public `runs` table. Column order is the documented order (docs/schema.md).
RUN_COLUMNS: dict[str, type] = {
    "id": int,
    "experiment": str,
    "model": str,
    "dataset": str,
    "technique": str,
    "settings": str,
    "settings_key": str,
    "seed": int,
    "repeat": int,
    "status": str,
    "error": str,
    "started_at": str,
    "finished_at": str,
    "duration_s": float,
    "train_s": float,
    "device": str,
    "params_total": int,
    "params_nonzero": int,
    "model_bytes": int,
    "flops_step": float,
    "params_total_before": int,
    "params_nonzero_before": int,
    "model_bytes_before": int,
    "flops_step_before": float,
    "val_accuracy": float,
    "val_f1": float,
    "energy_j": float,
    "energy_kwh": float,
    "energy_measured_j": float,
    "energy_estimated_j": float,
    "energy_net_j": float,
    "idle_w": float,
    "energy_training_j": float,
    "energy_gpu_j": float,
    "energy_gpu_method": str,
    "energy_cpu_j": float,
    "energy_cpu_method": str,
    "energy_dram_j": float,
    "energy_dram_method": str,
    "co2e_g": float,
    "cost": float,
    "currency": str,
    "carbon_g_per_kwh": float,
    "pue": float,
    "sampler_hz": float,
    "sampler_cpu_s": float,
    "samples_dropped": int,
    "capacity_bits": int,
    "capacity_bytes": float,
    "train_dtype": str,
    "mantissa_bits_kept": int,
    "compression": str,
    "warnings": str,
    "flags": str,
    "meters": str,
    "greenlab_version": str,
    "host": str,
    "supervisor_pid": int,
    # Schema 2
    "conditions_key": str,
    "compute_dtype": str,
    "weights_dtype": str,
    "price_per_kwh": float,
    "grid_position": int,
    # Energy to accuracy (greenlab.core.report.energy_to_target): the target and the energy until first reaching it.
    "target_accuracy": float,
    "energy_to_target_j": float,
    # Where it ran (greenlab.core.grid.ray_driver): the executor, the node, the runs that shared the node, the attempts.
    "executor": str,
    "node": str,
    "concurrent_runs": str,
    "attempts": int,
    # Schema 3: the completed forced rerun that replaced this run (its status then `superseded`).
    "superseded_by": int,
    # Schema 4: the analysis plan the run's grid declared before it ran (the `plans` table).
    "plan_id": int,
    # Schema 6: the float32 arithmetic in force (IEEE or TF32), whether bfloat16 was native on the device,
    # and how long the training loop waited for data (an input-bound run measures its data loader).
    "fp32_precision": str,
    "bf16_native": int,
    "data_wait_s": float,
}
EPOCH_COLUMNS: dict[str, type] = {
    "run_id": int,
    "epoch": int,
    "train_loss": float,
    "val_accuracy": float,
    "val_f1": float,
    "val_loss": float,
    "duration_s": float,
    "train_s": float,
    "eval_s": float,
    "energy_j": float,
    "train_energy_j": float,
    "eval_energy_j": float,
    # Schema 2
    "train_window_s": float,
    "eval_window_s": float,
    "flags": str,
    # Schema 6: each phase's wait for data, and how far its energy may be off from how it was read.
    "train_data_wait_s": float,
    "eval_data_wait_s": float,
    "train_uncertainty_j": float,
    "eval_uncertainty_j": float,
}
SAMPLE_COLUMNS: dict[str, type] = {"run_id": int, "t_s": float, "component": str, "watts": float}
COMPONENT_COLUMNS: dict[str, type] = {
    "run_id": int,
    "component": str,
    "energy_j": float,
    "method": str,
    "idle_w": float,
    "net_energy_j": float,
    "inputs": str,
    "flags": str,
}
CAPACITY_COLUMNS: dict[str, type] = {"run_id": int, "bits": int, "val_accuracy": float}
# Schema 4: a grid's analysis plan (greenlab.core.plan.analysis), stored once per distinct declaration.
PLAN_COLUMNS: dict[str, type] = {
    "id": int,
    "digest": str,
    "created_at": str,
    "source": str,
    "analysis": str,
    "cells": str,
    "greenlab_version": str,
}


def _migrate_1(db: sqlite_utils.Database) -> None:
    db.table("runs").create(RUN_COLUMNS, pk="id", not_null={"model", "technique", "status"}, if_not_exists=True)
    db.table("runs").create_index(["settings_key", "status"], if_not_exists=True)
    db.table("epochs").create(
        EPOCH_COLUMNS, pk=("run_id", "epoch"), foreign_keys=[("run_id", "runs", "id")], if_not_exists=True
    )
    db.table("samples").create(SAMPLE_COLUMNS, foreign_keys=[("run_id", "runs", "id")], if_not_exists=True)
    db.table("samples").create_index(["run_id", "t_s"], if_not_exists=True)
    db.table("energy_components").create(
        COMPONENT_COLUMNS, pk=("run_id", "component"), foreign_keys=[("run_id", "runs", "id")], if_not_exists=True
    )
    db.table("capacity").create(
        CAPACITY_COLUMNS, pk=("run_id", "bits"), foreign_keys=[("run_id", "runs", "id")], if_not_exists=True
    )


_COLUMNS_2 = {
    "runs": (
        "conditions_key",
        "compute_dtype",
        "weights_dtype",
        "price_per_kwh",
        "grid_position",
        "target_accuracy",
        "energy_to_target_j",
        "executor",
        "node",
        "concurrent_runs",
        "attempts",
    ),
    "epochs": ("train_window_s", "eval_window_s", "flags"),
}


def _add_columns(db: sqlite_utils.Database, table: str, names: tuple[str, ...], types: dict[str, type]) -> None:
    present = set(db[table].columns_dict)
    for name in names:
        if name not in present:
            db.table(table).add_column(name, types[name])


def _migrate_2(db: sqlite_utils.Database) -> None:
    """Run keys that ignore `repeats` and the accounting inputs; the conditions key that chooses a
    technique's baselines; what the run computed in and stored; the run's own seed; its grid position;
    window lengths; energy to a target accuracy; where each run ran (every run before this was local)."""
    from greenlab.core.plan.config import LEGACY_KEY_EPOCH, conditions_key, run_key

    _add_columns(db, "runs", _COLUMNS_2["runs"], RUN_COLUMNS)
    _add_columns(db, "epochs", _COLUMNS_2["epochs"], EPOCH_COLUMNS)
    db.table("runs").create_index(["conditions_key", "technique", "status"], if_not_exists=True)
    for row in list(db.query("select id, model, technique, repeat, seed, settings, train_dtype, host from runs")):
        try:
            settings = json.loads(row["settings"] or "{}")
        except ValueError:
            continue
        techniques = settings.pop("techniques", {}) or {}
        repeat = row["repeat"] or 0
        # Runs of schema 1 keep keys of their own epoch: their stego truncation chopped toward zero, their
        # repeats shared one data order, fake-text differed and the CPU estimate's rule was another. They are
        # never skipped as done for, or compared with, the runs of today.
        epoch = LEGACY_KEY_EPOCH
        db.table("runs").update(
            row["id"],
            {
                "settings_key": run_key(row["model"], row["technique"], repeat, settings, techniques, epoch=epoch),
                "conditions_key": conditions_key(row["model"], settings, epoch=epoch),
                # Before schema 2 the stored seed was the grid's; initialisation already used seed + repeat.
                "seed": int(settings.get("seed", row["seed"] or 0)) + repeat,
                "price_per_kwh": settings.get("price_per_kwh"),
                "compute_dtype": row["train_dtype"],
                "executor": "local",
                "node": hostname_of(row["host"]),
                "concurrent_runs": "[]",
                "attempts": 1,
            },
        )


def _migrate_3(db: sqlite_utils.Database) -> None:
    """`superseded_by`; of the completed runs that share a run key (forced reruns), all but the latest are
    marked superseded by it, as a forced rerun now does when it completes."""
    _add_columns(db, "runs", ("superseded_by",), RUN_COLUMNS)
    supersede_all(db)


def supersede_all(db: sqlite_utils.Database, settings_key: str | None = None) -> None:
    """Of the completed runs of each key (or of `settings_key` only), all but the latest (highest id, as the
    report counts them) become superseded by it, whichever finished last."""
    only = "" if settings_key is None else " and settings_key = ?"
    db.execute(
        "update runs set status = 'superseded', superseded_by = (select max(l.id) from runs l where "
        "l.settings_key = runs.settings_key and l.status = 'completed') where status = 'completed' and "
        "id < (select max(l.id) from runs l where l.settings_key = runs.settings_key and "
        f"l.status = 'completed'){only}",
        [] if settings_key is None else [settings_key],
    )


def hostname_of(host: str | None) -> str | None:
    try:
        return json.loads(host or "{}").get("hostname")
    except (ValueError, AttributeError):
        return None


def _migrate_4(db: sqlite_utils.Database) -> None:
    """Analysis plans: the `plans` table and each run's `plan_id`. Runs stored before have none and are
    judged under an implied plan (greenlab.core.plan.analysis.implied), labelled as such."""
    db.table("plans").create(PLAN_COLUMNS, pk="id", not_null={"digest"}, if_not_exists=True)
    db.table("plans").create_index(["digest"], unique=True, if_not_exists=True)
    _add_columns(db, "runs", ("plan_id",), RUN_COLUMNS)


_RUNS_ID = re.compile(r'(["\[`]?id["\]`]?\s+INTEGER\s+PRIMARY\s+KEY)(?!\s+AUTOINCREMENT)', re.IGNORECASE)


def _migrate_5(db: sqlite_utils.Database) -> None:
    """Run ids are never reused: `runs.id` becomes AUTOINCREMENT, so a run stored after the newest one was
    deleted gets a new id, not the deleted one's (logs, pending records and notes name runs by id). SQLite
    cannot add it to a column, so the table is rebuilt with its rows and indexes, inside the migration's
    transaction."""
    conn = db.conn
    sql = conn.execute("select sql from sqlite_master where type = 'table' and name = 'runs'").fetchone()[0]
    if not _RUNS_ID.search(sql):
        return  # created with it already
    rebuilt = _RUNS_ID.sub(r"\1 AUTOINCREMENT", sql, count=1)
    rebuilt = re.sub(r'^CREATE TABLE\s+("runs"|\[runs\]|`runs`|runs)', 'CREATE TABLE "runs_rebuilt"', rebuilt)
    indexes = [
        row[0]
        for row in conn.execute(
            "select sql from sqlite_master where type = 'index' and tbl_name = 'runs' and sql is not null"
        )
    ]
    columns = ", ".join(f'"{row[1]}"' for row in conn.execute("PRAGMA table_info(runs)"))
    conn.execute(rebuilt)
    conn.execute(f'insert into "runs_rebuilt" ({columns}) select {columns} from runs')
    conn.execute("drop table runs")
    conn.execute('alter table "runs_rebuilt" rename to "runs"')
    for index in indexes:
        conn.execute(index)


def _migrate_6(db: sqlite_utils.Database) -> None:
    """Runs ready for a GPU: the float32 arithmetic in force (`fp32_precision`), whether bfloat16 was native
    (`bf16_native`), the training loop's wait for data (`data_wait_s`, and per phase in `epochs`), and each
    phase's energy uncertainty. Runs stored before have none of them (NULL): they were not recorded."""
    _add_columns(db, "runs", ("fp32_precision", "bf16_native", "data_wait_s"), RUN_COLUMNS)
    _add_columns(
        db,
        "epochs",
        ("train_data_wait_s", "eval_data_wait_s", "train_uncertainty_j", "eval_uncertainty_j"),
        EPOCH_COLUMNS,
    )


# Migration n brings a store from version n-1 to n. Append, never edit a released one.
MIGRATIONS = [_migrate_1, _migrate_2, _migrate_3, _migrate_4, _migrate_5, _migrate_6]


# 'GrLb': what `PRAGMA application_id` holds in a GreenLab store (`file` names it too, for the curious).
APPLICATION_ID = 0x47724C62


def check_version(path: Path, version: int) -> None:
    """Refuse a store written by a newer GreenLab: its schema may mean what this one cannot read."""
    if version > SCHEMA_VERSION:
        raise StoreNewer(
            f"{path} has schema version {version}, newer than this greenlab "
            f"({SCHEMA_VERSION}) understands; upgrade greenlab (pip install -U greenlab)"
        )


# The columns of `runs` since the first schema: an unmarked file (application id 0) is a GreenLab store
# from before application ids only if its runs table has all of them.
LEGACY_RUNS_SIGNATURE = frozenset(
    {"id", "experiment", "model", "dataset", "technique", "settings", "settings_key", "seed", "repeat", "status"}
)


def damaged(path: Path, found: list[str]) -> StoreDamaged:
    """The refusal of a damaged store (SQLite's quick_check or integrity_check found `found`): what is wrong,
    and how to get back what can be read; nothing is written to it."""
    lines = [line.strip() for text in found for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("*** in database")] or ["unknown damage"]
    first = lines[0] if len(lines[0]) <= 120 else lines[0][:119] + "…"
    more = f" and {len(lines) - 1} more problem{'s' * (len(lines) > 2)}" if len(lines) > 1 else ""
    return StoreDamaged(
        f"the run store {path} is damaged ({first}{more}); GreenLab will not write to it: recover what it "
        f'holds with sqlite3 {path} ".recover" | sqlite3 {path.with_name(path.stem + "-recovered.db")}, then '
        "use that file (--db) or move it into place",
        refused=True,
    )


def identify(path: Path) -> None:
    """Refuse, without writing a byte, a file that is not a GreenLab store: a database of another
    application (tables of its own, another application id) or not a database at all. An empty file, a
    database without tables, or a GreenLab store of any version (an older one has our `runs` table but no
    id yet) passes; a newer GreenLab's store is refused too (check_version)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    # immutable=1 where no -wal file waits beside it: nothing writes while we read, so SQLite takes no lock
    # and leaves no -shm or -wal behind (mode=ro alone creates both for a WAL-mode file and cannot remove
    # them). A -wal there means the file is in use or was left unclean: read it with it.
    # With a -wal but no -shm (another program's file, left unclean), mode=ro would create a 32 KB -shm: the
    # file itself is read instead (its tables are there unless only its log has ever been written).
    log_only = path.with_name(path.name + "-wal").exists() and not path.with_name(path.name + "-shm").exists()
    in_use = path.with_name(path.name + "-wal").exists() and not log_only
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + ("?mode=ro" if in_use else "?immutable=1"), uri=True)
        try:
            application_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            tables = sorted(r[0] for r in conn.execute("select name from sqlite_master where type = 'table'"))
            runs_columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")} if "runs" in tables else set()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise  # another process holds the file (locking_mode=EXCLUSIVE): a lock to wait for, not a verdict
        if "malformed" in str(exc):
            raise damaged(path, [str(exc)]) from None
        raise StoreForeign(
            f"{path} is not a GreenLab run store ({exc}); pass --db (or set GREENLAB_DB) to a "
            "runs.db a grid wrote, or to a new file"
        ) from None
    if log_only and not tables and application_id == 0:
        raise StoreForeign(
            f"{path} keeps its tables only in its -wal log, with no -shm beside it (left unclean by the program "
            "that wrote it); GreenLab does not open it so (SQLite would write a -shm beside it): open it once "
            "with that program, or pass --db (or set GREENLAB_DB) to another file"
        )
    # A store from before application ids has our `runs` table with every column the first schema had: a
    # `runs(id, status)` of some other program is not enough to adopt the file.
    ours = application_id == APPLICATION_ID or (application_id == 0 and runs_columns >= LEGACY_RUNS_SIGNATURE)
    if tables and not ours:
        shown = ", ".join(tables[:6]) + (f" and {len(tables) - 6} more" if len(tables) > 6 else "")
        if application_id:
            kind = f"application id {application_id:#x}"
        elif runs_columns:
            missing = ", ".join(sorted(LEGACY_RUNS_SIGNATURE - runs_columns))
            kind = f"a runs table without GreenLab's columns {missing}"
        else:
            kind = "no GreenLab runs table"
        raise StoreForeign(
            f"{path} is another application's database (tables {shown}; {kind}); GreenLab "
            "leaves it as it is: pass --db (or set GREENLAB_DB) to a runs.db a grid wrote, or "
            "to a new file"
        )
    check_version(path, version)
