"""Typed Textual messages for what happens in a grid, and the translation from supervisor events.

The supervisor calls its listener on the worker thread; `to_message` turns each event into one of these
small messages, which the worker posts to the app (post_message is thread-safe). Widgets never see a
supervisor event, a process or a store write. Batch progress is high-rate, so `BatchProgressed` lets a
newer one supersede a queued one (toolong's `can_replace`): the UI handles the latest state only.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from greenlab.core import events, fetch
from greenlab.core.config import GridRun
from greenlab.core import runner


class GridMessage(Message):
    """Base of the grid's messages; `grid` numbers the grid the run belongs to (the UI queues grids)."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid


class RunQueued(GridMessage):
    def __init__(self, grid: int, index: int, total: int, run: GridRun) -> None:
        super().__init__(grid)
        self.index, self.total, self.run = index, total, run


class RunSkipped(GridMessage):
    def __init__(self, grid: int, index: int, run: GridRun, reason: str) -> None:
        super().__init__(grid)
        self.index, self.run, self.reason = index, run, reason


class IdleMeasured(GridMessage):
    def __init__(self, grid: int, watts: dict[str, float], seconds: float) -> None:
        super().__init__(grid)
        self.watts, self.seconds = watts, seconds


class CoolingDown(GridMessage):
    def __init__(self, grid: int, temperatures: dict[str, float], target_c: float) -> None:
        super().__init__(grid)
        self.temperatures, self.target_c = temperatures, target_c


class RunBegan(GridMessage):
    """A run's row exists; `tracker` is the live power source (thread-safe reads only)."""

    def __init__(self, grid: int, run_id: int, run: GridRun, tracker: Any) -> None:
        super().__init__(grid)
        self.run_id, self.run, self.tracker = run_id, run, tracker


class RunStarted(GridMessage):
    """The child loaded its data: device and batches per epoch are known."""

    def __init__(self, grid: int, run_id: int, started: events.RunStarted) -> None:
        super().__init__(grid)
        self.run_id, self.started = run_id, started


class ModelPrepared(GridMessage):
    def __init__(self, grid: int, run_id: int, warnings: list[str]) -> None:
        super().__init__(grid)
        self.run_id, self.warnings = run_id, warnings


class PhaseChanged(GridMessage):
    def __init__(self, grid: int, run_id: int, epoch: int, phase: str) -> None:
        super().__init__(grid)
        self.run_id, self.epoch, self.phase = run_id, epoch, phase


class BatchProgressed(GridMessage):
    """One training batch done; many per second, so a newer one replaces a queued older one."""

    def __init__(self, grid: int, run_id: int, epoch: int, batch: int, batches: int, loss: float) -> None:
        super().__init__(grid)
        self.run_id, self.epoch, self.batch, self.batches, self.loss = run_id, epoch, batch, batches, loss

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, BatchProgressed)


class EpochFinished(GridMessage):
    def __init__(self, grid: int, run_id: int, result: events.EpochFinished) -> None:
        super().__init__(grid)
        self.run_id, self.result = run_id, result


class RunLogged(GridMessage):
    def __init__(self, grid: int, run_id: int | None, text: str) -> None:
        super().__init__(grid)
        self.run_id, self.text = run_id, text


class RunStored(GridMessage):
    """The run's row is final (completed, failed or interrupted): tables that show runs reload."""

    def __init__(self, grid: int, run_id: int, run: GridRun, status: str, error: str | None,
                 row: dict[str, Any]) -> None:
        super().__init__(grid)
        self.run_id, self.run, self.status, self.error, self.row = run_id, run, status, error, row


class GridNote(GridMessage):
    """What the grid waits for before or instead of its next run (the host's lock, a download, a stop)."""

    def __init__(self, grid: int, text: str) -> None:
        super().__init__(grid)
        self.text = text

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GridNote)  # download progress comes many times a second


def to_message(grid: int, event: Any) -> Message | None:
    """The UI message for one supervisor event, or None for events the UI does not show."""
    if isinstance(event, runner.WaitingForLock):
        return GridNote(grid, event.describe())
    if isinstance(event, runner.GridStopped):
        return GridNote(grid, f"grid stopped: {event.cause}; {len(event.not_started)} runs not started")
    if isinstance(event, (fetch.DownloadStarted, fetch.DownloadProgressed, fetch.DownloadFinished,
                          fetch.DownloadFailed)):
        return GridNote(grid, fetch.format_progress(event))
    if isinstance(event, runner.RunQueued):
        return RunQueued(grid, event.index, event.total, event.run)
    if isinstance(event, runner.RunSkipped):
        return RunSkipped(grid, event.index, event.run, event.reason)
    if isinstance(event, runner.IdleMeasured):
        return IdleMeasured(grid, event.watts, event.seconds)
    if isinstance(event, runner.CoolingDown):
        return CoolingDown(grid, event.temperatures, event.target_c)
    if isinstance(event, runner.RunBegan):
        return RunBegan(grid, event.run_id, event.run, event.tracker)
    if isinstance(event, runner.RunStored):
        return RunStored(grid, event.run_id, event.run, event.status, event.error, event.row)
    if isinstance(event, runner.ChildEvent):
        return _child_message(grid, event.run_id, event.event)
    return None


def _child_message(grid: int, run_id: int, event: Any) -> Message | None:
    if isinstance(event, events.BatchFinished):
        return BatchProgressed(grid, run_id, event.epoch, event.batch, event.batches, event.loss)
    if isinstance(event, events.EpochFinished):
        return EpochFinished(grid, run_id, event)
    if isinstance(event, events.RunStarted):
        return RunStarted(grid, run_id, event)
    if isinstance(event, events.PhaseBegan):
        return PhaseChanged(grid, run_id, event.epoch, event.phase)
    if isinstance(event, events.ModelPrepared):
        return ModelPrepared(grid, run_id, list(event.warnings))
    if isinstance(event, events.LogWritten):
        return RunLogged(grid, run_id, event.message)
    if isinstance(event, events.RunFailed):
        return RunLogged(grid, run_id, f"failed: {event.error}")
    return None
