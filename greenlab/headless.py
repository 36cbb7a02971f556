"""`greenlab --headless experiments.toml`: run a grid with no UI and print a comparison.

A thin face on greenlab.core: it validates the file, asks the RunSupervisor to run the grid, shows
progress (a one-line bar on a terminal, plain lines otherwise) and prints each technique against its
baseline. Before the store is opened, the grid is checked and what it must download is fetched
(greenlab.prepare). Exit codes: 0 all completed, 1 a run failed or the grid stopped on an environment
failure, 2 invalid input or a grid that cannot run here (nothing written), 130 interrupted.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from typing import Any, TextIO

from greenlab.core import events, report, report_formats
from greenlab.core.config import GridRun, expand_grid, load_experiments
from greenlab.core.energy_to_target import update_energy_to_target
from greenlab.core.fetch import Sources
from greenlab.core.hostlock import ensure_free
from greenlab.core.runner import (ChildEvent, CoolingDown, GridStopped, IdleMeasured, RunBegan, RunQueued,
                                  RunSkipped, RunStored, RunSupervisor, WaitingForLock)
from greenlab.core.store import Store
from greenlab.prepare import prepare_grid

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


class Progress:
    """Turns supervisor events into terminal output; redraws the bar at most a few times a second."""

    _REDRAW_S = 0.2

    def __init__(self, out: TextIO, total: int) -> None:
        self.out = out
        self.tty = out.isatty()
        self.total = total
        self.label = ""
        self.tracker: Any = None
        self._last_draw = 0.0
        self._bar_shown = False
        self._meters_described = ""
        self.run_open = False
        self.stopped: GridStopped | None = None

    def line(self, text: str) -> None:
        if self._bar_shown:
            self.out.write("\r\033[K")
            self._bar_shown = False
        self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, event: Any) -> None:
        if isinstance(event, RunQueued):
            self.label = f"[{event.index + 1}/{event.total}] {event.run.model} {event.run.technique}" + (
                f" #{event.run.repeat + 1}" if event.run.settings.repeats > 1 else "")
            self.line(f"{self.label}: starting")
        elif isinstance(event, RunSkipped):
            self.line(f"[{event.index + 1}] {event.run.model} {event.run.technique}: skipped ({event.reason}; "
                      "--force reruns)")
        elif isinstance(event, IdleMeasured):
            watts = ", ".join(f"{c} {w:.1f} W" for c, w in event.watts.items()) or "nothing measurable"
            self.line(f"idle baseline over {event.seconds:g} s: {watts}")
        elif isinstance(event, CoolingDown):
            temps = ", ".join(f"{c} {t:.0f} C" for c, t in event.temperatures.items())
            self.line(f"cooling down to {event.target_c:g} C: {temps}")
        elif isinstance(event, RunBegan):
            self.tracker = event.tracker
            self.run_open = True
            self._describe_meters(event)
        elif isinstance(event, ChildEvent):
            self._child(event.event)
        elif isinstance(event, RunStored):
            self.run_open = False
            self._stored(event)
        elif isinstance(event, WaitingForLock):
            self.line(f"{event.describe()}; --no-wait exits instead")
        elif isinstance(event, GridStopped):
            self.stopped = event
            names = ", ".join(f"{r.model} {r.technique}" for r in event.not_started[:6])
            more = f" and {len(event.not_started) - 6} more" if len(event.not_started) > 6 else ""
            self.line(f"grid stopped: {event.cause}; {len(event.not_started)} runs not started"
                      + (f" ({names}{more})" if names else ""))

    def _describe_meters(self, event: RunBegan) -> None:
        """Say once per grid how each component is measured, and why where it is only estimated."""
        tracker = event.tracker
        described = ", ".join(f"{c} {tracker.method(c)}" for c in tracker.components())
        if described == self._meters_described:
            return
        self._meters_described = described
        self.line(f"energy: {described}")
        for component, why in event.fallbacks.items():
            self.line(f"energy: {component}: {why}")

    def _child(self, event: events.Event) -> None:
        if isinstance(event, events.BatchFinished):
            if self.tty and time.monotonic() - self._last_draw >= self._REDRAW_S:
                self._draw_bar(event)
        elif isinstance(event, events.EpochFinished):
            self.line(f"{self.label}: epoch {event.epoch} loss {event.train_loss:.4f} "
                      f"val acc {event.val_accuracy:.2%} f1 {event.val_f1:.3f} ({event.train_s + event.eval_s:.1f} s)")
        elif isinstance(event, events.ModelPrepared):
            for warning in event.warnings:
                self.line(f"{self.label}: warning: {warning}")
        elif isinstance(event, events.LogWritten):
            self.line(f"{self.label}: {event.message}")

    def _draw_bar(self, event: events.BatchFinished) -> None:
        self._last_draw = time.monotonic()
        width = 20
        filled = int(width * event.batch / max(event.batches, 1))
        watts = ""
        if self.tracker is not None:
            watts = " ".join(f"{c} {w:.0f}W" for c, w in self.tracker.latest().items())
        text = (f"{self.label} e{event.epoch} [{'#' * filled}{'.' * (width - filled)}] "
                f"{event.batch}/{event.batches} loss {event.loss:.3f} {watts}")
        columns = shutil.get_terminal_size((100, 20)).columns
        self.out.write("\r\033[K" + text[: columns - 1])
        self.out.flush()
        self._bar_shown = True

    def _stored(self, event: RunStored) -> None:
        row = event.row
        if event.status == "completed":
            self.line(f"{self.label}: completed in {row.get('duration_s') or 0:.1f} s, "
                      f"{report.format_energy(row.get('energy_j'))} "
                      f"(measured {report.format_energy(row.get('energy_measured_j'))}, "
                      f"estimated {report.format_energy(row.get('energy_estimated_j'))}), "
                      f"val acc {(row.get('val_accuracy') or 0):.2%}  [run {event.run_id}]")
        else:
            first = (event.error or "").splitlines()[0] if event.error else ""
            self.line(f"{self.label}: {event.status.upper()}: {first}  [run {event.run_id}]")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """Per model, each technique against its baseline: energy (whole run, and training alone), time and
    accuracy, with the change in percent (accuracy: in percentage points). The whole run includes start-up, data loading and compression
    (a capacity scan, say); the training column isolates what the compressed model costs to train."""
    groups = report.summarize(rows)
    if not groups:
        return "no completed runs to summarise"

    def energy(g: report.Group, metric: str) -> str:
        return report.format_energy(g.means[metric], g.ci[metric])

    header = (f"{'model':<14} {'technique':<14} {'n':>2} {'energy':>11} {'Δ':>8} {'training':>11} {'Δ':>8} "
              f"{'time':>8} {'Δ':>8} {'val acc':>8} {'Δ':>9}")
    lines = [header, "-" * len(header)]
    current = None
    for g in groups:
        if current is not None and g.model != current:
            lines.append("")
        current = g.model
        duration = g.means["duration_s"]
        accuracy = g.means["val_accuracy"]
        lines.append(
            f"{g.model:<14} {g.technique:<14} {g.runs:>2} {energy(g, 'energy_j'):>11} "
            f"{report.format_change(g.change['energy_j']):>8} {energy(g, 'energy_training_j'):>11} "
            f"{report.format_change(g.change['energy_training_j']):>8} "
            f"{(f'{duration:.1f}s' if duration is not None else '-'):>8} "
            f"{report.format_change(g.change['duration_s']):>8} "
            f"{(f'{accuracy:.1%}' if accuracy is not None else '-'):>8} "
            f"{report.format_change(g.change['val_accuracy'], 'val_accuracy'):>9}")
    return "\n".join(lines)


def verdicts(store: Store, grid: list[GridRun], metric: str = report.HEADLINE) -> str:
    """The grid's techniques judged against the store's matching baselines: table and sentences."""
    ids = {row["id"] for row in grid_rows(store, grid)}
    comparisons = report.compare(store.runs("status = 'completed'"), metrics=(metric,),
                                 include=lambda row: row["id"] in ids)
    return report_formats.verdict_summary(comparisons, metric)


def grid_rows(store: Store, grid: list[GridRun]) -> list[dict[str, Any]]:
    """The latest completed run of each grid entry (runs skipped this time included)."""
    keys = {run.settings_key() for run in grid}
    latest: dict[str, dict[str, Any]] = {}
    for row in store.runs("status = 'completed'"):
        if row["settings_key"] in keys:
            latest[row["settings_key"]] = row
    return list(latest.values())


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a CI job cancelled, `kill`) stops the grid like Ctrl-C: the run is stored as interrupted."""
    raise KeyboardInterrupt


