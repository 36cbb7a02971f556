"""The run store: data/runs.db through sqlite-utils, in WAL mode, with a versioned public schema.

Only the supervising process writes here. A run row is inserted when the run starts (status `running`)
and completed when it ends, so a killed supervisor leaves evidence; such rows are marked `interrupted`
the next time the store is opened and their supervisor is gone. Every write is its own transaction, so a
crash can lose at most the write in flight, never corrupt what is stored.

The file is created by the first write, not by opening: a grid stopped before its first run (waiting for
the host lock, say) leaves no store behind. A path the user named (--db, $GREENLAB_DB) must be in a folder
that exists; only the default's folder, data/, is created.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from greenlab import __version__
from greenlab.core.errors import GreenLabError
from greenlab.core.plan.analysis import Plan
from greenlab.core.store.rows import RunRow

DEFAULT_DB = Path("data") / "runs.db"
SCHEMA_VERSION = 4
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
                "node": _hostname_of(row["host"]),
                "concurrent_runs": "[]",
                "attempts": 1,
            },
        )


def _migrate_3(db: sqlite_utils.Database) -> None:
    """`superseded_by`; of the completed runs that share a run key (forced reruns), all but the latest are
    marked superseded by it, as a forced rerun now does when it completes."""
    _add_columns(db, "runs", ("superseded_by",), RUN_COLUMNS)
    _supersede_all(db)


def _supersede_all(db: sqlite_utils.Database, settings_key: str | None = None) -> None:
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


def _hostname_of(host: str | None) -> str | None:
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


# Migration n brings a store from version n-1 to n. Append, never edit a released one.
MIGRATIONS = [_migrate_1, _migrate_2, _migrate_3, _migrate_4]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def host_facts() -> dict[str, Any]:
    import psutil

    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
    }


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    return Path(path or os.environ.get("GREENLAB_DB") or DEFAULT_DB)


def _named_by(path: str | os.PathLike[str] | None) -> str | None:
    """Who named the store: "--db", "GREENLAB_DB", or None for the default."""
    if path:
        return "--db"
    return "GREENLAB_DB" if os.environ.get("GREENLAB_DB") else None


def check_location(path: str | os.PathLike[str] | None) -> Path:
    """The store's path, refused (GreenLabError, nothing created) when it cannot hold a store: a folder,
    or a file in a folder that does not exist or cannot be written. The default's folder may be missing:
    GreenLab creates data/ itself; a folder the user named is never created (a typo would grow a tree)."""
    resolved = resolve_path(path)
    named_by = _named_by(path)
    shown = {"--db": f"--db {resolved}", "GREENLAB_DB": f"GREENLAB_DB={resolved}"}.get(named_by or "", str(resolved))
    other = "set GREENLAB_DB to another path" if named_by == "GREENLAB_DB" else "choose another --db"
    if resolved.is_dir():
        raise GreenLabError(f"{shown} is a folder; name a file in it, e.g. {resolved / 'runs.db'}")
    folder = resolved.parent
    if named_by is None and not folder.exists():
        return resolved
    if not folder.exists():
        raise GreenLabError(f"{shown}: folder {folder} does not exist; create it or {other}")
    if not folder.is_dir():
        raise GreenLabError(f"{shown}: {folder} is a file, not a folder; {other}")
    if not resolved.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise GreenLabError(f"{shown}: folder {folder} is not writable; {other}")
    return resolved


def check_version(path: Path, version: int) -> None:
    """Refuse a store written by a newer GreenLab: its schema may mean what this one cannot read."""
    if version > SCHEMA_VERSION:
        raise GreenLabError(
            f"{path} has schema version {version}, newer than this greenlab "
            f"({SCHEMA_VERSION}) understands; upgrade greenlab (pip install -U greenlab)"
        )


@dataclass(frozen=True)
class Snapshot:
    """A store as read at one moment, without writing it: every run, every run's epochs, every plan."""

    runs: list[RunRow]
    epochs: dict[int, list[dict[str, Any]]]
    plans: dict[int, Plan]


