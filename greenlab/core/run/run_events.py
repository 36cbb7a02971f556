"""What a run's supervisor tells its listener while it measures one run: typed events, one small dataclass each.

`RunEvent` is their union (the child's own events, greenlab.core.train.child_events, arrive wrapped in
`ChildEvent`). Grid drivers add their own (greenlab.core.grid.grid_events); the presenter
(greenlab.core.grid.presenter) is the one place that dispatches over all of them, and faces read its
snapshots instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greenlab.core.plan.config import GridRun
from greenlab.core.train import child_events

if TYPE_CHECKING:
    from greenlab.core.measure.tracker import PowerHistory


@dataclass
class IdleMeasured:
    watts: dict[str, float]
    seconds: float
    host_load: dict[str, Any] | None = None  # what other processes used of the host's CPUs meanwhile (hostload)


@dataclass
class CoolingDown:
    temperatures: dict[str, float]
    target_c: float


@dataclass
class RunBegan:
    """A run's row exists; `tracker` is its live power source (thread-safe reads only)."""

    run_id: int
    run: GridRun
    tracker: PowerHistory
    fallbacks: dict[str, str] = field(default_factory=dict)  # component -> why it is not measured


@dataclass
class ChildEvent:
    run_id: int
    event: child_events.Event


@dataclass
class RunMetered:
    """After the child said where it trains: the metered components whose energy is this run's (a GPU it
    did not use is metered but not counted)."""

    run_id: int
    components: list[str]


@dataclass
class Notice:
    """A line for the user that is no run's result: from a run's supervisor (the fork server fell back), a
    grid driver (retrying a run) or the grid session (the store is busy)."""

    text: str


@dataclass
class RunStored:
    """The run's row is final (completed, failed or interrupted)."""

    run_id: int
    run: GridRun
    status: str
    error: str | None
    row: Mapping[str, Any] = field(default_factory=dict)
    executor_died: bool = False  # what ran it died under it (a fork server, a Ray worker): a retry may do
    kept_in: Path | None = None  # the store could not take its record: it waits in this file beside the store


RunEvent = IdleMeasured | CoolingDown | RunBegan | ChildEvent | RunMetered | Notice | RunStored
Listener = Callable[[Any], None]  # of run events, and of grid events (greenlab.core.grid.grid_events)


class SafeListener:
    """Tells a face of events; a face that fails (a closed pipe, a widget error) never costs a run its
    record: its first errors are kept in `errors`, for the run's flags, instead."""

    def __init__(self, listener: Listener | None = None) -> None:
        self._listener: Listener = listener or (lambda event: None)
        self.errors: list[str] = []

    def __call__(self, event: Any) -> None:
        try:
            self._listener(event)
        except Exception as exc:  # noqa: BLE001 - the store matters more than the display
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {exc}")
