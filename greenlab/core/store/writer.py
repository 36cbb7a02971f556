"""Store writes off the supervisor's event loop: a thread with its own connection applies them in order.

The supervisor reads its child's events and closes energy windows; a commit that waits on the disk (or on
another process's lock, up to the store's busy timeout) must not hold that loop. `StoreWriter.submit`
queues a typed write (`UpdateRun`, `AddEpoch`, `AddSamples`, `SetCapacity`) and returns at once; `flush`
waits until everything queued is written. A write that fails is kept and raised, as StoreWriteError, by the
next `submit` or `flush`, so a full disk or an unwritable store still ends the run as failed rather than
losing it silently. The same writes apply to any `RowTarget` (the Store, or a Ray node's memory sink).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from greenlab.core.store.database import Store

_STOP = object()


class RowTarget(Protocol):
    """What a run's writes go to while it runs: the Store, or a Ray node's memory sink."""

    def update_run(self, run_id: int, **values: Any) -> None: ...

    def add_epoch(self, row: dict[str, Any]) -> None: ...

    def add_samples(self, run_id: int, rows: Iterable[tuple[float, str, float]]) -> None: ...

    def set_capacity(self, run_id: int, curve: list[tuple[int, float]]) -> None: ...


@dataclass(frozen=True)
class UpdateRun:
    run_id: int
    values: dict[str, Any] = field(default_factory=dict)

    def apply(self, target: RowTarget) -> None:
        target.update_run(self.run_id, **self.values)


@dataclass(frozen=True)
class AddEpoch:
    row: dict[str, Any]

    def apply(self, target: RowTarget) -> None:
        target.add_epoch(self.row)


@dataclass(frozen=True)
class AddSamples:
    run_id: int
    rows: list[tuple[float, str, float]]

    def apply(self, target: RowTarget) -> None:
        target.add_samples(self.run_id, self.rows)


@dataclass(frozen=True)
class SetCapacity:
    run_id: int
    curve: list[tuple[int, float]]

    def apply(self, target: RowTarget) -> None:
        target.set_capacity(self.run_id, self.curve)


RowWrite = UpdateRun | AddEpoch | AddSamples | SetCapacity


class StoreWriteError(RuntimeError):
    """A queued store write failed; the message names the write and the cause."""


class StoreWriter:
    """Applies `Store` method calls on a thread of its own, in submission order."""

    def __init__(self, path: str | Path) -> None:
        self._path = path
        self._queue: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._work, name="greenlab-store-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        self._raise()

    def _work(self) -> None:
        try:
            store = Store(self._path)  # sqlite connections belong to the thread that opened them
        except BaseException as exc:  # noqa: BLE001 - reported by the constructor
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is _STOP:
                        return
                    if self._error is None:  # after a failure, later writes would only fail the same way
                        try:
                            item.apply(store)
                        except BaseException as exc:  # noqa: BLE001 - kept and raised on the supervisor's thread
                            self._error = StoreWriteError(
                                f"writing {type(item).__name__} to {self._path} failed: {type(exc).__name__}: {exc}"
                            )
                finally:
                    self._queue.task_done()
        finally:
            store.close()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, write: RowWrite) -> None:
        """Queue a write; raises an earlier write's failure instead."""
        self._raise()
        self._queue.put(write)

    def flush(self) -> None:
        """Wait until every queued write is done; raise the first failure among them."""
        if self._thread.is_alive():
            self._queue.join()
        self._raise()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=30)
