"""A run's record the store could not take, kept beside the store until it can.

When the store stays unwritable past the busy budget (another process holding its lock for minutes, a
full disk), a finished run's writes that did not reach it — its epochs, samples, energy components and
final row — are saved to the pending folder beside the store (`runs.db.pending/`, one JSON file a run,
written whole and renamed into place). The next time any GreenLab opens the store, it replays each file in
its own transaction and removes it; a file that cannot be replayed yet stays for the next open. So a
finished run is never lost to a busy or full store, and a `running` row with a pending record is completed
by it, not marked interrupted.

Each replay is one transaction, and only into the row the record was written for (its id, settings key and
start time): a record whose row is not in the store at its path (the store was moved away, or replaced by
another) is set aside once in `runs.db.pending/unmatched/`, with a notice, never replayed into a stranger's
row. When even the pending folder cannot be written (a full disk), RecordLost carries the run's figures so
the face prints them: what was measured is never silently gone.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenlab.core.files import disk_of
from greenlab.core.store import row_writes
from greenlab.core.store.errors import StoreBusy, StoreDamaged, StoreError, StoreReplaced, StoreWriteError
from greenlab.core.store.row_writes import RowWrite

if TYPE_CHECKING:
    from greenlab.core.store.database import Store

SUFFIX = ".pending"
UNMATCHED = "unmatched"  # records whose row is in no store here: kept for a person, never replayed again
NO_ROW_YET = 0  # the run id a kept record's writes carry while its row is not in the store (ids start at 1)


def _cause_text(cause: BaseException) -> str:
    first = str(cause).splitlines()[0] if str(cause) else ""
    return f"{type(cause).__name__}: {first}"


class RecordKept(Exception):
    """The store could not take a finished run's record, which was kept in the pending folder instead. The
    message says what happened to the store (busy, damaged, removed or replaced, full) and when the record
    goes in."""

    def __init__(self, run_id: int | None, path: Path | None, cause: BaseException, label: str = "") -> None:
        self.run_id, self.path, self.cause = run_id, path, cause
        whose = f"run {run_id}'s record" if run_id is not None else f"the record of {label or 'a run'} (no row yet)"
        super().__init__(f"{describe_cause(cause)}; {whose} is kept in {path} and {_when(cause)}")


class RecordLost(RecordKept):
    """Neither the store nor its pending folder could take a run's record (a full disk): the message carries
    the run's figures, so what was measured is at least printed where the grid ran."""

    def __init__(
        self, run_id: int | None, store_path: Path, cause: BaseException, error: OSError, figures: str
    ) -> None:
        self.run_id, self.path, self.cause = run_id, None, cause
        where = disk_of(folder(store_path).parent)
        whose = f"run {run_id}'s record" if run_id is not None else "a run's record"
        Exception.__init__(
            self,
            f"{describe_cause(cause)}, and {whose} could not be kept beside it either ({error.strerror or error} "
            f"on {where}): free space there; the run's figures, so nothing measured is lost: {figures}",
        )


def _kind(cause: BaseException) -> str:
    """busy, replaced, damaged or unwritable: what happened to the store (a write thread's error carries the
    store's own)."""
    error = cause.error if isinstance(cause, StoreWriteError) else cause
    if isinstance(error, StoreBusy):
        return "busy"
    if isinstance(error, StoreReplaced):
        return "replaced"
    if isinstance(error, StoreDamaged):
        return "damaged"
    return "unwritable"


def describe_cause(cause: BaseException) -> str:
    """Why the store did not take a record, as the user can act on it."""
    kind = _kind(cause)
    if kind == "busy":
        return f"the run store stayed locked by another process ({_cause_text(cause)})"
    if kind == "replaced":
        return f"the run store was removed or replaced while the grid ran ({_cause_text(cause)})"
    if kind == "damaged":
        return f"the run store is damaged ({_cause_text(cause)})"
    return f"the run store cannot be written ({_cause_text(cause)})"


def _when(cause: BaseException) -> str:
    kind = _kind(cause)
    if kind == "replaced":
        return f"goes into the store when it is back at its path (a new store there sets it aside in {UNMATCHED}/)"
    if kind == "damaged":
        return 'goes into the store once it is recovered (sqlite3 STORE ".recover") and opened again'
    return "goes into the store the next time it is opened"


