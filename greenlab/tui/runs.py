"""The runs pane: the store as a comparison table, filtered and sorted, with energy against accuracy.

Rows come from `Store.runs()`; each run's change against its matching baseline (same experiment, model
and dataset) comes from greenlab.core.report. Sorting and filtering are plain functions over those rows,
so the table is rebuilt from data, never edited cell by cell. Opening a row asks the app for its detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Label, Select
from textual_plotext import PlotextPlot

from greenlab.core import report
from greenlab.core.formatting import accuracy, duration, energy, kind_of_row
from greenlab.core.report import changes, format_change
from greenlab.core.report_formats import change_text
from greenlab.core.store import STATUSES

FILTERS = ("model", "technique", "status")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[dict[str, Any]], Any]  # the sortable value
    text: Callable[[dict[str, Any]], str]  # what the cell shows
    right: bool = False


COLUMNS: tuple[Column, ...] = (
    Column("id", "id", lambda r: r["id"], lambda r: str(r["id"]), True),
    Column("model", "model", lambda r: r["model"], lambda r: r["model"]),
    Column("technique", "technique", lambda r: r["technique"], lambda r: r["technique"]),
    Column("energy", "energy", lambda r: r.get("energy_j"), lambda r: energy(r.get("energy_j")), True),
    Column("d_energy", "Δ energy", lambda r: r.get("change_energy_j"),
           lambda r: format_change(r.get("change_energy_j")), True),
    Column("accuracy", "acc", lambda r: r.get("val_accuracy"), lambda r: accuracy(r.get("val_accuracy")),
           True),
    Column("d_accuracy", "Δ acc", lambda r: r.get("change_val_accuracy"),
           lambda r: format_change(r.get("change_val_accuracy"), "val_accuracy"), True),
    Column("training", "training", lambda r: r.get("energy_training_j"),
           lambda r: energy(r.get("energy_training_j")), True),
    Column("d_training", "Δ training", lambda r: r.get("change_energy_training_j"),
           lambda r: format_change(r.get("change_energy_training_j")), True),
    Column("status", "status", lambda r: r["status"], lambda r: r["status"]),
    Column("time", "time", lambda r: r.get("duration_s"), lambda r: duration(r.get("duration_s")), True),
    Column("d_time", "Δ time", lambda r: r.get("change_duration_s"),
           lambda r: format_change(r.get("change_duration_s")), True),
    Column("method", "energy is", kind_of_row, kind_of_row),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


def with_changes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with `change_<metric>`: percent against the mean of their completed matching baselines."""
    return [{**row, **{f"change_{m}": value for m, value in change.items()}}
            for row, change in zip(rows, changes(rows))]


def filter_rows(rows: list[dict[str, Any]], filters: dict[str, str | None]) -> list[dict[str, Any]]:
    return [r for r in rows if all(value is None or r.get(key) == value for key, value in filters.items())]


def sort_rows(rows: list[dict[str, Any]], column: str, reverse: bool = False) -> list[dict[str, Any]]:
    """Sorted by a column's value; runs without a value (failed, still running) stay last either way."""
    getter = next(c.value for c in COLUMNS if c.key == column)
    present = [r for r in rows if getter(r) is not None]
    missing = [r for r in rows if getter(r) is None]
    return sorted(present, key=lambda r: (getter(r), r["id"]), reverse=reverse) + missing