def read_snapshot(path: Path) -> Snapshot:
    """Read a whole store without changing it (a report never writes runs.db); GreenLabError when it is
    missing, unreadable, or newer than this GreenLab."""
    if not path.is_file():
        raise GreenLabError(
            f"no run store at {path}; run a grid first (greenlab --headless experiments.toml) "
            "or pass --db PATH (or set GREENLAB_DB)"
        )
    try:
        # Only SELECTs are issued. A read-write connection lets SQLite tidy its -wal/-shm files on close;
        # a store we may not write is opened read-only instead.
        uri = path.resolve().as_uri()
        conn = sqlite3.connect(uri + ("?mode=rw" if os.access(path, os.W_OK) else "?mode=ro"), uri=True)
        conn.row_factory = sqlite3.Row
        try:
            check_version(path, int(conn.execute("PRAGMA user_version").fetchone()[0]))
            runs = [RunRow.from_stored(dict(r)) for r in conn.execute("select * from runs order by id")]
            epochs: dict[int, list[dict[str, Any]]] = {}
            for row in conn.execute("select * from epochs order by run_id, epoch"):
                epochs.setdefault(row["run_id"], []).append(dict(row))
            tables = {r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")}
            plans = (
                {int(r["id"]): Plan.from_stored(dict(r)) for r in conn.execute("select * from plans")}
                if "plans" in tables
                else {}
            )
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise GreenLabError(
            f"cannot read {path} as a GreenLab run store ({exc}); pass --db with the runs.db a grid wrote"
        ) from None
    return Snapshot(runs, epochs, plans)


class Store:
    """Reads and writes runs.db; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = check_location(path)
        self._db: sqlite_utils.Database | None = None
        self._plan: Plan | None = None  # declared by the grid; recorded with its first run
        self._plan_id: int | None = None
        if self.path.exists():  # a store already there is opened (and migrated) now: its errors surface here
            self._open()

    def _open(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # only the default's: check_location refused others
            db = sqlite_utils.Database(self.path)
            self._db = db
            db.execute("PRAGMA busy_timeout = 5000")
            db.enable_wal()
            self.migrate()
            self._recover_orphans()
        except BaseException as exc:
            # Never keep a connection that failed half-way (a newer schema, a locked file): the next use
            # would skip the checks above.
            self._db = None
            if db is not None:
                db.close()
            if isinstance(exc, (sqlite3.DatabaseError, OSError)):
                raise GreenLabError(
                    f"cannot use the run store {self.path} ({exc}); pass --db (or set "
                    "GREENLAB_DB) to a writable .db file path, or move that file away"
                ) from None
            raise
        return db

    @property
    def db(self) -> sqlite_utils.Database:
        """The connection; the first use creates the file."""
        return self._db if self._db is not None else self._open()

    def _query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read; none while the file does not exist (reading a store never creates it)."""
        if self._db is None and not self.path.exists():
            return []
        return list(self.db.query(sql, params or []))

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Bring the store to SCHEMA_VERSION in one write transaction, taken before the version is read: two
        processes opening a new file at once (a TUI and its grid) migrate it once, one after the other."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self.version
            check_version(self.path, version)
            for number in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[number - 1](self.db)
                self.db.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # a migration cut short leaves the store as it was
                conn.execute("ROLLBACK")
            raise

    def _recover_orphans(self) -> None:
        rows = self._query("select id, supervisor_pid from runs where status = 'running'")
        for row in rows:
            if row["supervisor_pid"] != os.getpid() and not _pid_alive(row["supervisor_pid"]):
                self.update_run(
                    row["id"],
                    status="interrupted",
                    finished_at=now_iso(),
                    error="the supervising process ended before the run finished",
                )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    # -- writes ---------------------------------------------------------------------------------------
    def declare_plan(self, plan: Plan | None) -> None:
        """The analysis plan of the grid about to run: recorded with its first run's row (in the same
        transaction), and every run this store starts from now on carries its id. A grid stopped before its
        first run leaves neither row nor file."""
        self._plan, self._plan_id = plan, None

    def _record_plan(self) -> int | None:
        """The declared plan's id, inserting it unless an identical declaration is already stored."""
        if self._plan is None:
            return None
        if self._plan_id is None:
            digest = self._plan.digest()
            found = self.db.execute("select id from plans where digest = ?", [digest]).fetchone()
            if found is not None:
                self._plan_id = int(found[0])
            else:
                self._plan_id = _pk(
                    self.db.table("plans")
                    .insert(
                        {
                            "digest": digest,
                            "created_at": now_iso(),
                            "source": self._plan.source,
                            "analysis": json.dumps(self._plan.analysis.to_json()),
                            "cells": json.dumps(self._plan.cells_json()),
                            "greenlab_version": __version__,
                        }
                    )
                    .last_pk
                )
        return self._plan_id

    def start_run(self, values: dict[str, Any]) -> int:
        """Insert a run's row as `running`; by default a local run of this host (a Ray driver says where)."""
        row = {
            "status": "running",
            "started_at": now_iso(),
            "greenlab_version": __version__,
            "host": json.dumps(host_facts()),
            "supervisor_pid": os.getpid(),
            "executor": "local",
            "node": socket.gethostname(),
            "concurrent_runs": [],
            "attempts": 1,
            **values,
        }
        with self.db.conn:
            plan_id = self._record_plan()
            if plan_id is not None and row.get("plan_id") is None:
                row["plan_id"] = plan_id
            return _pk(self.db.table("runs").insert(_encode(row)).last_pk)

    def restart_run(self, run_id: int, values: dict[str, Any]) -> None:
        """A run retried in its own row (its executor died under the first attempt): the attempt's partial
        epochs, samples, components and capacity go, the row starts again as `running`."""
        with self.db.conn:
            for table in ("epochs", "samples", "energy_components", "capacity"):
                self.db.execute(f"delete from {table} where run_id = ?", [run_id])
            self.db.table("runs").update(
                run_id,
                _encode(
                    {
                        "status": "running",
                        "error": None,
                        "started_at": now_iso(),
                        "finished_at": None,
                        "supervisor_pid": os.getpid(),
                        **values,
                    }
                ),
            )

    def update_run(self, run_id: int, **values: Any) -> None:
        with self.db.conn:
            self.db.table("runs").update(run_id, _encode(values))
            if values.get("status") == "completed":
                self._supersede_earlier(run_id)

    def _supersede_earlier(self, run_id: int) -> None:
        """A completed run and the other completed runs of its key (a forced rerun): all but the latest become
        `superseded`, in the same transaction, so no moment shows two as completed."""
        row = self.db.execute("select settings_key from runs where id = ?", [run_id]).fetchone()
        if row is not None and row[0] is not None:
            _supersede_all(self.db, row[0])

    def add_epoch(self, row: dict[str, Any]) -> None:
        with self.db.conn:
            self.db.table("epochs").upsert(_encode(row), pk=("run_id", "epoch"))

    def add_samples(self, run_id: int, rows: Iterable[tuple[float, str, float]]) -> None:
        batch = [{"run_id": run_id, "t_s": round(t, 4), "component": c, "watts": round(w, 4)} for t, c, w in rows]
        if batch:
            with self.db.conn:
                self.db.table("samples").insert_all(batch, batch_size=1000)

    def set_components(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        with self.db.conn:
            self.db.table("energy_components").upsert_all(
                [_encode({"run_id": run_id, **r}) for r in rows], pk=("run_id", "component")
            )

    def delete_samples(self, run_id: int, components: Iterable[str]) -> None:
        """Drop a run's samples of some components (a GPU metered but not used by the run)."""
        names = list(components)
        if names:
            with self.db.conn:
                self.db.execute(
                    f"delete from samples where run_id = ? and component in ({', '.join('?' for _ in names)})",
                    [run_id, *names],
                )

    def delete_runs(self, run_ids: list[int]) -> int:
        """Delete runs with their epochs, samples, energy components and capacity curves; returns how many."""
        if not run_ids:
            return 0
        marks = ", ".join("?" for _ in run_ids)
        with self.db.conn:
            for table in ("epochs", "samples", "energy_components", "capacity"):
                self.db.execute(f"delete from {table} where run_id in ({marks})", run_ids)
            deleted = self.db.execute(f"delete from runs where id in ({marks})", run_ids).rowcount
            # The runs a deleted rerun had replaced count again: the latest of each key completed once more.
            self.db.execute(
                f"update runs set status = 'completed', superseded_by = null where superseded_by in ({marks})", run_ids
            )
            _supersede_all(self.db)
            return deleted

    def set_energy_to_target(self, computed: dict[int, tuple[float, float | None]]) -> int:
        """Store run id -> (target accuracy, energy to target) in one transaction; how many runs were written."""
        if not computed:
            return 0  # nothing to write: an empty store stays uncreated
        with self.db.atomic():
            for run_id, (target, energy) in computed.items():
                self.db.table("runs").update(run_id, {"target_accuracy": target, "energy_to_target_j": energy})
        return len(computed)

    def set_capacity(self, run_id: int, curve: list[tuple[int, float]]) -> None:
        with self.db.conn:
            self.db.table("capacity").upsert_all(
                [{"run_id": run_id, "bits": int(b), "val_accuracy": a} for b, a in curve], pk=("run_id", "bits")
            )

    def write_record(
        self,
        run_id: int,
        values: dict[str, Any],
        *,
        epochs: Iterable[dict[str, Any]] = (),
        samples: Iterable[tuple[float, str, float]] = (),
        components: Iterable[dict[str, Any]] = (),
        capacity: Iterable[tuple[int, float]] = (),
    ) -> None:
        """A run's whole record at once (one returned by a Ray node): its epochs, samples, components and
        capacity curve, replacing any it had, so a record applied twice is still stored once; then its
        row's values, last, so a driver killed half-way leaves a `running` row (later `interrupted`)."""
        with self.db.conn:
            for table in ("epochs", "samples", "energy_components", "capacity"):
                self.db.execute(f"delete from {table} where run_id = ?", [run_id])
            rows = [_encode({**row, "run_id": run_id}) for row in epochs]
            if rows:
                self.db.table("epochs").insert_all(rows, pk=("run_id", "epoch"), replace=True)
            points = [
                {"run_id": run_id, "t_s": round(t, 4), "component": c, "watts": round(w, 4)} for t, c, w in samples
            ]
            if points:
                self.db.table("samples").insert_all(points, batch_size=1000)
            parts = [_encode({**row, "run_id": run_id}) for row in components]
            if parts:
                self.db.table("energy_components").insert_all(parts, pk=("run_id", "component"), replace=True)
            curve = [{"run_id": run_id, "bits": int(b), "val_accuracy": a} for b, a in capacity]
            if curve:
                self.db.table("capacity").insert_all(curve, pk=("run_id", "bits"), replace=True)
            if values:
                self.db.table("runs").update(run_id, _encode(values))
                if values.get("status") == "completed":
                    self._supersede_earlier(run_id)

    # -- reads ----------------------------------------------------------------------------------------
    def completed_keys(self) -> set[str]:
        return set(self.completed_by_key())

    def completed_by_key(self) -> dict[str, RunRow]:
        """The latest completed run of each run key (what a rerun skips, or recomputes the accounting of)."""
        return {row.settings_key: row for row in self.completed_runs() if row.settings_key is not None}

    def running_elsewhere(self, settings_key: str) -> int | None:
        """The pid of another live supervisor running these settings in this store now, or None.

        Called under the host's measurement lock: a plain run of this host marked `running` by another
        pid cannot be running now (its supervisor would hold the lock), whatever that pid is today."""
        here = socket.gethostname()
        for row in self._query(
            "select supervisor_pid, host, executor from runs where settings_key = ? and status = 'running'",
            [settings_key],
        ):
            pid = row["supervisor_pid"]
            if row["executor"] != "ray" and _hostname_of(row["host"]) == here:
                continue
            if pid != os.getpid() and _pid_alive(pid):
                return int(pid)
        return None

    def run(self, run_id: int) -> RunRow | None:
        rows = self._query("select * from runs where id = ?", [run_id])
        return RunRow.from_stored(rows[0]) if rows else None

    def runs(self) -> list[RunRow]:
        """Every run, in id order (the order they started)."""
        return [RunRow.from_stored(r) for r in self._query("select * from runs order by id")]

    def completed_runs(self) -> list[RunRow]:
        """Every completed run (a superseded one is not), in id order."""
        return [RunRow.from_stored(r) for r in self._query("select * from runs where status = 'completed' order by id")]

    def runs_of_experiment(self, experiment: str) -> list[RunRow]:
        """Every run of one experiment, whatever its status, in id order."""
        return [
            RunRow.from_stored(r)
            for r in self._query("select * from runs where experiment = ? order by id", [experiment])
        ]

    def completed_runs_of_grid(self, settings_keys: Iterable[str]) -> list[RunRow]:
        """The latest completed run of each of these run keys (a grid's entries, those skipped included)."""
        wanted = set(settings_keys)
        return [row for key, row in self.completed_by_key().items() if key in wanted]

    def epochs(self, run_id: int) -> list[dict[str, Any]]:
        return self._query("select * from epochs where run_id = ? order by epoch", [run_id])

    def last_epoch_accuracies(self) -> dict[int, float]:
        """Each run's validation accuracy at its last stored epoch (a stopped run's partial result)."""
        rows = self._query(
            "select run_id, val_accuracy from epochs e where epoch = "
            "(select max(epoch) from epochs where run_id = e.run_id)"
        )
        return {row["run_id"]: row["val_accuracy"] for row in rows if row["val_accuracy"] is not None}

    def samples(self, run_id: int) -> list[dict[str, Any]]:
        return self._query("select * from samples where run_id = ? order by t_s", [run_id])

    def plans(self) -> dict[int, Plan]:
        """Every stored analysis plan, by id."""
        if self._db is None and not self.path.exists():
            return {}
        if "plans" not in self.db.table_names():
            return {}
        return {int(row["id"]): Plan.from_stored(row) for row in self._query("select * from plans order by id")}

    def components(self, run_id: int) -> list[dict[str, Any]]:
        return self._query("select * from energy_components where run_id = ? order by component", [run_id])


def _pk(value: Any) -> int:
    """The id sqlite gave an inserted row (sqlite-utils types it as optional)."""
    if value is None:
        raise GreenLabError("the run store gave no id to an inserted row; the store file may be damaged")
    return int(value)


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-encode dict and list values for TEXT columns."""
    return {k: json.dumps(v) if isinstance(v, (dict, list, tuple)) else v for k, v in values.items()}