def figures(pending: list[RowWrite]) -> str:
    """The measured figures among a run's writes (its final row values, its epochs), as one line of JSON."""
    values: dict[str, Any] = {}
    epochs: list[dict[str, Any]] = []
    for write in pending:
        if isinstance(write, row_writes.UpdateRun):
            values.update(write.values)
        elif isinstance(write, row_writes.AddEpoch):
            epochs.append({k: v for k, v in write.row.items() if k != "run_id" and v is not None})
    shown = {k: values[k] for k in FIGURES if values.get(k) is not None}
    if epochs:
        shown["epochs"] = epochs
    return json.dumps(shown, separators=(",", ":"), default=str)


FIGURES = (
    "status",
    "error",
    "finished_at",
    "duration_s",
    "train_s",
    "energy_j",
    "energy_training_j",
    "energy_cpu_j",
    "energy_dram_j",
    "energy_gpu_j",
    "energy_measured_j",
    "energy_estimated_j",
    "co2e_g",
    "val_accuracy",
    "val_f1",
    "flags",
)


def folder(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + SUFFIX)


def save(
    store_path: Path,
    run_id: int | None,
    pending: list[RowWrite],
    start: dict[str, Any] | None = None,
    row: dict[str, Any] | None = None,
) -> Path:
    """Keep `pending` (the writes of run `run_id` the store did not take, in order); the file's path. `row`
    tells the run's row from another of the same id (Store.row_identity): a record is replayed only into the
    store its row is in. A run whose row could not even be inserted has no id yet: `start` is its row's first
    values, and its writes name run 0 (NO_ROW_YET) until the import inserts the row and gives them its id."""
    target_folder = folder(store_path)
    target_folder.mkdir(exist_ok=True)
    record: dict[str, Any] = {"run_id": run_id, "writes": [row_writes.to_json(w) for w in pending]}
    if row is not None:
        record["row"] = row
    if run_id is None:
        record["start"] = start or {}
    return _write(target_folder, record, run_id if run_id is not None else NO_ROW_YET)


def _write(target_folder: Path, record: dict[str, Any], run_id: int) -> Path:
    """The record written whole, fsynced and renamed into place: a reader sees all of it or none, and a
    write that fails (a full disk) leaves no part of it behind."""
    handle, temporary = tempfile.mkstemp(dir=target_folder, prefix=f".run-{run_id}-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(record, stream)
            stream.flush()
            os.fsync(stream.fileno())
        final = target_folder / f"run-{run_id}-{os.getpid()}-{Path(temporary).stem.rsplit('-', 1)[-1]}.json"
        os.replace(temporary, final)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return final


def set_aside(path: Path) -> Path:
    """Move a record whose row is not in the store into the pending folder's unmatched/ (kept for a person,
    never replayed again); its new path."""
    target = path.parent / UNMATCHED
    target.mkdir(exist_ok=True)
    moved = target / path.name
    os.replace(path, moved)
    return moved


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
            to_apply = [row_writes.from_json(w) for w in record["writes"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge: left for a person to look at
        try:
            if record.get("run_id") is None:
                # The row first, and the file rewritten with its id before any other write: an import cut
                # short here inserts no second row the next time.
                run_id = store.start_run(dict(record.get("start") or {}))
                to_apply = [row_writes.for_run(w, run_id) for w in to_apply]
                record = {
                    "run_id": run_id,
                    "row": store.row_identity(run_id),
                    "writes": [row_writes.to_json(w) for w in to_apply],
                }
                replaced = _write(path.parent, record, run_id)
                path.unlink(missing_ok=True)
                path = replaced
            matched = store.replay(int(record["run_id"]), to_apply, record.get("row"))
        except StoreDamaged:
            raise  # the store's open refuses it, damaged: no record is imported into a damaged file
        except StoreError:
            continue  # locked, replaced, unwritable now: the record waits for the next open
        if not matched:
            # Its row is not here (the store it was written for was moved away, and this is another): replayed,
            # it would fail at every open and add its samples each time. It is kept, once, for a person.
            moved = set_aside(path)
            store.tell(
                f"record of run {record['run_id']} kept in {moved.parent}/: its row is in a store that is no "
                f"longer here (not in {store.path}); put that store back to import it, or delete the file"
            )
            continue
        path.unlink(missing_ok=True)
        imported.append(int(record["run_id"]))
    kept = folder(store.path)
    if kept.is_dir() and not any(kept.iterdir()):
        kept.rmdir()  # unmatched/ stays while it holds a record
    return imported