class RunsPane(Vertical):
    """Filter bar, comparison table and the energy/accuracy chart of the shown (or marked) runs."""

    BINDINGS = [
        Binding("s", "sort_next", "Sort", id="runs.sort"),
        Binding("r", "sort_reverse", "Reverse", id="runs.reverse"),
        Binding("space", "mark", "Mark", id="runs.mark"),
        Binding("c", "toggle_chart", "Chart", id="runs.chart"),
        Binding("v", "toggle_verdicts", "Verdicts", id="runs.verdicts"),
        Binding("f5", "reload", "Refresh", id="runs.reload", show=False),  # it refreshes itself on every stored run
    ]

    @dataclass
    class DetailRequested(Message):
        """Open this run's detail screen."""

        run_id: int

    def __init__(self, read_runs: Callable[[], list[dict[str, Any]]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.read_runs = read_runs  # Store.runs of the UI thread's store
        self.rows: list[dict[str, Any]] = []
        self.shown: list[dict[str, Any]] = []
        self.sort_column = "id"
        self.reverse = False
        self.marked: set[int] = set()

    def compose(self) -> ComposeResult:
        with Horizontal(id="filters"):
            for key in FILTERS:
                yield Select([], prompt=f"{key}: all", id=f"filter-{key}", compact=True)
            yield Label("", id="runs-count")
        verdicts = DataTable(id="verdicts-table", cursor_type="none", zebra_stripes=True)
        verdicts.border_title = "Verdicts: training energy against the matching baseline"
        yield verdicts
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield table
        chart = PlotextPlot(id="tradeoff")
        chart.border_title = "Energy against accuracy"
        yield chart

    def on_mount(self) -> None:
        self.reload()

    # -- data -----------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the store again and rebuild the filters, table and chart; keeps the cursor's run."""
        self.rows = with_changes(self.read_runs())
        for key in FILTERS:
            select = self.query_one(f"#filter-{key}", Select)
            values = sorted({str(r[key]) for r in self.rows if r.get(key)}, key=str)
            if key == "status":
                values = [s for s in STATUSES if s in values]
            current = select.value
            with select.prevent(Select.Changed):
                select.set_options([(v, v) for v in values])
                if current in values:
                    select.value = current
        self._show()

    def filters(self) -> dict[str, str | None]:
        values = {}
        for key in FILTERS:
            value = self.query_one(f"#filter-{key}", Select).value
            values[key] = value if isinstance(value, str) else None
        return values

    def _show(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        keep = None
        if table.row_count and table.cursor_row < table.row_count:
            keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        self.shown = sort_rows(filter_rows(self.rows, self.filters()), self.sort_column, self.reverse)
        table.clear(columns=True)
        for column in COLUMNS:
            arrow = (" ▼" if self.reverse else " ▲") if column.key == self.sort_column else ""
            table.add_column(Text(column.label + arrow, justify="right" if column.right else "left"),
                             key=column.key)
        for row in self.shown:
            cells = []
            for column in COLUMNS:
                text = column.text(row)
                if column.key == "id" and row["id"] in self.marked:
                    text = "•" + text
                cells.append(Text(text, justify="right" if column.right else "left",
                                  style=_status_style(row["status"]) if column.key == "status" else ""))
            table.add_row(*cells, key=str(row["id"]))
        if keep is not None and any(str(r["id"]) == keep for r in self.shown):
            table.move_cursor(row=table.get_row_index(keep))
        total = len(self.rows)
        self.query_one("#runs-count", Label).update(
            f"{len(self.shown)} of {total} runs" + (f", {len(self.marked)} marked" if self.marked else ""))
        self._verdicts()
        self._chart()

    def _verdicts(self) -> None:
        """One row per technique and conditions among the shown runs: n, the training-energy change [95 % CI],
        the verdict and the accuracy difference in pp [95 % CI], as `greenlab report` computes and writes them."""
        table = self.query_one("#verdicts-table", DataTable)
        table.clear(columns=True)
        for label in ("model", "technique", "n", "Δ energy [95 % CI]", "verdict", "Δ acc [95 % CI]"):
            table.add_column(label, key=label)
        shown = {row["id"] for row in self.shown}
        comparisons = report.compare(self.rows, metrics=(report.HEADLINE, "val_accuracy"),
                                     include=lambda row: row["id"] in shown)
        accuracy_of = {(c.conditions, c.technique): c for c in comparisons if c.metric == "val_accuracy"}
        for c in (c for c in comparisons if c.metric == report.HEADLINE):
            table.add_row(c.model, c.technique, f"{c.stats.n} v {c.stats.n_baseline}", change_text(c, with_ci=True),
                          Text(c.verdict, style=_VERDICT_STYLE.get(c.verdict, "")),
                          change_text(accuracy_of.get((c.conditions, c.technique)), with_ci=True))
        if not table.row_count:
            table.add_row("-", "no technique with a completed baseline among the shown runs", "", "", "", "")

    def _chart(self) -> None:
        chart = self.query_one("#tradeoff", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        chosen = [r for r in self.shown if r["id"] in self.marked] or self.shown
        points = [r for r in chosen if r.get("energy_j") is not None and r.get("val_accuracy") is not None]
        use_wh = any(r["energy_j"] >= 3600 for r in points)
        for technique in sorted({r["technique"] for r in points}):
            group = [r for r in points if r["technique"] == technique]
            plt.scatter([r["energy_j"] / 3600 if use_wh else r["energy_j"] for r in group],
                        [100 * r["val_accuracy"] for r in group], label=technique, marker="dot")
        plt.xlabel("energy (Wh)" if use_wh else "energy (J)")
        plt.ylabel("val acc %")
        chart.border_title = (f"Energy against accuracy: {len(points)} marked runs" if self.marked
                              else f"Energy against accuracy: {len(points)} shown runs")
        chart.refresh()

    # -- events and actions ---------------------------------------------------------------------------
    @on(Select.Changed)
    def _filter_changed(self) -> None:
        self._show()

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key == self.sort_column:
            self.reverse = not self.reverse
        else:
            self.sort_column, self.reverse = key, False
        self._show()

    @on(DataTable.RowSelected)
    def _open(self, event: DataTable.RowSelected) -> None:
        self.post_message(self.DetailRequested(int(event.row_key.value)))

    def action_sort_next(self) -> None:
        index = COLUMN_KEYS.index(self.sort_column)
        self.sort_column, self.reverse = COLUMN_KEYS[(index + 1) % len(COLUMN_KEYS)], False
        self._show()
        self.app.notify(f"sorted by {next(c.label for c in COLUMNS if c.key == self.sort_column)}", timeout=1.5)

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._show()

    def action_mark(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return
        run_id = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        self.marked ^= {run_id}
        self._show()

    def action_toggle_verdicts(self) -> None:
        verdicts = self.query_one("#verdicts-table", DataTable)
        verdicts.display = not verdicts.display

    def action_toggle_chart(self) -> None:
        chart = self.query_one("#tradeoff", PlotextPlot)
        chart.display = not chart.display

    def action_reload(self) -> None:
        self.reload()


# Emphasis, not colour: the words carry the verdict; bold marks the two that claim an effect.
_VERDICT_STYLE = {"saves": "bold", "costs": "bold reverse"}


def _status_style(status: str) -> str:
    # Rich styles here, not colours: the theme's palette colours the table; these only add emphasis.
    return {"failed": "bold reverse", "interrupted": "italic", "running": "bold"}.get(status, "")
