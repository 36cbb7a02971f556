"""What a grid driver is, and the rules every driver shares.

A driver runs a grid's entries and stores them: `LocalDriver` (greenlab.core.grid.local) one after the
other on this machine, `RayDriver` (greenlab.core.grid.ray_driver) as Ray tasks across a cluster. Both run
each entry through the same one-run supervisor (greenlab.core.run.supervisor; on Ray, on the node), tell
the same typed events (greenlab.core.grid.grid_events), obey one cancel token (greenlab.core.run.cancel)
and share the rules below:
- `Resume`: which entries do not run (completed with identical settings, running under another live
  supervisor, or the same run as an earlier entry of this grid);
- `RetryRule`: a run whose executor died under it (a fork server, a Ray worker or node) is run once more,
  in the same row; a run's own failure never is;
- `StopRule` (greenlab.core.grid.stop_rules): a failure that would fail every following run stops the grid.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from greenlab.core.grid.grid_events import HostTaken
from greenlab.core.grid.queue import same_run_text
from greenlab.core.measure.host_lock import HostLock
from greenlab.core.plan.config import GridRun
from greenlab.core.run.cancel import CancelToken
from greenlab.core.run.measurement import accounting_columns
from greenlab.core.run.run_events import RunStored
from greenlab.core.store.database import Store
from greenlab.core.store.rows import RunRow

MAX_ATTEMPTS = 2


class GridDriver(Protocol):
    """Runs a grid into a store; faces reach it only through greenlab.core.grid.session."""

    token: CancelToken

    def run_grid(self, runs: list[GridRun], *, force: bool = False, wait: bool = True) -> list[RunStored]:
        """Run every entry `Resume` does not skip; returns the stored outcomes. KeyboardInterrupt stores the
        runs in progress as interrupted, then propagates."""
        ...

    def close(self) -> None:
        """Release what the driver holds (a fork server, a connection)."""
        ...


class Resume:
    """Which grid entries run now; one rule for both drivers, foretold by greenlab.core.grid.queue.

    `force` reruns completed runs (a completed rerun then supersedes the run it repeats). Read under the
    host's lock, so the last grid's runs count too.
    """

    def __init__(self, store: Store, force: bool = False) -> None:
        self.store = store
        self.done: dict[str, RunRow] = {} if force else store.completed_by_key()
        self.planned: dict[str, int] = {}  # run key -> the entry of this grid that runs it

    def skip_reason(self, index: int, run: GridRun) -> str | None:
        """Why entry `index` does not run, or None (it is then planned: a later identical entry skips)."""
        key = run.settings_key()
        if key in self.planned:
            return same_run_text(self.planned[key])
        if key in self.done:
            return _reuse(self.store, self.done[key], run)
        other = self.store.running_elsewhere(key)
        if other is not None:
            return f"running now under supervisor pid {other}"
        self.planned[key] = index
        return None


def _reuse(store: Store, previous: RunRow, run: GridRun) -> str:
    """Keep a completed run; when only the accounting inputs changed, recompute its CO2e and cost."""
    accounting = run.accounting()
    stored = {k: previous.value(k) for k in accounting}  # the accounting settings, each a column of its own
    if stored == accounting:
        return "already completed with identical settings"
    settings = dict(previous.settings or {})
    store.update_run(
        previous.id, settings={**settings, **accounting}, **accounting_columns(previous.energy_j, accounting)
    )
    return "already completed with identical settings; CO2e and cost recomputed for the new accounting inputs"


def take_host(lock: HostLock, *, wait: bool, on_event: Callable[[Any], None], stop: threading.Event) -> bool:
    """Hold the host's lock for the grid (see HostLock.acquire); after a wait for another grid, tell how long
    it was (HostTaken), so no face counts it as the grid's time. False: stopped while waiting."""
    started = time.monotonic()
    waited = False

    def told(event: Any) -> None:
        nonlocal waited
        waited = True
        on_event(event)

    if not lock.acquire(wait=wait, on_wait=told, stop=stop):
        return False
    if waited:
        on_event(HostTaken(time.monotonic() - started))
    return True


class RetryRule:
    """A run is retried once when what executed it died under it — not when the run itself failed, and not
    after a cancel. Both drivers ask it; the retry reuses the run's row (`attempts` = 2)."""

    def retry(self, attempt: int, executor_died: bool, token: CancelToken) -> bool:
        return executor_died and attempt < MAX_ATTEMPTS and not token.cancelled
