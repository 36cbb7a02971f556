"""Where a supervised run's rows go: the seam between measuring a run and storing it.

The supervisor (greenlab.core.run.supervisor) measures a run and produces its rows; a sink decides where
the record's rows (the `runs` values, epochs, samples, components, capacity curve) are written:

- `StoreSink`: into the run store, as a local grid does (row writes during the run queued to a
  WriteThread, so a slow disk never holds the supervisor's event loop);
- `MemorySink`: into memory, on a Ray node, whose `rows()` the task returns to the driver, which
  alone writes data/runs.db (greenlab.core.grid.ray_driver): SQLite stays single-writer.

A sink is used for one run at a time. Nothing here measures anything or knows of Ray.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from greenlab.core.store import journal
from greenlab.core.store.database import Store
from greenlab.core.store.errors import StoreError, StoreWriteError
from greenlab.core.store.journal import RecordKept, RecordLost
from greenlab.core.store.row_writes import RowWrite
from greenlab.core.store.write_thread import WriteThread


class WriteQueue(Protocol):
    """Where a run's row writes are submitted while it goes on: `submit(AddEpoch(row))` and the like; the
    store's WriteThread (greenlab.core.store.write_thread), or a Ray node's memory."""

    def submit(self, write: RowWrite) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class RowSink(Protocol):
    """The writes a supervisor makes for one run, and the row it reads back at the end."""

    def start_run(self, values: dict[str, Any]) -> int: ...

    def restart_run(self, run_id: int, values: dict[str, Any]) -> int: ...

    def writer(self) -> WriteQueue: ...

    def finish(self, run_id: int, final: list[RowWrite]) -> None:
        """Every write of the run done, then `final` (its last row values, components, samples to drop);
        RecordKept when the store could not take them and they were kept beside it instead."""
        ...

    def update_run(self, run_id: int, **values: Any) -> None: ...

    def set_components(self, run_id: int, rows: list[dict[str, Any]]) -> None: ...

    def delete_samples(self, run_id: int, components: Iterable[str]) -> None: ...

    def run(self, run_id: int) -> Mapping[str, Any] | None: ...

    def stop_waiting(self) -> None:
        """Give up waiting for the store (the user stopped the grid twice while it was locked)."""
        ...


class StoreSink:
    """A local run's rows go to the store; writes during the run go through a WriteThread. A record
    the store cannot take (greenlab.core.store.journal) is kept in the pending folder beside it."""

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

    def finish(self, run_id: int, final: list[RowWrite]) -> None:
        cause: BaseException | None = None
        unwritten: list[RowWrite] = []
        if self._writer is not None:
            try:
                self._writer.flush()
            except StoreWriteError as exc:
                cause, unwritten = exc, list(self._writer.unwritten)
        if cause is None:
            for index, write in enumerate(final):
                try:
                    write.apply(self.store)
                except (StoreError, OSError) as exc:
                    cause, unwritten = exc, final[index:]
                    break
        else:
            unwritten += final
        if cause is not None:
            try:
                kept = journal.save(self.store.path, run_id, unwritten, row=self.store.row_identity(run_id))
            except OSError as exc:  # the folder beside the store cannot be written either (a full disk)
                raise RecordLost(run_id, self.store.path, cause, exc, journal.figures(unwritten)) from None
            raise RecordKept(run_id, kept, cause)

    def update_run(self, run_id: int, **values: Any) -> None:
        self.store.update_run(run_id, **values)

    def set_components(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        self.store.set_components(run_id, rows)

    def delete_samples(self, run_id: int, components: Iterable[str]) -> None:
        self.store.delete_samples(run_id, components)

    def run(self, run_id: int) -> Mapping[str, Any] | None:
        return self.store.run(run_id)


@dataclass
class RunRows:
    """One run's rows as a Ray node returns them; `values` are the `runs` columns set after its start."""

    start: dict[str, Any] = field(default_factory=dict)  # the values its row started with
    values: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    samples: list[tuple[float, str, float]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    capacity: list[tuple[int, float]] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        return self.values.get("status")

    @property
    def error(self) -> str | None:
        return self.values.get("error")


class MemorySink:
    """A run's rows kept in memory (a Ray node's run: the driver writes them); also its own WriteQueue,
    applying each write at once. `run_id` is the id the supervisor uses meanwhile; the driver stores the
    rows under the run's real id."""

    def __init__(self, run_id: int = 0) -> None:
        self.run_id = run_id
        self.started = False
        self._lock = threading.Lock()
        self._start: dict[str, Any] = {}
        self._values: dict[str, Any] = {}
        self._epochs: dict[int, dict[str, Any]] = {}
        self._samples: list[tuple[float, str, float]] = []
        self._components: dict[str, dict[str, Any]] = {}
        self._capacity: dict[int, float] = {}

    # -- RowSink ----------------------------------------------------------------------------------
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
        """Nothing waits here: the rows are in memory."""

    def finish(self, run_id: int, final: list[RowWrite]) -> None:
        for write in final:
            write.apply(self)

    def update_run(self, run_id: int, **values: Any) -> None:
        with self._lock:
            self._values.update(values)

    def set_components(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._components.update({row["component"]: dict(row) for row in rows})

    def delete_samples(self, run_id: int, components: Iterable[str]) -> None:
        names = set(components)
        if names:
            with self._lock:
                self._samples = [s for s in self._samples if s[1] not in names]

    def run(self, run_id: int) -> Mapping[str, Any] | None:
        with self._lock:
            return {**self._start, **self._values, "id": run_id} if self.started else None

    # -- the rest of the Store methods a supervisor submits -----------------------------------------
    def add_epoch(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._epochs[int(row["epoch"])] = {k: v for k, v in row.items() if k != "run_id"}

    def add_samples(self, run_id: int, rows: Iterable[tuple[float, str, float]]) -> None:
        with self._lock:
            self._samples.extend(rows)

    def set_capacity(self, run_id: int, curve: list[tuple[int, float]]) -> None:
        with self._lock:
            self._capacity.update({int(b): float(a) for b, a in curve})

    # -- WriteQueue ------------------------------------------------------------------------------------
    def submit(self, write: RowWrite) -> None:
        write.apply(self)

    def flush(self) -> None:
        """Every write is applied when submitted."""

    def close(self) -> None:
        """Nothing to stop."""

    # -- the record -----------------------------------------------------------------------------------
    def rows(self) -> RunRows:
        with self._lock:
            return RunRows(
                start=dict(self._start),
                values=dict(self._values),
                epochs=[self._epochs[e] for e in sorted(self._epochs)],
                samples=list(self._samples),
                components=list(self._components.values()),
                capacity=sorted(self._capacity.items()),
            )
