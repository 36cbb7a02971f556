"""What a grid driver tells its listener beyond each run's own events (greenlab.core.run.run_events).

`GridEvent` is the union of everything a face hears while a grid runs: the runs' events, a run queued
or skipped, the wait for the host lock and its end, a grid stopped by an environment failure, and the downloads
before it. The presenter (greenlab.core.grid.presenter) is the one place that dispatches over them.
"""

from __future__ import annotations

from dataclasses import dataclass

from greenlab.core.grid.stop_rules import GridStopped
from greenlab.core.measure.host_lock import WaitingForLock
from greenlab.core.plan.config import GridRun
from greenlab.core.plan.fetch import DownloadEvent
from greenlab.core.run.run_events import RunEvent


@dataclass
class RunQueued:
    index: int
    total: int
    run: GridRun


@dataclass
class RunSkipped:
    index: int
    run: GridRun
    reason: str


@dataclass
class HostTaken:
    """The grid holds the host's lock after waiting `waited_s` seconds for another grid (told only after a
    wait): time that is no part of the grid's own, nor of its forecast."""

    waited_s: float


GridEvent = RunEvent | RunQueued | RunSkipped | WaitingForLock | HostTaken | GridStopped | DownloadEvent
