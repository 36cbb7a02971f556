"""The presenter: folds a grid's events (its session's, its driver's, each run's) into immutable snapshots.

Both faces read the same understanding of a running grid from here: the queue with statuses, each run in
flight (several at once on Ray) with its phase, epoch, batch, loss and accuracy and how its energy is
obtained, the latest note and a log of what happened, already worded (greenlab.core.report.formatting). This is
the one place that dispatches over event types; the headless driver prints what changed between two
snapshots and the TUI renders them.

Time-dependent figures (elapsed, ETA, the running energy from the tracker's own windows) are computed by
`live(view, now)` when a face draws, so a snapshot stays valid between events. Thread-safe: events may
arrive on a worker thread while a face takes snapshots on another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from greenlab.core.grid.forecast import Forecast
from greenlab.core.grid.grid_events import GridEvent, HostTaken, RunQueued, RunSkipped
from greenlab.core.grid.stop_rules import GridStopped
from greenlab.core.measure import hostload
from greenlab.core.measure.host_lock import WaitingForLock
from greenlab.core.plan.config import GridRun
from greenlab.core.plan.fetch import (
    DownloadEvent,
    DownloadFailed,
    DownloadFinished,
    DownloadProgressed,
    DownloadStarted,
    format_progress,
)
from greenlab.core.report import compare, formatting
from greenlab.core.run.run_events import (
    ChildEvent,
    CoolingDown,
    IdleMeasured,
    Notice,
    RunBegan,
    RunMetered,
    RunStored,
)
from greenlab.core.store.rows import RunRow
from greenlab.core.train import child_events

LOG_LIMIT = 200  # lines kept in a snapshot; faces keep what they printed themselves
QUEUED_BEFORE = "queued before"  # a run an earlier grid in the queue will store first: this grid will skip it
FINAL_STATUSES = ("completed", "failed", "interrupted", "skipped", "cancelled", "not run")


@dataclass(frozen=True)
class QueueEntry:
    grid: int
    index: int
    label: str
    status: str  # waiting | starting | running | completed | failed | interrupted | skipped | cancelled | not run
    run_id: int | None = None
    energy_j: float | None = None
    model: str = ""
    key: str = ""  # the run's settings key: its own forecast (Forecast.seconds_by_key)
    diverged: bool = False  # completed, but its loss ran away or its accuracy stayed at chance
    paused: bool = False  # completed, but its process was stopped mid-run: energy and time include the pause

    @property
    def shown_status(self) -> str:
        """The status as faces show it: a completed run that diverged says so, as the runs table does; a run a
        cancel kept from starting is "not run", as the grid's closing message counts it."""
        if self.status == "cancelled":
            return "not run"
        if self.status == "completed" and (self.diverged or self.paused):
            return "diverged" if self.diverged else "paused"
        return self.status


@dataclass(frozen=True)
class LogLine:
    seq: int  # increases by one per line, across the presenter's life
    text: str
    level: str = "info"  # info | warning | error | progress (a line a face with a live bar may skip)


@dataclass(frozen=True)
class RunView:
    """A run in progress (or the last one, once stored), as the faces show it."""

    grid: int
    run_id: int
    run: GridRun
    label: str
    began: float  # the presenter's clock when its row was written
    tracker: Any  # the live power source (an EnergyTracker, or a RemoteTracker for a Ray node's run): thread-safe
    t0: float  # tracker time at the run's start
    methods: dict[str, str]
    index: int | None = None  # its place in the grid's queue
    counted: tuple[str, ...] | None = None  # the components whose energy is the run's (None: all metered)
    phase: str = "preparing"  # preparing | train | eval | completed | failed | interrupted
    device: str = ""
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    loss: float | None = None
    val_accuracy: float | None = None
    note: str = ""
    warnings: tuple[str, ...] = ()
    stored: RunRow | None = None  # the final row
    ended: float | None = None

    @property
    def kind(self) -> str:
        """How the run's energy is obtained: measured | estimated | mixed | unavailable."""
        if self.stored is not None:
            return formatting.kind_of_row(self.stored)
        return formatting.kind_of_methods(self.methods)

    @property
    def done_fraction(self) -> float:
        batches = max(self.batches, 1)
        return ((max(self.epoch, 1) - 1) * batches + self.batch) / (batches * max(self.epochs, 1))


@dataclass(frozen=True)
class Live:
    """A run's time-dependent figures at one moment (see `live`)."""

    elapsed_s: float
    eta_s: float | None
    energy_j: float | None
    component_j: dict[str, float]


