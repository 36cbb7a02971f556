"""The live pane: the queue of runs, and the current run's progress, metrics, power and energy.

It renders the presenter's snapshot (greenlab.core.grid.presenter): `snapshot` is reactive, and watching it
updates the queue and the run's state. A timer redraws what changes with time alone — elapsed time, ETA,
the running energy (from the tracker's own readings, `progress.live`) and the power chart (from the
tracker's buffers) — a few times a second. So the meter may sample at 10 Hz or more and batches may finish
hundreds of times a second without the screen redrawing more than `REDRAW_HZ` times. The stored figure
(counter or estimate) replaces the running one when the run is stored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.markup import escape
from textual import events, getters
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.widgets import DataTable, Label, ProgressBar, Sparkline, Static
from textual_plotext import PlotextPlot

from greenlab.core.grid.presenter import QUEUED_BEFORE, GridProgress, GridSnapshot, RunView, grid_eta, live
from greenlab.core.measure.meter import MEASURED_METHODS
from greenlab.core.report import compare, formatting
from greenlab.core.text import escape_controls
from greenlab.tui.boxes import titled
from greenlab.tui.charts import legend_fits, legend_headroom

# Drawing costs the CPU the measured run needs (on two cores, 4 Hz with the chart at 2 Hz took half a core):
# twice a second reads as live, and the chart, the costly part, is drawn once every two seconds (on the
# pane's clock, so a picture taken with a frozen clock is the same however many ticks went by).
REDRAW_HZ = 2
PLOT_EVERY_S = 2.0
WINDOW_S = 60.0  # seconds of power shown in the chart and sparklines
IDLE_NOTE = "Nothing running: choose runs in Setup (key 1), then ctrl+r."
RUNNING_COLUMNS = ("label", "id", "device", "done", "eta", "energy")  # the Running now table's column keys


def queue_rows(snapshot: GridSnapshot, *, energy: bool = True) -> list[tuple[str, str, str]]:
    """(key, run, status) of the queue as shown: each grid's runs skipped as already stored folded into one
    line where the first of them stood ("23 already stored"), so the runs that will run stay in sight. A
    stored run's energy joins its status unless `energy` is False (a terminal under 100 columns: the status
    must stay whole, the energy is in the run's panel and the Runs pane)."""
    rows: list[tuple[str, str, str]] = []
    folds = {"skipped": ("already stored", "skipped"), QUEUED_BEFORE: ("queued in an earlier grid", "skipped")}
    counts: dict[tuple[int, str], int] = {}
    for entry in snapshot.queue:
        if entry.status in folds:
            counts[(entry.grid, entry.status)] = counts.get((entry.grid, entry.status), 0) + 1
    folded: set[tuple[int, str]] = set()
    for entry in snapshot.queue:
        if entry.status in folds:
            fold = (entry.grid, entry.status)
            if fold not in folded:
                folded.add(fold)
                what, status = folds[entry.status]
                key = f"g{entry.grid}-{entry.status.replace(' ', '-')}"
                rows.append((key, f"{counts[fold]} {what}", status))
            continue
        joules = f" {formatting.energy(entry.energy_j)}" if energy and entry.energy_j is not None else ""
        status = entry.shown_status + joules
        rows.append((f"g{entry.grid}-{entry.index}", entry.label, status))
    return rows


