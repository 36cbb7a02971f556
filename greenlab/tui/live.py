"""The live pane: the queue of runs, and the current run's progress, metrics, power and energy.

Messages only store state here (the latest batch, epoch, log line); a timer redraws the widgets a few
times a second from that state and from the tracker's buffers (`history()`, read under its lock). So the
meter may sample at 10 Hz or more and batches may finish hundreds of times a second without the screen
redrawing more than `REDRAW_HZ` times. The energy shown while a run trains is integrated from the same
power samples for display; the stored figure (counter or estimate, see the runs pane) replaces it when
the run is stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from textual.app import ComposeResult
from rich.markup import escape
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import DataTable, Label, ProgressBar, Sparkline, Static
from textual_plotext import PlotextPlot

from greenlab.core.config import GridRun
from greenlab.core.report import format_energy
from greenlab.tui import messages

REDRAW_HZ = 4  # a few Hz reads as live without spending the CPU the training needs
PLOT_EVERY = 2  # the plotext chart is the costly part: redraw it every second tick
WINDOW_S = 60.0  # seconds of power shown in the chart and sparklines
MEASURED = ("counter", "polled")


def measured_label(methods: dict[str, str]) -> str:
    """measured | estimated | mixed, from each component's method (counter, polled, estimate)."""
    kinds = {"measured" if m in MEASURED else "estimated" for m in methods.values() if m != "unavailable"}
    if not kinds:
        return "unavailable"
    return kinds.pop() if len(kinds) == 1 else "mixed"


class RunningEnergy:
    """Joules per component since `t0`, integrated (trapezoid) from the tracker's power history.

    Incremental: each update adds only samples newer than the last one seen, so a history buffer that
    has since dropped old samples does not lose energy already counted.
    """

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.joules: dict[str, float] = {}
        self._last: dict[str, tuple[float, float]] = {}

    def update(self, tracker: Any) -> None:
        for component in tracker.components():
            last = self._last.get(component)
            for t, watts in tracker.history(component):
                if t < self.t0 or (last is not None and t <= last[0]):
                    continue
                if last is not None:
                    self.joules[component] = self.joules.get(component, 0.0) + (t - last[0]) * (watts + last[1]) / 2
                else:
                    self.joules.setdefault(component, 0.0)
                last = (t, watts)
            if last is not None:
                self._last[component] = last

    @property
    def total_j(self) -> float:
        return sum(self.joules.values())


@dataclass
class CurrentRun:
    """What the pane knows of the run in progress; messages write it, the timer reads it."""

    grid: int
    run_id: int
    run: GridRun
    began: float
    tracker: Any
    t0: float
    energy: RunningEnergy
    methods: dict[str, str]
    epochs: int
    queue_index: int | None = None  # its row in the queue table
    epoch: int = 0
    batch: int = 0
    batches: int = 0
    loss: float | None = None
    val_accuracy: float | None = None
    phase: str = "preparing"
    device: str = ""
    note: str = ""
    stored: dict[str, Any] | None = None  # the final row, once stored
    ended: float | None = None


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def run_label(run: GridRun) -> str:
    repeat = f" #{run.repeat + 1}" if run.settings.repeats > 1 else ""
    return f"{run.model} · {run.technique}{repeat}"


