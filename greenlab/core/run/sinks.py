"""Where a supervised run's record goes: the seam between measuring a run and storing it.

The supervisor (greenlab.core.run.supervisor) measures a run and hands its RunRecord
(greenlab.core.store.record) to a sink, which decides where it goes:

- `StoreSink`: into the run store, as a local grid does (writes during the run, for a face following the
  store, queued to a WriteThread, so a slow disk never holds the supervisor's event loop), and as a Ray
  driver does with each node's record (greenlab.core.grid.ray_driver): SQLite stays single-writer. The
  record is written through the one translation `record_writes`, or kept in the pending folder beside the
  store (greenlab.core.store.journal) when the store cannot take it;
- `MemorySink`: into memory, on a Ray node, whose `record()` the task returns to the driver.

A sink is used for one run at a time. Nothing here measures anything or knows of Ray.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NoReturn, Protocol

from greenlab.core.store import journal
from greenlab.core.store.database import Store
from greenlab.core.store.errors import StoreError, StoreWriteError
from greenlab.core.store.journal import RecordKept, RecordLost
from greenlab.core.store.record import RunRecord, record_writes
from greenlab.core.store.row_writes import RowWrite
from greenlab.core.store.write_thread import WriteThread


class WriteQueue(Protocol):
    """Where a run's row writes are submitted while it goes on: `submit(AddEpoch(row))` and the like; the
    store's WriteThread (greenlab.core.store.write_thread), or a Ray node's memory."""

    def submit(self, write: RowWrite) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class RecordSink(Protocol):
    """Where a supervisor's run goes: its row started, writes while it runs, its record at the end."""

    def start_run(self, values: dict[str, Any]) -> int: ...

    def restart_run(self, run_id: int, values: dict[str, Any]) -> int: ...

    def writer(self) -> WriteQueue: ...

    def store_record(self, run_id: int | None, record: RunRecord, label: str = "") -> int:
        """Every write of the run done, then its whole record, in run `run_id`'s row (None: a row started
        now, from the record's start); the row's id. RecordKept when the store could not take it and it was
        kept beside the store instead (RecordLost when not even there)."""
        ...

    def run(self, run_id: int) -> Mapping[str, Any] | None: ...

    def stop_waiting(self) -> None:
        """Give up waiting for the store (the user stopped the grid twice while it was locked)."""
        ...


class StoreSink:
    """Runs' records go to the store: a local run's (its writes meanwhile through a WriteThread) and a Ray
    driver's, for each node's record. A record the store cannot take (greenlab.core.store.journal) is kept
    in the pending folder beside it."""

    def __init__(self, store: Store, on_busy: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.on_busy = on_busy
        self._writer: WriteThread | None = None
        # Set by stop_waiting (a second Ctrl-C while the store is locked): every wait for the lock gives up,
        # and the run's record goes to the pending folder instead.
        self.abandon = threading.Event()
        store.abandon = self.abandon

    def stop_waiting(self) -> None:
        """Stop waiting for another process's lock on the store: what is not written yet is kept aside."""
        self.abandon.set()

    def start_run(self, values: dict[str, Any]) -> int:
        return self.store.start_run(values)

    def restart_run(self, run_id: int, values: dict[str, Any]) -> int:
        self.store.restart_run(run_id, values)
        return run_id

    def writer(self) -> WriteQueue:
        self._writer = None  # a writer that cannot start (the store removed) leaves no earlier run's writer here
        self._writer = WriteThread(self.store.path, self.on_busy, same_file=self.store.file, abandon=self.abandon)
        return self._writer

    def store_record(self, run_id: int | None, record: RunRecord, label: str = "") -> int:
        cause: BaseException | None = None
        if self._writer is not None:
            try:
                self._writer.flush()
            except StoreWriteError as exc:  # the record below holds every write the thread could not make
                cause = exc
        if cause is None:
            try:
                if run_id is None:
                    run_id = self.store.start_run(dict(record.start))
                self.store.write_record(run_id, record_writes(run_id, record))
                return run_id
            except (StoreError, OSError) as exc:
                if isinstance(exc, StoreError) and exc.refused:
                    raise
                cause = exc
        self._keep(run_id, record, cause, label)

    def _keep(self, run_id: int | None, record: RunRecord, cause: BaseException, label: str) -> NoReturn:
        """The record in the pending folder (a row never inserted: with its first values, to get an id at
        its import); RecordKept names it, RecordLost carries its figures when even that folder is unwritable."""
        writes = record_writes(run_id if run_id is not None else journal.NO_ROW_YET, record)
        identity = self.store.row_identity(run_id) if run_id is not None else None
        start = dict(record.start) if run_id is None else None
        try:
            kept = journal.save(self.store.path, run_id, writes, start=start, row=identity)
        except OSError as exc:  # the folder beside the store cannot be written either (a full disk)
            raise RecordLost(run_id, self.store.path, cause, exc, journal.figures(writes)) from None
        raise RecordKept(run_id, kept, cause, label=label)

    def update_run(self, run_id: int, **values: Any) -> None:
        self.store.update_run(run_id, **values)

    def run(self, run_id: int) -> Mapping[str, Any] | None:
        return self.store.run(run_id)


class MemorySink:
    """A run's record kept in memory (a Ray node's run: its driver stores it); also its own WriteQueue, on
    which the writes made while the run goes on are left to the record (a subclass may forward them live).
    `run_id` is the id the supervisor uses meanwhile; the driver stores the record under the run's real id."""

    def __init__(self, run_id: int = 0) -> None:
        self.run_id = run_id
        self.started = False
        self._lock = threading.Lock()
        self._start: dict[str, Any] = {}
        self._record: RunRecord | None = None

    # -- RecordSink ---------------------------------------------------------------------------------
    def start_run(self, values: dict[str, Any]) -> int:
        with self._lock:
            self._start = dict(values)
            self.started = True
        return self.run_id

    def restart_run(self, run_id: int, values: dict[str, Any]) -> int:
        """A node never retries in place: the Ray driver starts a new task for a retry."""
        raise NotImplementedError("a Ray node's run is retried by its driver, as a new task")

    def writer(self) -> WriteQueue:
        return self

    def stop_waiting(self) -> None:
        """Nothing waits here: the record is in memory."""

    def store_record(self, run_id: int | None, record: RunRecord, label: str = "") -> int:
        """Keep the record, with the values its row started with here (a subclass may have added some)."""
        with self._lock:
            self._record = replace(record, start=dict(self._start))
        return self.run_id if run_id is None else run_id

    def run(self, run_id: int) -> Mapping[str, Any] | None:
        with self._lock:
            if not self.started:
                return None
            values = self._record.final_values() if self._record is not None else {}
            return {**self._start, **values, "id": run_id}

    # -- WriteQueue ------------------------------------------------------------------------------------
    def submit(self, write: RowWrite) -> None:
        """The record at the end holds what this write says."""

    def flush(self) -> None:
        """Nothing is queued."""

    def close(self) -> None:
        """Nothing to stop."""

    # -- the record -----------------------------------------------------------------------------------
    def record(self) -> RunRecord | None:
        """The run's record: None when its row never started, its first values alone when the supervisor
        handed over none (it failed before the end of the run)."""
        with self._lock:
            if not self.started:
                return None
            return self._record if self._record is not None else RunRecord(start=dict(self._start))