@dataclass(frozen=True)
class GridProgress:
    """One grid as a whole: how many of its runs will really run (those already stored are skipped), how
    far it got, what it is doing between runs (the idle baseline is a phase too), and, once it ended, its
    counts. Time figures use the presenter's clock."""

    grid: int
    total: int  # entries in the grid
    skipped: int = 0  # already stored: marked when the grid is added, or when the driver skips them
    began: float | None = None  # the first run queued
    phase: str = "waiting to start"
    forecast: Forecast | None = None  # of the runs it will really run, made before it was queued
    run_seconds: tuple[float, ...] = ()  # each run's time from queued to stored (start-up and idle included)
    took: tuple[tuple[str, str, float], ...] = ()  # (model, run key, seconds) of each run stored, as run_seconds
    counts: tuple[tuple[str, int], ...] = ()  # status -> runs, once it ended
    ended: bool = False
    queued_at: float | None = None  # when its latest run was queued
    idle_measured: bool = False  # its idle baseline was measured (once per grid, by default)
    ran_s: float | None = None  # from its start to its end, once it ended
    used_j: tuple[float | None, ...] = ()  # its stored runs' energies, once it ended
    waited_s: float = 0.0  # time spent waiting for another grid's host lock: not the grid's own

    @property
    def to_run(self) -> int:
        return self.total - self.skipped

    @property
    def forecast_s(self) -> float | None:
        return self.forecast.seconds if self.forecast is not None else None

    def message(self) -> str:
        """'grid 2 finished: 20 completed, 1 failed, 0 interrupted, 3 skipped (already stored)'."""
        counts = dict(self.counts)
        text = (
            f"grid {self.grid} {'stopped' if counts.get('cancelled') else 'finished'}: "
            f"{counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed, "
            f"{counts.get('interrupted', 0)} interrupted, {counts.get('skipped', 0)} skipped (already stored)"
        )
        left = counts.get("cancelled", 0) + counts.get("not run", 0)
        text += f", {left} not run" + (" (cancelled)" if counts.get("cancelled") else "") if left else ""
        if self.forecast is not None and self.forecast.runs and self.ran_s is not None and not left:
            against = self.forecast.against(self.ran_s, self.used_j, waited_s=self.waited_s)
            text += f"; forecast against the grid: {against}"
        elif self.waited_s:
            text += f"; waited {formatting.duration(self.waited_s)} for the host"
        return text


def grid_eta(progress: GridProgress, remaining: Iterable[QueueEntry], current_left_s: float | None) -> float | None:
    """Seconds until the grid ends: the run in progress's own ETA, plus each `remaining` run's own forecast
    (a resnet18 run takes ten times a tinycnn one), times the pace its model's runs of this grid kept against
    their forecasts so far (else the grid's pace, else 1). A run without a forecast of its own counts at the
    mean time of its model's runs so far, else of the grid's, else the forecast's mean; None when nothing
    tells."""
    forecast = progress.forecast.seconds_by_key if progress.forecast is not None else {}
    spent: dict[str, list[float]] = {}  # model -> [actual seconds, forecast seconds] of runs with a forecast
    means: dict[str, list[float]] = {}  # model -> actual seconds of every run stored
    for model, key, seconds in progress.took:
        means.setdefault(model, []).append(seconds)
        if forecast.get(key):
            pair = spent.setdefault(model, [0.0, 0.0])
            pair[0] += seconds
            pair[1] += forecast[key]
    overall = [sum(p[0] for p in spent.values()), sum(p[1] for p in spent.values())]
    grid_pace = overall[0] / overall[1] if overall[1] else 1.0
    every = [s for seconds in means.values() for s in seconds]
    fallback = (
        sum(every) / len(every)
        if every
        else (progress.forecast_s / progress.to_run if progress.forecast_s and progress.to_run else None)
    )
    total = current_left_s
    for entry in remaining:
        own = forecast.get(entry.key)
        if own:
            kept = spent.get(entry.model)
            seconds = own * (kept[0] / kept[1] if kept else grid_pace)
        elif entry.model in means:
            seconds = sum(means[entry.model]) / len(means[entry.model])
        elif fallback is not None:
            seconds = fallback
        else:
            continue
        total = (total or 0.0) + seconds
    return total


