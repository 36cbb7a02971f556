"""A whole store read at one moment, without writing it: what `greenlab report` reads.

A read-only connection (read-write where the file may be written, so SQLite can tidy its -wal/-shm files on
close; only SELECTs are issued). The file is identified first (greenlab.core.store.schema): another
application's database or a newer GreenLab's store is refused, as the Store refuses it.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenlab.core.errors import GreenLabError
from greenlab.core.plan.analysis import Plan
from greenlab.core.store.rows import RunRow
from greenlab.core.store.schema import identify


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
    identify(path)
    try:
        uri = path.resolve().as_uri()
        conn = sqlite3.connect(uri + ("?mode=rw" if os.access(path, os.W_OK) else "?mode=ro"), uri=True)
        conn.row_factory = sqlite3.Row
        try:
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