class LivePane(Vertical):
    """Queue on the left, current run on the right, power underneath."""

    def __init__(self, *, id: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(id=id)
        self.clock = clock  # injectable so snapshots and screenshots show fixed times
        self.current: CurrentRun | None = None
        self._ticks = 0
        self._components: list[str] = []
        self._queue_keys: dict[tuple[int, int], str] = {}
        self._queued_index: int | None = None
        self.note = "Nothing running: choose runs in Setup (key 1), then ctrl+r."

    def compose(self) -> ComposeResult:
        with Horizontal(id="live-top"):
            table = DataTable(id="queue", cursor_type="row", zebra_stripes=True)
            table.border_title = "Queue"
            yield table
            with Vertical(id="current"):
                yield Static("", id="run-title")
                with Horizontal(classes="bar-row"):
                    yield Label("epoch -", id="epoch-label", classes="bar-label")
                    yield ProgressBar(id="epoch-bar", show_eta=False)
                with Horizontal(classes="bar-row"):
                    yield Label("batch -", id="batch-label", classes="bar-label")
                    yield ProgressBar(id="batch-bar", show_eta=False)
                yield Static("", id="run-stats")
                with Horizontal(id="energy-row"):
                    # the badge first: at 80 columns the figures may wrap, the method must stay in sight
                    yield Label("", id="energy-method")
                    yield Static("", id="run-energy")
                yield Static("", id="run-note")
        with Horizontal(id="live-bottom"):
            plot = PlotextPlot(id="power-plot")
            plot.border_title = "Power (W)"
            yield plot
            sparks = Vertical(id="sparks")
            sparks.border_title = "Now"
            yield sparks

    def on_mount(self) -> None:
        table = self.query_one("#queue", DataTable)
        # Two columns keep the queue readable at 80 columns; the energy joins the status once stored.
        table.add_column("run", key="run")
        table.add_column("status", key="status")
        self.redraw()
        self.set_interval(1 / REDRAW_HZ, self.redraw, name="live-redraw")

    # -- queue ----------------------------------------------------------------------------------------
    def add_grid(self, grid: int, runs: list[GridRun]) -> None:
        table = self.query_one("#queue", DataTable)
        for index, run in enumerate(runs):
            key = f"g{grid}-{index}"
            self._queue_keys[(grid, index)] = key
            table.add_row(run_label(run), "waiting", key=key)

    def set_queue_status(self, grid: int, index: int | None, status: str, energy: str | None = None) -> None:
        if index is None:
            return
        key = self._queue_keys.get((grid, index))
        if key is None:
            return
        table = self.query_one("#queue", DataTable)
        text = {"completed": "done", "interrupted": "stopped"}.get(status, status)
        if energy is not None:
            text += f" {energy}"
        table.update_cell(key, "status", text, update_width=True)

    def end_grid(self, grid: int, cancelled: bool) -> None:
        """Rows of a grid that never ran are marked, so the queue tells what happened to each."""
        table = self.query_one("#queue", DataTable)
        for (g, _index), key in self._queue_keys.items():
            if g == grid and table.get_row(key)[1] in ("waiting", "starting", "running"):
                table.update_cell(key, "status", "cancelled" if cancelled else "not run", update_width=True)

    # -- messages (state only; the timer draws) -------------------------------------------------------
    def handle(self, message: messages.GridMessage) -> None:
        current = self.current
        if isinstance(message, messages.RunQueued):
            self._queued_index = message.index
            self.set_queue_status(message.grid, message.index, "starting")
            self.note = f"[{message.index + 1}/{message.total}] {run_label(message.run)}: preparing"
        elif isinstance(message, messages.RunSkipped):
            self.set_queue_status(message.grid, message.index, "skipped")
            self.note = f"skipped {run_label(message.run)}: {message.reason} (tick force rerun in Setup)"
        elif isinstance(message, messages.IdleMeasured):
            watts = ", ".join(f"{c} {w:.1f} W" for c, w in message.watts.items()) or "nothing measurable"
            self.note = f"idle baseline over {message.seconds:g} s: {watts}"
        elif isinstance(message, messages.CoolingDown):
            temps = ", ".join(f"{c} {t:.0f} °C" for c, t in message.temperatures.items())
            self.note = f"cooling down to {message.target_c:g} °C: {temps}"
        elif isinstance(message, messages.GridNote):
            self.note = message.text
            if current is not None:
                current.note = message.text
        elif isinstance(message, messages.RunBegan):
            tracker = message.tracker
            t0 = tracker.now()
            index = self._queued_index
            self.current = CurrentRun(
                grid=message.grid, run_id=message.run_id, run=message.run, began=self.clock(), tracker=tracker,
                t0=t0, energy=RunningEnergy(t0), methods={c: tracker.method(c) for c in tracker.components()},
                epochs=message.run.settings.epochs, queue_index=index)
            self.set_queue_status(message.grid, index, "running")
            self._mount_sparks(tracker.components())
            self.note = ""
        elif current is None or getattr(message, "run_id", current.run_id) != current.run_id:
            return
        elif isinstance(message, messages.RunStarted):
            current.device = message.started.device
            current.batches = message.started.batches_per_epoch
            current.epochs = message.started.epochs
            current.note = f"{message.started.n_train} training examples, {message.started.input_description}"
        elif isinstance(message, messages.ModelPrepared):
            if message.warnings:
                current.note = "warning: " + message.warnings[-1]
        elif isinstance(message, messages.PhaseChanged):
            current.phase = message.phase
            current.epoch = message.epoch
            if message.phase == "train":
                current.batch = 0
        elif isinstance(message, messages.BatchProgressed):
            current.epoch, current.batch, current.batches, current.loss = (
                message.epoch, message.batch, message.batches, message.loss)
            current.phase = "train"
        elif isinstance(message, messages.EpochFinished):
            result = message.result
            current.val_accuracy = result.val_accuracy
            current.loss = result.train_loss
            current.epoch = result.epoch
            current.batch = current.batches
        elif isinstance(message, messages.RunLogged):
            current.note = message.text
        elif isinstance(message, messages.RunStored):
            current.energy.update(current.tracker)
            current.stored = message.row
            current.ended = self.clock()
            current.phase = message.status
            energy = format_energy(message.row.get("energy_j"))
            self.set_queue_status(message.grid, current.queue_index, message.status, energy)
            if message.error:
                current.note = f"{message.status}: {message.error.splitlines()[0]}"

    # -- drawing --------------------------------------------------------------------------------------
    def _mount_sparks(self, components: list[str]) -> None:
        if components == self._components:
            return
        self._components = list(components)
        sparks = self.query_one("#sparks", Vertical)
        sparks.remove_children()
        for component in components:
            sparks.mount(Static(component, id=f"spark-label-{component}", classes="spark-label"))
            sparks.mount(Sparkline([], id=f"spark-{component}", summary_function=max))

    def redraw(self) -> None:
        self._ticks += 1
        current = self.current
        title = self.query_one("#run-title", Static)
        stats = self.query_one("#run-stats", Static)
        energy_text = self.query_one("#run-energy", Static)
        method = self.query_one("#energy-method", Label)
        note = self.query_one("#run-note", Static)
        if current is None:
            title.update("[b]No run in progress[/]")
            stats.update("")
            energy_text.update("")
            method.display = False
            note.update(Content(self.note))
            self._bars(0, None, 0, None, "epoch -", "batch -")
            return
        if current.stored is None:
            current.energy.update(current.tracker)
        run = current.run
        device = f" on {current.device}" if current.device else ""
        phase = {"train": "training", "eval": "evaluating"}.get(current.phase, current.phase)
        title.update(f"[b]{escape(run_label(run))}[/] [dim]{phase}[/]  run {current.run_id}{escape(device)}")
        batches = max(current.batches, 1)
        # the epoch bar moves with the batches, so a long epoch does not look stalled
        epochs_done = max(current.epoch - 1, 0) + current.batch / batches
        completed = current.stored is not None and current.phase == "completed"
        self._bars(current.epochs if completed else epochs_done, current.epochs,
                   current.batch, batches,
                   f"epoch {current.epoch}/{current.epochs}", f"batch {current.batch}/{current.batches}")
        end = current.ended if current.ended is not None else self.clock()
        elapsed = end - current.began
        done = ((max(current.epoch, 1) - 1) * batches + current.batch) / (batches * max(current.epochs, 1))
        eta = None if current.stored is not None or done <= 0 else elapsed * (1 - done) / done
        loss = f"{current.loss:.4f}" if current.loss is not None else "-"
        accuracy = f"{current.val_accuracy:.1%}" if current.val_accuracy is not None else "-"
        ends = _clock_text(eta) if current.stored is None else ("done" if completed else "-")
        stats.update(f"elapsed {_clock_text(elapsed)}  ETA {ends}"
                     f"  loss {loss}  val acc {accuracy}")
        self._energy(current, energy_text, method)
        note.update(Content(current.note or self.note))  # log lines and errors: text, not markup
        self._sparks(current)
        if self._ticks % PLOT_EVERY == 0 or current.stored is not None:
            self._plot(current)

    def _bars(self, epoch: float, epochs: float | None, batch: float, batches: float | None,
              epoch_label: str, batch_label: str) -> None:
        epoch_bar = self.query_one("#epoch-bar", ProgressBar)
        batch_bar = self.query_one("#batch-bar", ProgressBar)
        epoch_bar.update(total=epochs, progress=epoch)
        batch_bar.update(total=batches, progress=batch)
        self.query_one("#epoch-label", Label).update(epoch_label)
        self.query_one("#batch-label", Label).update(batch_label)

    def _energy(self, current: CurrentRun, energy_text: Static, method: Label) -> None:
        if current.stored is not None:
            row = current.stored
            joules = row.get("energy_j")
            measured, estimated = row.get("energy_measured_j") or 0.0, row.get("energy_estimated_j") or 0.0
            kind = "measured" if measured and not estimated else ("estimated" if estimated and not measured
                                                                   else ("mixed" if joules else "unavailable"))
            wh = f"{joules / 3600:.3f} Wh" if joules is not None else "-"
            energy_text.update(f"stored [b]{format_energy(joules)}[/]  {wh}")
        else:
            joules = current.energy.total_j
            kind = measured_label(current.methods)
            energy_text.update(f"[b]{joules:,.1f} J[/]  {joules / 3600:.3f} Wh")
        method.display = True
        method.update(kind.upper())
        for name in ("measured", "estimated", "mixed", "unavailable"):
            method.set_class(name == kind, f"-{name}")

    def _window(self, current: CurrentRun, component: str) -> list[tuple[float, float]]:
        history = current.tracker.history(component)
        end = current.tracker.now() if current.stored is None else (history[-1][0] if history else current.t0)
        start = max(current.t0, end - WINDOW_S)
        return [(t - current.t0, w) for t, w in history if t >= start]

    def _sparks(self, current: CurrentRun) -> None:
        for component in self._components:
            points = self._window(current, component)
            watts = points[-1][1] if points else None
            kind = "meas." if current.methods.get(component) in MEASURED else "est."
            joules = current.energy.joules.get(component, 0.0)
            label = f"{component:<5}{watts:>7.1f} W {kind:<5} {joules:>8.1f} J" if watts is not None \
                else f"{component:<5}      - W {kind}"
            self.query_one(f"#spark-label-{component}", Static).update(label)
            # Sparkline repaints on reassignment only: always give it a new list
            self.query_one(f"#spark-{component}", Sparkline).data = [w for _t, w in points[-120:]]

    def _plot(self, current: CurrentRun) -> None:
        plot = self.query_one("#power-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for component in self._components:
            points = self._window(current, component)
            if points:
                plt.plot([t for t, _w in points], [w for _t, w in points], label=component, marker="braille")
        plt.xlabel("seconds since the run began")
        plot.refresh()