@dataclass(frozen=True)
class GridSnapshot:
    """`running` holds every run begun and not yet stored, in start order (one at a time locally, several on
    Ray); `current` is the most recently begun of them, or, when none runs, the last one stored."""

    queue: tuple[QueueEntry, ...] = ()
    current: RunView | None = None
    running: tuple[RunView, ...] = ()
    note: str = "Nothing running."
    log: tuple[LogLine, ...] = ()
    stored: tuple[int, ...] = ()  # run ids stored so far, in order
    stopped: str | None = None  # why the grid stopped early
    version: int = 0
    grids: tuple[GridProgress, ...] = ()  # in the order they were added

    def new_lines(self, after: int) -> list[LogLine]:
        """Log lines with a sequence number above `after` (what a face has not shown yet)."""
        return [line for line in self.log if line.seq > after]

    @property
    def active_grid(self) -> GridProgress | None:
        """The grid that has begun and not ended (the first of them), if any."""
        return next((g for g in self.grids if g.began is not None and not g.ended), None)

    @property
    def last_grid(self) -> GridProgress | None:
        return self.grids[-1] if self.grids else None

    def position(self, grid: int) -> int:
        """How many of the grid's runs have been reached (queued, running or stored, skipped ones aside)."""
        return sum(
            1
            for e in self.queue
            if e.grid == grid and e.status not in ("waiting", "skipped", QUEUED_BEFORE, "cancelled", "not run")
        )

    def waiting(self) -> int:
        """Runs queued that will really run and have not begun (already stored ones are not counted)."""
        return sum(1 for e in self.queue if e.status == "waiting")

    def remaining(self, grid: int, *, current_running: bool) -> list[QueueEntry]:
        """The grid's runs still to come: those waiting, and the one starting unless its run is under way
        (then the run in progress's own ETA counts for it)."""
        ahead = ("waiting",) if current_running else ("waiting", "starting")
        return [e for e in self.queue if e.grid == grid and e.status in ahead]


def live(view: RunView, now: float) -> Live:
    """Elapsed time, ETA and energy of `view` at `now` (the presenter's clock): the stored figure once the
    run is stored, else what the tracker's own readings give since the run began."""
    end = view.ended if view.ended is not None else now
    elapsed = max(0.0, end - view.began)
    done = view.done_fraction
    eta = None if view.stored is not None or done <= 0 else elapsed * (1 - done) / done
    if view.stored is not None:
        return Live(elapsed, None, view.stored.energy_j, {})
    components = view.tracker.running_j(view.t0) if view.tracker is not None else {}
    if view.counted is not None:  # a GPU metered but not used by the run is not its energy
        components = {c: j for c, j in components.items() if c in view.counted}
    return Live(elapsed, eta, sum(components.values()) if components else None, components)


@dataclass
class _State:
    queue: list[QueueEntry] = field(default_factory=list)
    running: dict[int, RunView] = field(default_factory=dict)  # run id -> view, in start order
    last: RunView | None = None  # the last run stored (or begun)
    note: str = "Nothing running."
    log: list[LogLine] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    stopped: str | None = None
    version: int = 0
    seq: int = 0
    queued: dict[int, list[tuple[int, GridRun]]] = field(default_factory=dict)  # grid -> runs being prepared
    meters_described: str = ""
    download_quarters: dict[str, int] = field(default_factory=dict)
    grids: dict[int, GridProgress] = field(default_factory=dict)

    @property
    def current(self) -> RunView | None:
        return next(reversed(self.running.values()), None) if self.running else self.last


