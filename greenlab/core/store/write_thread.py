"""The store's write thread: a run's row writes off the supervisor's event loop, applied in order by a
thread with its own connection.

The supervisor reads its child's events and closes energy windows; a commit that waits on the disk (or on
another process's lock, for minutes: greenlab.core.store.database) must not hold that loop.
`WriteThread.submit` queues a typed write (greenlab.core.store.row_writes) and returns at once; `flush` waits
until everything queued is written and raises StoreWriteError if a write failed. From a failed write on,
nothing more is tried: that write and every later one are kept in `unwritten`, in order, so the run's
record can go to the pending folder beside the store instead of being lost.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenlab.core.store.database import Store
from greenlab.core.store.errors import StoreWriteError
from greenlab.core.store.row_writes import RowWrite

_STOP = object()


class WriteThread:
    """Applies writes on a thread of its own, in submission order; `on_busy` hears a wait for the lock."""

    def __init__(
        self,
        path: str | Path,
        on_busy: Callable[[str], None] | None = None,
        *,
        same_file: tuple[int, int] | None = None,
        abandon: threading.Event | None = None,
    ) -> None:
        self._path = path
        self._on_busy = on_busy
        self._same_file = same_file  # the file the grid's store opened: this connection writes that one or none
        self._abandon = abandon
        self._queue: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self.unwritten: list[RowWrite] = []  # the failed write and everything after it, in order
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._work, name="greenlab-store-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        self._raise()

    def _work(self) -> None:
        try:
            store = Store(self._path, same_file=self._same_file)  # a connection belongs to the thread that opened it
            store.on_busy = self._on_busy
            store.abandon = self._abandon
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
                    if self._error is not None:  # after a failure, later writes would only fail the same way
                        self.unwritten.append(item)
                        continue
                    try:
                        item.apply(store)
                    except BaseException as exc:  # noqa: BLE001 - kept and raised on the supervisor's thread
                        self.unwritten.append(item)
                        self._error = StoreWriteError(
                            f"writing {type(item).__name__} to {self._path} failed: {type(exc).__name__}: {exc}",
                            exc,
                        )
                finally:
                    self._queue.task_done()
        finally:
            store.close()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, write: RowWrite) -> None:
        """Queue a write (after a failure it is kept in `unwritten` with the rest; see `flush`)."""
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
