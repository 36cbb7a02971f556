"""Whether a run's training process was paused (SIGSTOP, Ctrl-Z, a debugger): its window then counts time in
which it did no work, and its energy and time are not its technique's.

A child stopped for 30 s of a 10 s run is stored with 42 s and five times its DRAM energy, and nothing
else about it looks wrong. The supervisor (greenlab.core.run.supervisor) feeds a `PauseWatch` the child's
process state at each tick (about once a second: a stopped process says so, `T` in /proc) and the arrival
of each of its events; a run is `paused` when its process was seen stopped for `STOPPED_MIN_S` or more, or
when its batches fell silent for far longer than they take (`GAP_S`, and `GAP_FACTOR` × the median gap
between batches of the phase: a pause the state check missed, such as a host suspended). The run keeps its
figures and gets `FLAG_PAUSED`; the verdicts leave it out of energy and time, as energy to target leaves out
a run that diverged, and the report's checks name it. Pure bookkeeping: the caller reads the clock and the
process state.
"""

from __future__ import annotations

from statistics import median
from typing import Any

FLAG_PAUSED = "paused"
STOPPED_MIN_S = 1.0  # the tick's resolution: a stop seen at one tick lasted about this long
GAP_S = 5.0  # a silence between two batches shorter than this is never a pause
GAP_FACTOR = 20.0  # ...nor one shorter than this many median batch gaps of its phase
_MIN_GAPS = 3  # batch gaps seen before one is judged against their median


class PauseWatch:
    """What tells a paused run: time its process was seen stopped, and silences between its batches."""

    def __init__(self) -> None:
        self.stopped_s = 0.0
        self.longest_gap_s = 0.0  # the longest silence between batches that reads as a pause
        self._stopped_since: float | None = None
        self._last_batch: float | None = None
        self._gaps: list[float] = []

    def state(self, now: float, stopped: bool) -> None:
        """The child's process state at `now` (monotonic seconds): stopped (SIGSTOP, traced) or not."""
        if stopped and self._stopped_since is None:
            self._stopped_since = now
        elif not stopped and self._stopped_since is not None:
            self.stopped_s += max(now - self._stopped_since, STOPPED_MIN_S)
            self._stopped_since = None

    def event(self, now: float, batch: bool) -> None:
        """A child event arrived at `now`; `batch`: it ends a batch. Any other event (a phase's edge, an
        epoch's evaluation) starts the count of batch gaps again: those take their own time."""
        if not batch:
            self._last_batch = None
            return
        if self._last_batch is not None:
            gap = now - self._last_batch
            if len(self._gaps) >= _MIN_GAPS and gap > max(GAP_S, GAP_FACTOR * median(self._gaps)):
                self.longest_gap_s = max(self.longest_gap_s, gap)
            else:
                self._gaps.append(gap)
        self._last_batch = now

    def finish(self, now: float) -> None:
        """The run ended: a stop still open ends now."""
        self.state(now, stopped=False)

    def verdict(self) -> dict[str, Any] | None:
        """What was seen, for the row's meters (`paused`), or None when the run was not paused."""
        if self.stopped_s < STOPPED_MIN_S and not self.longest_gap_s:
            return None
        found: dict[str, Any] = {"stopped_s": round(self.stopped_s, 1)}
        if self.longest_gap_s:
            found["longest_batch_gap_s"] = round(self.longest_gap_s, 1)
            found["median_batch_gap_s"] = round(median(self._gaps), 4)
        return found


def describe(found: dict[str, Any]) -> str:
    """'its process was stopped for 30.0 s' and/or 'its batches fell silent for 31.2 s'."""
    parts = []
    if found.get("stopped_s"):
        parts.append(f"its process was stopped for {found['stopped_s']:g} s")
    if found.get("longest_batch_gap_s"):
        parts.append(
            f"its batches fell silent for {found['longest_batch_gap_s']:g} s (a batch took "
            f"{found['median_batch_gap_s']:g} s)"
        )
    return " and ".join(parts)