class GridPresenter:
    """Folds events into snapshots; `hints` adds a face's own advice, e.g. {"skipped": "--force reruns"}."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, hints: dict[str, str] | None = None) -> None:
        self.clock = clock
        self.hints = hints or {}
        self._state = _State()
        self._lock = threading.Lock()

    # -- the snapshot -------------------------------------------------------------------------------
    def snapshot(self) -> GridSnapshot:
        with self._lock:
            state = self._state
            return GridSnapshot(
                queue=tuple(state.queue),
                current=state.current,
                running=tuple(state.running.values()),
                note=state.note,
                log=tuple(state.log),
                stored=tuple(state.stored),
                stopped=state.stopped,
                version=state.version,
                grids=tuple(state.grids.values()),
            )

    def _say(self, text: str, level: str = "info", note: bool = True) -> None:
        state = self._state
        state.seq += 1
        state.log.append(LogLine(state.seq, text, level))
        del state.log[:-LOG_LIMIT]
        if note:
            state.note = text

    def _hinted(self, text: str, key: str) -> str:
        hint = self.hints.get(key)
        return f"{text}; {hint}" if hint else text

    def _set_status(self, grid: int, index: int | None, status: str, **values: Any) -> None:
        for position, entry in enumerate(self._state.queue):
            if entry.grid == grid and entry.index == index:
                self._state.queue[position] = replace(entry, status=status, **values)
                return

    def _take_queued(self, grid: int, run: GridRun, *, or_latest: bool = True) -> int | None:
        """The queue index of `run`, queued in `grid` and now begun (or stored without beginning); several
        runs may be queued at once (on Ray), so it is found by the run, else the latest queued is taken."""
        pending = self._state.queued.get(grid, [])
        for position, (_index, queued) in enumerate(pending):
            if queued == run:
                return pending.pop(position)[0]
        return pending.pop()[0] if pending and or_latest else None

    # -- grids --------------------------------------------------------------------------------------
    def add_grid(
        self,
        grid: int,
        runs: list[GridRun],
        *,
        skip: Iterable[int] = (),
        queued: Iterable[int] = (),
        forecast: Forecast | None = None,
    ) -> GridSnapshot:
        """Queue a grid's runs; `skip` are the indices already stored and `queued` those an earlier grid in
        the queue will store first (both will be skipped, so neither counts as a run to come); `forecast`
        that of the rest (the grid's first ETA, and how far it was off in the closing message)."""
        skipped, before = set(skip), set(queued) - set(skip)
        with self._lock:
            for index, run in enumerate(runs):
                label = formatting.run_label(run.model, run.technique, run.repeat, run.settings.repeats)
                status = "skipped" if index in skipped else QUEUED_BEFORE if index in before else "waiting"
                self._state.queue.append(
                    QueueEntry(grid, index, label, status, model=run.model, key=run.settings_key())
                )
            self._state.grids[grid] = GridProgress(grid, len(runs), len(skipped) + len(before), forecast=forecast)
            self._state.version += 1
        return self.snapshot()

    def start_grid(self, grid: int) -> GridSnapshot:
        """The grid's driver starts: before its first run it may wait for the host, start the fork server
        and warm the machine up with an unmeasured run — a phase of its own, not "nothing running"."""
        with self._lock:
            progress = self._state.grids.get(grid)
            if progress is not None and progress.began is None:
                self._phase(grid, "checking and warming up (an unmeasured run first)", began=self.clock())
            self._state.version += 1
        return self.snapshot()

    def end_grid(self, grid: int, cancelled: bool) -> GridSnapshot:
        """Runs of a grid that never ran are marked, so the queue tells what happened to each; the grid's
        counts become its closing message."""
        with self._lock:
            state = self._state
            for position, entry in enumerate(state.queue):
                if entry.grid == grid and entry.status in ("waiting", QUEUED_BEFORE, "starting", "running"):
                    state.queue[position] = replace(entry, status="cancelled" if cancelled else "not run")
            progress = state.grids.get(grid)
            if progress is not None:
                counts: dict[str, int] = {}
                for entry in state.queue:
                    if entry.grid == grid:
                        counts[entry.status] = counts.get(entry.status, 0) + 1
                progress = replace(
                    progress,
                    ended=True,
                    phase="ended",
                    counts=tuple(counts.items()),
                    ran_s=self.clock() - progress.began - progress.waited_s if progress.began is not None else None,
                    used_j=tuple(e.energy_j for e in state.queue if e.grid == grid),
                )
                state.grids[grid] = progress
                # Logged, not the note: the live pane shows it on the grid's own line.
                self._say(progress.message(), "info" if not counts.get("failed") else "warning", note=False)
            state.version += 1
        return self.snapshot()

    def _phase(self, grid: int, phase: str, **values: Any) -> None:
        progress = self._state.grids.get(grid)
        if progress is not None:
            self._state.grids[grid] = replace(progress, phase=phase, **values)

    # -- events -------------------------------------------------------------------------------------
    def apply(self, event: GridEvent | DownloadEvent, grid: int = 0) -> GridSnapshot:
        """Fold one event of grid `grid` into the state; returns the new snapshot."""
        with self._lock:
            self._fold(event, grid)
            self._state.version += 1
        return self.snapshot()

    def _fold(self, event: Any, grid: int) -> None:
        state = self._state
        match event:
            case RunQueued(index=index, total=total, run=run):
                state.queued.setdefault(grid, []).append((index, run))
                self._set_status(grid, index, "starting")
                label = formatting.run_label(run.model, run.technique, run.repeat, run.settings.repeats)
                self._say(f"[{index + 1}/{total}] {label}: starting")
                progress = state.grids.get(grid)
                now = self.clock()
                idle = run.settings.idle_s
                measuring = idle > 0 and (
                    run.settings.idle_scope != "grid" or progress is None or not progress.idle_measured
                )
                self._phase(
                    grid,
                    f"measuring the idle baseline ({idle:g} s)" if measuring else "starting the run",
                    began=progress.began if progress is not None and progress.began is not None else now,
                    queued_at=now,
                )
            case RunSkipped(index=index, run=run, reason=reason):
                entry = next((e for e in state.queue if e.grid == grid and e.index == index), None)
                progress = state.grids.get(grid)
                if progress is not None and entry is not None and entry.status not in ("skipped", QUEUED_BEFORE):
                    state.grids[grid] = replace(progress, skipped=progress.skipped + 1)  # not foreseen
                self._set_status(grid, index, "skipped")
                label = formatting.run_label(run.model, run.technique, run.repeat, run.settings.repeats)
                self._say(self._hinted(f"[{index + 1}] {label}: skipped ({reason})", "skipped"))
            case IdleMeasured(watts=watts, seconds=seconds, host_load=load):
                busy = bool(watts) and hostload.busy(load)  # only a measured baseline suffers
                self._say(formatting.idle_text(watts, seconds, load), "warning" if busy else "info")
                self._phase(grid, "starting the run", idle_measured=True)
            case CoolingDown(temperatures=temperatures, target_c=target_c):
                self._say(formatting.cooling_text(temperatures, target_c))
                self._phase(grid, "cooling down")
            case RunBegan():
                self._began(event, grid)
            case ChildEvent(run_id=run_id, event=child) if run_id in state.running:
                self._child(state.running[run_id], child)
            case RunMetered(run_id=run_id, components=components) if run_id in state.running:
                state.running[run_id] = replace(state.running[run_id], counted=tuple(components))
            case RunStored():
                self._stored(event, grid)
            case Notice(text=text):
                self._say(text, "warning")
            case WaitingForLock():
                self._say(self._hinted(event.describe(), "waiting"))
                progress = state.grids.get(grid)
                began = progress.began if progress is not None and progress.began is not None else self.clock()
                self._phase(grid, "waiting for the host (another grid is measuring)", began=began)
            case HostTaken(waited_s=waited):
                self._say(f"the host is free after {formatting.duration(waited)}: the grid starts", note=False)
                progress = state.grids.get(grid)
                if progress is not None:
                    self._phase(grid, "checking and warming up", waited_s=progress.waited_s + waited)
            case GridStopped(cause=cause, not_started=not_started):
                names = ", ".join(f"{r.model} {r.technique}" for r in not_started[:6])
                more = f" and {len(not_started) - 6} more" if len(not_started) > 6 else ""
                state.stopped = cause
                self._say(
                    f"grid stopped: {cause}; {len(not_started)} run{'s' * (len(not_started) != 1)} not started"
                    + (f" ({names}{more})" if names else ""),
                    "error",
                )
            case DownloadProgressed(what=what, done_bytes=done, total_bytes=total):
                # Many a second: the note carries each; the log only each quarter, for faces without a bar.
                state.note = format_progress(event)
                quarter = int(4 * done / total) if total else 0
                if quarter > state.download_quarters.get(what, 0):
                    state.download_quarters[what] = quarter
                    self._say(state.note, "progress")
            case DownloadStarted() | DownloadFinished():
                self._say(format_progress(event))
            case DownloadFailed(what=what, reason=reason):
                reason = reason.removeprefix(f"{what}: ")  # a FetchError's message names its file already
                self._say(f"{what}: FAILED: {reason}", "error")

    def _began(self, event: RunBegan, grid: int) -> None:
        state = self._state
        tracker = event.tracker
        run = event.run
        index = self._take_queued(grid, run)
        methods = tracker.methods()
        state.running.pop(event.run_id, None)  # a retried run begins again: it moves to the end
        state.running[event.run_id] = state.last = RunView(
            grid=grid,
            run_id=event.run_id,
            run=run,
            label=formatting.run_label(run.model, run.technique, run.repeat, run.settings.repeats),
            began=self.clock(),
            tracker=tracker,
            t0=tracker.now() if hasattr(tracker, "now") else self.clock(),
            methods=methods,
            index=index,
            epochs=run.settings.epochs,
        )
        self._set_status(grid, index, "running", run_id=event.run_id)
        self._phase(grid, "running")
        described = ", ".join(f"{c} {m}" for c, m in methods.items())
        if described != state.meters_described:  # once per grid, and again if the meters change
            state.meters_described = described
            self._say(f"energy: {described}", note=False)
            for component, why in event.fallbacks.items():
                self._say(f"energy: {component}: {why}", note=False)
        state.note = ""

    def _child(self, view: RunView, event: child_events.Event) -> None:
        def update(**changes: Any) -> None:
            self._state.running[view.run_id] = replace(view, **changes)

        match event:
            case child_events.RunStarted():
                update(
                    device=event.device,
                    batches=event.batches_per_epoch,
                    epochs=event.epochs,
                    note=f"{event.n_train} training examples, {event.input_description}",
                )
            case child_events.ModelPrepared(warnings=warnings):
                update(warnings=tuple(warnings), note=f"warning: {warnings[-1]}" if warnings else view.note)
                for warning in warnings:
                    self._say(f"{view.label}: warning: {warning}", "warning")
            case child_events.PhaseBegan(epoch=epoch, phase=phase):
                update(phase=phase, epoch=epoch, batch=0 if phase == "train" else view.batch)
            case child_events.BatchFinished(epoch=epoch, batch=batch, batches=batches, loss=loss):
                update(phase="train", epoch=epoch, batch=batch, batches=batches, loss=loss)
            case child_events.EpochFinished():
                update(epoch=event.epoch, batch=view.batches, loss=event.train_loss, val_accuracy=event.val_accuracy)
                self._say(
                    f"{view.label}: epoch {event.epoch} loss {formatting.loss(event.train_loss)} val acc "
                    f"{event.val_accuracy:.2%} f1 {event.val_f1:.3f} ({formatting.duration(event.duration_s)})",
                    note=False,
                )
            case child_events.LogWritten(message=message):
                update(note=message)
                self._say(f"{view.label}: {message}", note=False)
            case (
                child_events.PhaseEnded()
                | child_events.RunFinished()
                | child_events.RunFailed()
                | child_events.ProcessEnding()
            ):
                pass  # the stored outcome (RunStored) tells these

    def _stored(self, event: RunStored, grid: int) -> None:
        state = self._state
        # The write side's columns as the faces read every stored run: typed, its JSON columns decoded.
        row = RunRow.from_stored({"id": event.run_id, **event.row})
        view = state.running.pop(event.run_id, None)
        label = (
            view.label
            if view is not None
            else formatting.run_label(
                event.run.model, event.run.technique, event.run.repeat, event.run.settings.repeats
            )
        )
        if view is not None:
            state.last = replace(
                view,
                stored=row,
                ended=self.clock(),
                phase=event.status,
                note=f"{event.status}: {event.error.splitlines()[0]}" if event.error else view.note,
            )
            self._set_status(
                grid,
                view.index,
                event.status,
                energy_j=row.energy_j,
                diverged=compare.diverged(row),
                paused=compare.paused(row),
            )
        else:  # stored without having begun (a Ray task that died on its node before its run started)
            index = self._take_queued(grid, event.run, or_latest=False)
            if index is not None:
                self._set_status(grid, index, event.status, run_id=event.run_id)
        state.stored.append(event.run_id)
        progress = state.grids.get(grid)
        if progress is not None:
            took = self.clock() - (progress.queued_at if progress.queued_at is not None else self.clock())
            self._phase(
                grid,
                "between runs",
                run_seconds=(*progress.run_seconds, took),
                took=(*progress.took, (event.run.model, event.run.settings_key(), took)),
            )
        if event.status == "completed":
            self._say(
                f"{label}: completed in {formatting.duration(row.duration_s)}, "
                f"{formatting.energy(row.energy_j)} "
                f"(measured {formatting.energy(row.energy_measured_j)}, "
                f"estimated {formatting.energy(row.energy_estimated_j)}), "
                f"val acc {formatting.accuracy(row.val_accuracy)}  [run {event.run_id}]"
                + (f"; not in the store: its record is kept in {event.kept_in}" if event.kept_in else "")
            )
            busy = formatting.host_busy(row)
            if busy:
                self._say(f"{label}: {busy}", "warning")
        else:
            first = event.error.splitlines()[0] if event.error else ""
            self._say(
                f"{label}: {event.status.upper()}: {first}  [run {event.run_id}]",
                "warning" if event.status == "interrupted" else "error",
            )