class LivePane(Vertical):
    """Queue on the left, current run on the right, power underneath."""

    # repaint=False: a snapshot comes with every batch; the widgets it changes repaint themselves, the pane never
    snapshot: reactive[GridSnapshot | None] = reactive(None, always_update=True, repaint=False)

    # the queue, the runs in flight and the current run's panel
    queue = getters.query_one("#queue", DataTable)
    running_table = getters.query_one("#running", DataTable)
    grid_text = getters.query_one("#grid-line", Static)
    title = getters.query_one("#run-title", Static)
    stats = getters.query_one("#run-stats", Static)
    energy_text = getters.query_one("#run-energy", Static)
    method = getters.query_one("#energy-method", Label)
    note_text = getters.query_one("#run-note", Static)

    # power
    plot = getters.query_one("#power-plot", PlotextPlot)
    sparks = getters.query_one("#sparks", Vertical)

    def __init__(self, *, id: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(id=id)
        self.clock = clock  # the presenter's clock: injectable so snapshots and screenshots show fixed times
        self._plotted_at = -math.inf  # the pane's clock when the chart was last drawn
        self._components: list[str] = []
        self._followed: str | None = None  # the queue row the cursor last followed
        self._shown: dict[int, str] = {}  # what each text widget shows now, by the widget's id()
        self._drawn_at = -math.inf  # the pane's clock at the last redraw
        self._drawn_version = -1  # the snapshot version last drawn
        self._news: tuple[Any, ...] = ()  # runs stored, the current run, why stopped: what redraws at once

    @property
    def current(self) -> RunView | None:
        return self.snapshot.current if self.snapshot is not None else None

    @property
    def note(self) -> str:
        return self.snapshot.note if self.snapshot is not None and self.snapshot.note else IDLE_NOTE

    def compose(self) -> ComposeResult:
        with Horizontal(id="live-top"):
            yield titled(DataTable(id="queue", cursor_type="row", zebra_stripes=True), "Queue")
            with Vertical(id="current"):
                yield Static("", id="grid-line")
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
        # Several runs at once (a Ray grid): one row each; the panel above follows the latest begun.
        yield titled(DataTable(id="running", cursor_type="none", zebra_stripes=True), "Running now")
        with Horizontal(id="live-bottom"):
            yield titled(PlotextPlot(id="power-plot"), "Power (W)")
            yield titled(Vertical(id="sparks"), "Now")

    def on_mount(self) -> None:
        # Two columns keep the queue readable at 80 columns; the energy joins the status once stored.
        self.queue.add_column("run", key="run")
        self.queue.add_column("status", key="status")
        for label, key in zip(("run", "id", "on", "done", "ETA", "energy"), RUNNING_COLUMNS):
            self.running_table.add_column(label, key=key)
        self.running_table.display = False
        self.redraw()
        self.set_interval(1 / REDRAW_HZ, self._tick, name="live-redraw")

    def on_resize(self, _event: events.Resize) -> None:
        self.redraw(chart=True)  # whether the legend fits depends on the chart's new height

    # -- the snapshot ---------------------------------------------------------------------------------
    def watch_snapshot(self, snapshot: GridSnapshot | None) -> None:
        if snapshot is None:
            return
        wanted = queue_rows(snapshot, energy=self.screen.has_class("-wide"))
        present = [row.value for row in self.queue.rows]
        if present != [key for key, _label, _status in wanted]:  # rows folded or added: rebuilt in order
            self.queue.clear()
            for key, label, status in wanted:
                self.queue.add_row(label, status, key=key)
        else:
            for key, _label, status in wanted:
                if str(self.queue.get_cell(key, "status")) != status:
                    self.queue.update_cell(key, "status", status, update_width=True)
        self._follow(snapshot)
        if snapshot.current is not None:
            self._mount_sparks(snapshot.current.tracker.components())
        # A snapshot comes with every batch (twenty a second for a small model); the panel is drawn by the
        # timer at REDRAW_HZ, and at once only when a run began or was stored (news, not progress).
        news = (len(snapshot.stored), snapshot.current.run_id if snapshot.current else None, snapshot.stopped)
        if news != self._news or self.clock() - self._drawn_at >= 1 / REDRAW_HZ:
            self._news = news
            self.redraw()

    def _follow(self, snapshot: GridSnapshot) -> None:
        """The queue's cursor follows the run in progress (↑ ↓ still scroll it between runs)."""
        running = next((e for e in snapshot.queue if e.status in ("starting", "running")), None)
        key = f"g{running.grid}-{running.index}" if running is not None else None
        if key is None or key == self._followed:
            return
        self._followed = key
        try:
            self.queue.move_cursor(row=self.queue.get_row_index(key), scroll=True)
        except Exception:  # noqa: BLE001 - a row not shown (folded) is not followed
            pass

    # -- drawing --------------------------------------------------------------------------------------
    def _mount_sparks(self, components: list[str]) -> None:
        if components == self._components:
            return
        self._components = list(components)
        self.sparks.remove_children()
        for component in components:
            self.sparks.mount(Static(component, id=f"spark-label-{component}", classes="spark-label"))
            self.sparks.mount(Sparkline([], id=f"spark-{component}", summary_function=max))

    def _put(self, widget: Static, content: str | Content) -> None:
        """Show `content` in `widget` at the least cost: nothing when it is what is shown, a repaint when only
        its characters changed (elapsed 0:06 → 0:07), a layout only when its length did (it may wrap anew).
        A layout of the whole screen a few times a second was most of the TUI's CPU while a run trained:
        CPU the run measured beside it needs."""
        text = str(content)
        shown = self._shown.get(id(widget))
        if shown == text:
            return
        self._shown[id(widget)] = text
        widget.update(content, layout=shown is None or len(shown) != len(text))

    def _tick(self) -> None:
        """The timer: a run in progress (or a grid between runs) changes with time alone; an idle pane does not,
        and is drawn only when a snapshot brings news."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        moving = bool(snapshot.running) or snapshot.active_grid is not None
        if moving or snapshot.version != self._drawn_version:
            self.redraw()

    def redraw(self, *, chart: bool = False) -> None:
        """Bring the pane up to date; the chart only every PLOT_EVERY_S on the pane's clock, at a run's end,
        or when `chart` asks for it (a resize: the legend's room depends on the chart's height)."""
        self._drawn_version = self.snapshot.version if self.snapshot is not None else -1
        self._drawn_at = self.clock()
        self._running_rows()
        current = self.current
        grid = self.snapshot.active_grid if self.snapshot is not None else None
        self._put(self.grid_text, self._grid_line(grid, current))
        if current is None or (grid is not None and current.stored is not None):
            # Between runs (the idle baseline, cooling, a run's start-up) the grid's phase is the news.
            last = f"  [dim]last: {escape(current.label)} {current.phase}[/]" if current is not None else ""
            self._put(
                self.title,
                f"[b]{escape(grid.phase[:1].upper() + grid.phase[1:])}[/]{last}"
                if grid is not None
                else "[b]No run in progress[/]",
            )
            self._put(self.stats, "")
            self._put(self.energy_text, "")
            self.method.display = False
            self._put(self.note_text, Content(self.note))
            self._bars(0, None, 0, None, "epoch -", "batch -")
            return
        figures = live(current, self.clock())
        device = f" on {current.device}" if current.device else ""
        phase = {"train": "training", "eval": "evaluating"}.get(current.phase, current.phase)
        self._put(self.title, f"[b]{escape(current.label)}[/] [dim]{phase}[/]  run {current.run_id}{escape(device)}")
        batches = max(current.batches, 1)
        # the epoch bar moves with the batches, so a long epoch does not look stalled
        epochs_done = max(current.epoch - 1, 0) + current.batch / batches
        completed = current.stored is not None and current.phase == "completed"
        self._bars(
            current.epochs if completed else epochs_done,
            current.epochs,
            current.batch,
            batches,
            f"epoch {current.epoch}/{current.epochs}",
            f"batch {current.batch}/{current.batches}",
        )
        ends = formatting.left(figures.eta_s) if current.stored is None else ("done" if completed else "-")
        self._put(
            self.stats,
            f"elapsed {formatting.clock(figures.elapsed_s)}  {ends}  loss {formatting.loss(current.loss)}"
            f"  val acc {formatting.accuracy(current.val_accuracy)}",
        )
        self._energy(current, figures.energy_j)
        # log lines and errors: text, not markup, and a control character from a child's message written out
        self._put(self.note_text, Content(escape_controls(current.note or self.note)))
        self._sparks(current, figures.component_j)
        if chart or current.stored is not None or self.clock() - self._plotted_at >= PLOT_EVERY_S:
            self._plotted_at = self.clock()
            self._plot(current)

    def _grid_line(self, grid: GridProgress | None, current: RunView | None) -> Content:
        """'Grid 2: run 13 of 24 · grid ETA 1:20' while a grid runs; its closing counts once it ended."""
        snapshot = self.snapshot
        if snapshot is None:
            return Content("")
        if grid is None:
            last = snapshot.last_grid
            return Content(last.message() if last is not None and last.ended else "")
        position = min(max(snapshot.position(grid.grid), 1), max(grid.to_run, 1))
        left = None
        if current is not None and current.stored is None and current.grid == grid.grid:
            left = live(current, self.clock()).eta_s
        eta = grid_eta(grid, snapshot.remaining(grid.grid, current_running=left is not None), left)
        skipped = f" ({grid.skipped} already stored)" if grid.skipped else ""
        return Content.from_markup(
            f"[b]Grid {grid.grid}: run {position} of {grid.to_run}[/]{escape(skipped)}"
            f" · grid: {formatting.left(eta) if eta is not None else 'time left unknown'}"
        )

    def _running_rows(self) -> None:
        """One row per run begun and not yet stored, shown only while more than one runs."""
        running = self.snapshot.running if self.snapshot is not None else ()
        table = self.running_table
        table.display = len(running) > 1
        if not table.display:
            if table.row_count:
                table.clear()
            return
        now = self.clock()
        rows = {}
        for view in running:
            figures = live(view, now)
            rows[str(view.run_id)] = (
                view.label,
                str(view.run_id),
                view.device or "-",
                f"{view.done_fraction:.0%}",
                formatting.left(figures.eta_s),
                formatting.energy(figures.energy_j),
            )
        # Cells change in place: clearing would reset the scroll of a table taller than its pane.
        for key in [row.value for row in table.rows if row.value is not None and row.value not in rows]:
            table.remove_row(key)
        present = {row.value for row in table.rows}
        for key, cells in rows.items():
            if key not in present:
                table.add_row(*cells, key=key)
                continue
            for column, value in zip(RUNNING_COLUMNS, cells):
                if str(table.get_cell(key, column)) != value:
                    table.update_cell(key, column, value)

    def _bars(
        self,
        epoch: float,
        epochs: float | None,
        batch: float,
        batches: float | None,
        epoch_label: str,
        batch_label: str,
    ) -> None:
        for name, total, done, text in (("epoch", epochs, epoch, epoch_label), ("batch", batches, batch, batch_label)):
            self.query_one(f"#{name}-bar", ProgressBar).update(total=total, progress=done)
            self._put(self.query_one(f"#{name}-label", Label), text)

    def _energy(self, current: RunView, joules: float | None) -> None:
        kind = current.kind
        prefix = "stored " if current.stored is not None else ""
        if current.stored is not None and compare.diverged(current.stored):
            prefix = "stored (diverged: see its flags) "
        other = "" if joules is None else (f"  = {joules:,.0f} J" if joules >= 3600 else f"  = {joules / 3600:,.4f} Wh")
        self._put(self.energy_text, f"{prefix}[b]{formatting.energy(joules)}[/]{other}")
        self.method.display = True
        self._put(self.method, kind.upper())
        for name in formatting.KINDS:
            self.method.set_class(name == kind, f"-{name}")

    def _window(self, current: RunView, component: str) -> list[tuple[float, float]]:
        history = current.tracker.history(component)
        end = current.tracker.now() if current.stored is None else (history[-1][0] if history else current.t0)
        start = max(current.t0, end - WINDOW_S)
        return [(t - current.t0, w) for t, w in history if t >= start]

    def _sparks(self, current: RunView, joules: dict[str, float]) -> None:
        for component in self._components:
            points = self._window(current, component)
            watts = points[-1][1] if points else None
            kind = "meas." if current.methods.get(component) in MEASURED_METHODS else "est."
            label = (
                f"{component:<5}{watts:>7.1f} W {kind:<5} {joules.get(component, 0.0):>8,.1f} J"
                if watts is not None
                else f"{component:<5}      - W {kind}"
            )
            self._put(self.query_one(f"#spark-label-{component}", Static), label)
            # Sparkline repaints on reassignment only: always give it a new list
            self.query_one(f"#spark-{component}", Sparkline).data = [w for _t, w in points[-120:]]

    def _plot(self, current: RunView) -> None:
        plt = self.plot.plt
        plt.clear_data()
        plt.clear_figure()
        traces = [(c, points) for c in self._components if (points := self._window(current, c))]
        # The legend, drawn top left, sits above the traces instead of over their first seconds; on a chart
        # too short for both it is left out (the sparklines beside it name each component).
        labelled = legend_fits(len(traces), self.plot.size.height)
        for component, points in traces:
            xs, ys = [t for t, _w in points], [w for _t, w in points]
            plt.plot(xs, ys, label=component if labelled else None, marker="braille")
        top = max((w for _c, points in traces for _t, w in points), default=0.0)
        if top > 0 and labelled:
            plt.ylim(0, legend_headroom(top, len(traces), self.plot.size.height))
        plt.xlabel("seconds since the run began")
        self.plot.refresh()