def run_headless(path: str, *, db: str | None = None, force: bool = False, out: TextIO = sys.stdout,
                 wait: bool = True, sources: Sources | None = None) -> int:
    experiments = load_experiments(path)  # ConfigError propagates to the CLI: exit 2, nothing written
    grid = expand_grid(experiments)
    prepare_grid(grid, path, out=out, sources=sources)  # PreflightError/FetchError: exit 2, nothing written
    if not wait:
        ensure_free()  # LockBusy: exit 2 before the store file exists
    store = Store(db)
    progress = Progress(out, len(grid))
    supervisor = RunSupervisor(store, on_event=progress)
    progress.line(f"greenlab: {len(grid)} runs from {path} into {store.path}")
    previous_term = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        outcomes = supervisor.run_grid(grid, force=force, wait=wait)
    except KeyboardInterrupt:
        progress.line("interrupted: the run in progress is stored as interrupted" if progress.run_open
                      else "interrupted before a run began: nothing was stored")
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    update_energy_to_target(store)
    progress.line("")
    progress.line(summary_table(grid_rows(store, grid)))
    judged = verdicts(store, grid)
    if judged:
        progress.line("")
        progress.line(judged)
    measured = [o for o in outcomes if o.row.get("energy_measured_j")]
    if outcomes and not measured:
        progress.line("\nenergy: every figure above is an estimate (no RAPL or NVML here); see "
                      "runs.meters and energy_components.inputs for the formula's inputs")
    store.close()
    if any(o.status == "interrupted" for o in outcomes):
        return EXIT_INTERRUPTED
    if progress.stopped is not None or any(o.status == "failed" for o in outcomes):
        return EXIT_FAILED
    return EXIT_OK
