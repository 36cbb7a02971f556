"""A run's record the store could not take, kept beside the store until it can.

When the store stays unwritable past the busy budget (another process holding its lock for minutes, a
full disk), a finished run's writes that did not reach it — its epochs, samples, energy components and
final row — are saved to the pending folder beside the store (`runs.db.pending/`, one JSON file a run,
written whole and renamed into place). The next time any GreenLab opens the store, it replays each file in
its own transaction and removes it; a file that cannot be replayed yet stays for the next open. So a
finished run is never lost to a busy or full store, and a `running` row with a pending record is completed
by it, not marked interrupted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenlab.core.store import writes
from greenlab.core.store.writes import RowWrite

if TYPE_CHECKING:
    from greenlab.core.store.database import Store

SUFFIX = ".pending"
NO_ROW_YET = 0  # the run id a kept record's writes carry while its row is not in the store (ids start at 1)


class RecordKept(Exception):
    """The store could not take a finished run's record, which was kept in the pending folder instead."""

    def __init__(self, run_id: int | None, path: Path, cause: BaseException, label: str = "") -> None:
        self.run_id, self.path, self.cause = run_id, path, cause
        whose = f"run {run_id}'s record" if run_id is not None else f"the record of {label or 'a run'} (no row yet)"
        super().__init__(
            f"the run store cannot be written ({type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}); "
            f"{whose} is kept in {path} and goes into the store the next time it is opened"
        )


def folder(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + SUFFIX)


def save(store_path: Path, run_id: int | None, pending: list[RowWrite], start: dict[str, Any] | None = None) -> Path:
    """Keep `pending` (the writes of run `run_id` the store did not take, in order); the file's path. A run
    whose row could not even be inserted has no id yet: `start` is its row's first values, and its writes
    name run 0 (NO_ROW_YET) until the import inserts the row and gives them its id."""
    target_folder = folder(store_path)
    target_folder.mkdir(exist_ok=True)
    record: dict[str, Any] = {"run_id": run_id, "writes": [writes.to_json(w) for w in pending]}
    if run_id is None:
        record["start"] = start or {}
    return _write(target_folder, record, run_id if run_id is not None else NO_ROW_YET)


def _write(target_folder: Path, record: dict[str, Any], run_id: int) -> Path:
    """The record written whole and renamed into place: a reader sees all of it or none."""
    handle, temporary = tempfile.mkstemp(dir=target_folder, prefix=f".run-{run_id}-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(record, stream)
        stream.flush()
        os.fsync(stream.fileno())
    final = target_folder / f"run-{run_id}-{os.getpid()}-{Path(temporary).stem.rsplit('-', 1)[-1]}.json"
    os.replace(temporary, final)
    return final


def pending(store_path: Path) -> list[Path]:
    """The records waiting for the store, oldest first."""
    kept = folder(store_path)
    if not kept.is_dir():
        return []
    return sorted(kept.glob("run-*.json"), key=lambda p: p.stat().st_mtime)


def import_pending(store: Store) -> list[int]:
    """Replay every pending record into `store`, each in one transaction, removing its file; the run ids
    imported. A record the store cannot take yet (still locked) stays for the next open."""
    imported = []
    for path in pending(store.path):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            to_apply = [writes.from_json(w) for w in record["writes"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: left for a person to look at
        try:
            if record.get("run_id") is None:
                # The row first, and the file rewritten with its id before any other write: an import cut
                # short here inserts no second row the next time.
                run_id = store.start_run(dict(record.get("start") or {}))
                to_apply = [writes.for_run(w, run_id) for w in to_apply]
                record = {"run_id": run_id, "writes": [writes.to_json(w) for w in to_apply]}
                replaced = _write(path.parent, record, run_id)
                path.unlink(missing_ok=True)
                path = replaced
            store.replay(int(record["run_id"]), to_apply)
        except sqlite3.OperationalError:
            continue
        path.unlink(missing_ok=True)
        imported.append(int(record["run_id"]))
    kept = folder(store.path)
    if kept.is_dir() and not any(kept.iterdir()):
        kept.rmdir()
    return imported
