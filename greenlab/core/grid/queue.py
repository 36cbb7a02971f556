"""What a grid will run, said before it runs: each entry to run, or skipped and why.

One rule, the one the drivers' `Resume` (greenlab.core.grid.driver) applies as the grid goes: an entry is
skipped when an earlier entry of the same grid is the same run, when a run with identical settings is
already completed in the store, or (in a face that queues grids) when a grid queued before it will have
stored that run by then; `force` reruns stored and queued runs but never runs one entry twice. What only
the driver can know (a run going on under another live supervisor) is left to it. The forecast
(greenlab.core.grid.forecast) prices `to_run`; faces say `describe()`. Pure: reads no store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from greenlab.core.plan.config import GridRun

STORED, QUEUED, REPEATED = "stored", "queued", "repeated"  # why an entry is skipped


def same_run_text(first: int) -> str:
    """Why an entry repeating entry `first` (0-based) of its grid does not run."""
    return f"the same run as entry {first + 1} of this grid"


@dataclass(frozen=True)
class QueuedEntry:
    index: int
    run: GridRun
    skipped: str | None = None  # None: it runs; else STORED, QUEUED or REPEATED
    same_as: int | None = None  # REPEATED: the entry it repeats


@dataclass(frozen=True)
class GridQueue:
    entries: tuple[QueuedEntry, ...]

    @property
    def to_run(self) -> list[GridRun]:
        return [entry.run for entry in self.entries if entry.skipped is None]

    def indices(self, *whys: str) -> list[int]:
        """The entries skipped for any of `whys`, in order."""
        return [entry.index for entry in self.entries if entry.skipped in whys]

    @property
    def skipped(self) -> int:
        return len(self.entries) - len(self.to_run)

    def skipped_parts(self, force_hint: str = "") -> list[str]:
        """['2 already stored (tick force rerun in Setup)', '1 already queued in an earlier grid'], for those
        there are; `force_hint` follows the stored ones (how the face reruns them)."""
        hint = f" ({force_hint})" if force_hint else ""
        counts = {why: len(self.indices(why)) for why in (STORED, QUEUED, REPEATED)}
        words = {
            STORED: f"already stored{hint}",
            QUEUED: "already queued in an earlier grid",
            REPEATED: "repeating an earlier entry of this grid",
        }
        return [f"{count} {words[why]}" for why, count in counts.items() if count]

    def describe(self, source: str, force_hint: str = "") -> str:
        """'3 of 5 runs from experiments.toml; skipped: 2 already stored (...)', or 'nothing new from ...'."""
        reasons = ", ".join(self.skipped_parts(force_hint))
        if self.entries and not self.to_run:
            return f"nothing new from {source}: {reasons}"
        what = f"{len(self.to_run)} of {len(self.entries)} runs from {source}"
        return f"{what}; skipped: {reasons}" if reasons else what


def plan_queue(
    runs: Sequence[GridRun], stored_keys: Iterable[str], queued_keys: Iterable[str] = (), *, force: bool = False
) -> GridQueue:
    """Each entry of `runs` to run or skipped; `stored_keys` are the run keys completed in the store,
    `queued_keys` those grids queued before this one will run first."""
    stored = set() if force else set(stored_keys)
    queued = set() if force else set(queued_keys)
    first: dict[str, int] = {}
    entries = []
    for index, run in enumerate(runs):
        key = run.settings_key()
        if key in first:
            entries.append(QueuedEntry(index, run, REPEATED, first[key]))
        elif key in stored:
            entries.append(QueuedEntry(index, run, STORED))
        elif key in queued:
            entries.append(QueuedEntry(index, run, QUEUED))
        else:
            first[key] = index
            entries.append(QueuedEntry(index, run))
    return GridQueue(tuple(entries))
