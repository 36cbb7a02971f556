"""The runs pane: the store as a comparison table, filtered and sorted, with energy against accuracy.

A reload reads the store on a worker thread (its own read-only connection), prepares each run's row once
there — its change against the matching baselines (greenlab.core.report.compare), the text of every cell, what
`/` searches — and then judges the verdicts there too: at a study's thousands of runs each takes a second
or more, and the UI thread only sorts, filters and fills the table from prepared rows. Sorting and
filtering are plain functions over those rows, so the table is rebuilt from data, never edited cell by
cell. Opening a row asks the app for its detail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rich.cells import cell_len
from rich.markup import escape as escape_markup
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Select
from textual_plotext import PlotextPlot

from greenlab.core.errors import GreenLabError
from greenlab.core.report import compare, stats, words
from greenlab.core.report.compare import changes, format_change
from greenlab.core.report.formatting import accuracy, duration, energy, kind_of_row
from greenlab.core.report.render import change_text, explanation
from greenlab.core.store.database import Store
from greenlab.core.store.rows import RunRow
from greenlab.core.store.schema import STATUSES
from greenlab.core.text import escape_controls
from greenlab.tui.boxes import titled
from greenlab.tui.charts import MARKERS, marker_legend
from greenlab.tui.dialogs import ConfirmDelete, VerdictScreen
from greenlab.tui.field import Field

_T = TypeVar("_T")
FILTERS = ("model", "technique", "status")
# The table lists this many of the shown runs (in the chosen order), ] and [ the others: a DataTable rebuilds
# every row on each sort, filter or search key (about 0.15 ms a row here), and a study's thousands would
# hold each key for a second; 100 rows are a few screens and keep a key under 100 ms while the verdicts are
# judged beside it. The count and the verdicts still cover every shown run; / and the filters narrow the list.
ROW_LIMIT = 100
# The chart plots at most this many of the shown runs (evenly spread over them): a terminal chart has fewer
# cells than a study has runs, and plotting them all would hold a filter key for a tenth of a second.
CHART_LIMIT = 1000


@dataclass(eq=False)
class TableRow:
    """A run as the table shows it, prepared once per reload on the reading thread: its stored row, its
    change per metric against the matching baselines (none on a first page, whose baselines may be on
    another), a stopped run's last-epoch accuracy, its technique with its non-default settings
    (compare.technique_of), its cells' text and their widths, and what `/` searches; the cells as the table
    draws them are made the first time its page is shown (at 5,000 rows making them all took the reading
    thread 0.4 s)."""

    run: RunRow
    change: dict[str, float | None] = field(default_factory=dict)
    partial_accuracy: float | None = None
    technique: str = ""
    cells: tuple[str, ...] = ()
    widths: tuple[int, ...] = ()
    searched: str = ""
    drawn: tuple[Text, ...] | None = None


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    value: Callable[[TableRow], Any]  # the sortable value
    text: Callable[[TableRow], str]  # what the cell shows
    right: bool = False


def accuracy_text(row: TableRow) -> str:
    """The final accuracy, or, for a run that stopped early, its last epoch's in parentheses (partial)."""
    if row.run.val_accuracy is None and row.partial_accuracy is not None:
        return f"({accuracy(row.partial_accuracy)})"
    return accuracy(row.run.val_accuracy)


def status_text(run: RunRow) -> str:
    """The status as the table shows it: a completed run that diverged (its loss ran away, or its accuracy
    is at chance: greenlab.core.run.divergence) or was paused mid-run (greenlab.core.run.pauses) says so,
    since it looks like any other completed run."""
    if run.status == "completed" and compare.diverged(run):
        return "diverged"
    if run.status == "completed" and compare.paused(run):
        return "paused"
    return str(run.status)


def technique_shown(row: TableRow) -> str:
    """`prune[amount=0.9]`: the technique as the verdicts name it (prepared once per reload where it can be)."""
    return row.technique or compare.technique_of(row.run)


def searched_text(row: TableRow) -> str:
    """What `/` searches in a run: its id, model, technique, status (or `diverged`), experiment, dataset."""
    run = row.run
    return " ".join(
        [
            *(
                str(value or "")
                for value in (run.id, run.model, run.technique, run.status, run.experiment, run.dataset)
            ),
            technique_shown(row),
            status_text(run),
        ]
    ).lower()


def matches(row: TableRow, words: Sequence[str]) -> bool:
    """The `/` search: every word (lower case) appears in what it searches (prepared once per reload)."""
    text = row.searched or searched_text(row)
    return all(word in text for word in words)


# id, model and technique are pinned (they stay when the table scrolls sideways), status right after them.
PINNED = 3
COLUMNS: tuple[Column, ...] = (
    Column("id", "id", lambda r: r.run.id, lambda r: str(r.run.id), True),
    Column("model", "model", lambda r: r.run.model, lambda r: r.run.model),
    # shown with its non-default settings (prune[amount=0.9]): two settings are two treatments
    Column("technique", "technique", technique_shown, technique_shown),
    Column("status", "status", lambda r: r.run.status, lambda r: status_text(r.run)),
    Column("energy", "energy", lambda r: r.run.energy_j, lambda r: energy(r.run.energy_j), True),
    Column(
        "d_energy",
        "Δ energy",
        lambda r: r.change.get("energy_j"),
        lambda r: format_change(r.change.get("energy_j")),
        True,
    ),
    Column(
        "accuracy",
        "acc",
        lambda r: r.run.val_accuracy if r.run.val_accuracy is not None else r.partial_accuracy,
        accuracy_text,
        True,
    ),
    Column(
        "d_accuracy",
        "Δ acc",
        lambda r: r.change.get("val_accuracy"),
        lambda r: format_change(r.change.get("val_accuracy"), "val_accuracy"),
        True,
    ),
    Column("training", "training", lambda r: r.run.energy_training_j, lambda r: energy(r.run.energy_training_j), True),
    Column(
        "d_training",
        "Δ training",
        lambda r: r.change.get("energy_training_j"),
        lambda r: format_change(r.change.get("energy_training_j")),
        True,
    ),
    Column("time", "time", lambda r: r.run.duration_s, lambda r: duration(r.run.duration_s), True),
    Column(
        "d_time",
        "Δ time",
        lambda r: r.change.get("duration_s"),
        lambda r: format_change(r.change.get("duration_s")),
        True,
    ),
    Column("method", "energy is", lambda r: kind_of_row(r.run), lambda r: kind_of_row(r.run)),
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)
# The table's columns that sort as a stored column does (NULLs aside), for the first page read by SQL.
STORED_ORDER = {
    "id": "id",
    "model": "model",
    "technique": "technique",
    "status": "status",
    "energy": "energy_j",
    "accuracy": "val_accuracy",
    "training": "energy_training_j",
    "time": "duration_s",
}


def would_decide(c: compare.Comparison) -> str:
    """An inconclusive verdict's 'about N runs per side' that would likely decide it (statistics.md)."""
    if c.verdict != stats.INCONCLUSIVE:
        return ""
    if c.repeats_to_decide is not None:
        return f"about {c.repeats_to_decide} runs per side"
    return f"more than {stats.MAX_REPEATS:,} per side" if c.stats.sufficient else ""


def table_rows(
    runs: Sequence[RunRow], last_accuracies: dict[int, float], *, against_baselines: bool = True
) -> list[TableRow]:
    """The table's rows, made once per reload (on the reading thread): each run with the change of each
    metric against the matching baselines (unless `against_baselines` is False: a first page, whose
    baselines may be on another), a stopped run's last-epoch accuracy, the text of every cell and what `/`
    searches, so that a key only sorts, filters and fills."""
    rows = []
    changed = changes(runs) if against_baselines else [{} for _ in runs]
    for run, change in zip(runs, changed):
        row = TableRow(
            run,
            change,
            last_accuracies.get(run.id) if run.status != "completed" else None,
            compare.technique_of(run),
        )
        # stored text is shown, never obeyed: a control character in a name reads as \x1b, not as an escape
        row.cells = tuple(escape_controls(column.text(row)) for column in COLUMNS)
        row.widths = tuple(cell_len(text) for text in row.cells)
        row.searched = searched_text(row)
        rows.append(row)
    return rows


def drawn_cell(column: Column, text: str) -> Text:
    """A cell as the table draws it: text, never markup ("prune[amount=0.9]" would read as a tag and vanish),
    aligned, a status styled."""
    return Text(
        text,
        justify="right" if column.right else "left",
        style=_status_style(text) if column.key == "status" else "",
    )


def filter_choices(rows: Sequence[TableRow]) -> dict[str, list[str]]:
    """Each filter's values among `rows`, sorted (statuses in their lifecycle's order)."""
    choices = {}
    for key in FILTERS:
        # a filter is a column named by a variable: `value` takes only the schema's names
        values = sorted({str(r.run.value(key)) for r in rows if r.run.value(key)}, key=str)
        choices[key] = [s for s in STATUSES if s in values] if key == "status" else values
    return choices


def judged_metrics(plans: dict[int, Any]) -> tuple[str, ...]:
    """What the pane judges: every stored plan's primary metric (runs from before plans have the default
    one) and accuracy, the verdicts table's two columns."""
    primaries = {plan.analysis.primary for plan in plans.values()} | {compare.HEADLINE}
    return tuple(m for m in compare.METRICS if m in primaries or m == "val_accuracy")


def spread(points: list[_T], limit: int) -> list[_T]:
    """At most `limit` of `points`, evenly spaced over them (all of them when they are fewer)."""
    if len(points) <= limit:
        return points
    step = len(points) / limit
    return [points[int(i * step)] for i in range(limit)]


def filter_rows(rows: list[TableRow], filters: dict[str, str | None], query: str = "") -> list[TableRow]:
    """The rows every chosen filter and every word of `query` keep (a key runs this over a study's 5,000
    rows: with nothing chosen it is a copy, and only the chosen filters are tested)."""
    chosen = [(key, value) for key, value in filters.items() if value is not None]
    words = query.lower().split()
    if not chosen and not words:
        return list(rows)
    # the filters are columns named by variables (FILTERS): `value` takes only the schema's names
    return [r for r in rows if all(r.run.value(key) == value for key, value in chosen) and matches(r, words)]


def fill(
    table: DataTable,
    columns: list[tuple[str, str, bool]],
    rows: Sequence[tuple[str, Sequence[Text | str]]],
    cell_widths: Sequence[Sequence[int]] | None = None,
) -> None:
    """Rebuild `table` with columns (key, label, right-aligned) sized to their widest cell (`cell_widths`,
    each row's, where they were measured already).

    The widths are set here, not left to the table: a table rebuilt while another widget has focus (a
    filter) otherwise keeps every column at its header's width until it is focused again.
    """
    table.clear(columns=True)
    if cell_widths is None:
        cell_widths = [[_width(cell) for cell in cells] for _key, cells in rows]
    widths = [
        max([len(label), *(row_widths[i] for row_widths in cell_widths)])
        for i, (_key, label, _right) in enumerate(columns)
    ]
    for (key, label, right), width in zip(columns, widths):
        table.add_column(Text(label, justify="right" if right else "left"), key=key, width=width)
    for key, cells in rows:
        # text, never markup: "prune[amount=0.9]" or "[lr=0.01]" would read as a tag and vanish
        table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells), key=key)


def _width(cell: Text | str) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def sort_rows(rows: list[TableRow], column: str, reverse: bool = False) -> list[TableRow]:
    """Sorted by a column's value; runs without a value (failed, still running) stay last either way."""
    present, missing = ascending(rows, column)
    return (present[::-1] if reverse else present) + missing


def ascending(rows: list[TableRow], column: str) -> tuple[list[TableRow], list[TableRow]]:
    """The rows with a value in `column`, in its ascending order (ties by id, so reversed it is the
    descending order), and those without one in their own order."""
    getter = next(c.value for c in COLUMNS if c.key == column)
    present = [r for r in rows if getter(r) is not None]
    missing = [r for r in rows if getter(r) is None]
    return sorted(present, key=lambda r: (getter(r), r.run.id)), missing


class RunsPane(Vertical):
    """Filter bar, comparison table and the energy/accuracy chart of the shown (or marked) runs."""

    BINDINGS = [
        Binding("s", "sort_next", "Sort", id="runs.sort"),
        Binding("r", "sort_reverse", "Rev", id="runs.reverse", tooltip="Reverse the order"),
        Binding("space", "mark", "Mark", id="runs.mark", key_display="␣"),
        Binding("slash", "search", "Find", id="runs.search", tooltip="Filter as you type"),
        Binding("d", "delete", "Del", id="runs.delete", tooltip="Delete the marked runs (asks first)"),
        # Shown in help (?) and the command palette; the footer keeps room for the keys above at 80 columns.
        Binding("c", "toggle_chart", "Chart", id="runs.chart", show=False),
        Binding("right_square_bracket", "page(1)", "Next rows", id="runs.page.next", show=False),
        Binding("left_square_bracket", "page(-1)", "Previous rows", id="runs.page.previous", show=False),
        Binding("v", "toggle_verdicts", "Verdicts", id="runs.verdicts", show=False),
        Binding("f5", "reload", "Refresh", id="runs.reload", show=False),  # it refreshes itself on every stored run
        Binding(
            "w",
            "explain",
            "Why",
            id="runs.explain",
            show=False,
            tooltip="The verdict in full, as greenlab report writes it (the selected verdict, or the run's)",
        ),
    ]

    @dataclass
    class DetailRequested(Message):
        """Open this run's detail screen."""

        run_id: int

    @dataclass
    class ViewChanged(Message):
        """Sort, order or filters changed (the app keeps them as preferences)."""

    @dataclass
    class RowsRead(Message):
        """The store as read at `generation`, its rows prepared on the reading thread; with `of` set, only
        its first page of `of` runs (the rest, and every Δ, follow)."""

        generation: int
        rows: list[TableRow]
        of: int | None = None
        choices: dict[str, list[str]] | None = None  # each filter's values (filter_choices), when read whole

    @dataclass
    class VerdictsJudged(Message):
        """The verdicts of the store as read at `generation`, judged on the reading thread."""

        generation: int
        comparisons: list[compare.Comparison]

    def __init__(
        self, store: Any, *, restore: dict[str, Any] | None = None, id: str | None = None, read_on_mount: bool = True
    ) -> None:
        super().__init__(id=id)
        self.read_on_mount = read_on_mount  # False: the app reloads it (or sets this) once the store is ready
        self.store = store  # the app's store: its path (reads and deletes run on threads, with their own)
        self.rows: list[TableRow] = []
        # each column's ascending order of `rows` (the rows it was made of, kept to tell): a sort key, a
        # reversal or a page then only filters rows already in order
        self._orders: tuple[list[TableRow], dict[str, tuple[list[TableRow], list[TableRow]]]] = ([], {})
        self.shown: list[TableRow] = []
        self.sort_column = "id"
        self.reverse = False
        self.query_text = ""
        self.wanted_filters: dict[str, str | None] = {}  # restored preferences, applied once options exist
        self.marked: set[int] = set()
        self.page = 0  # which ROW_LIMIT rows of the shown runs the table lists
        # Judged on the reading thread from the whole store (the verdicts never depend on what is shown),
        # then picked for the shown rows; `None` while the latest reload is being judged.
        self.comparisons: list[compare.Comparison] | None = None
        self._generation = 0
        self._restore(restore or {})

    def _restore(self, saved: dict[str, Any]) -> None:
        """The view as the user left it (sort, order, filters, search); unknown values are ignored."""
        if saved.get("sort") in COLUMN_KEYS:
            self.sort_column = saved["sort"]
        self.reverse = bool(saved.get("reverse", False))
        self.query_text = str(saved.get("search", ""))
        filters = saved.get("filters")
        if isinstance(filters, dict):
            self.wanted_filters = {k: str(v) for k, v in filters.items() if k in FILTERS and v}

    def preference(self) -> dict[str, Any]:
        return {
            "sort": self.sort_column,
            "reverse": self.reverse,
            "search": self.query_text,
            "filters": {k: v for k, v in self.filters().items() if v is not None},
        }

    def compose(self) -> ComposeResult:
        with Horizontal(id="filters"):
            for key in FILTERS:
                yield Select([], prompt=f"{key}: all", id=f"filter-{key}", compact=True)
            yield Field(self.query_text, placeholder="/ search", id="runs-search", compact=True)
        verdicts: DataTable[Any] = DataTable(id="verdicts-table", cursor_type="row", zebra_stripes=True)
        verdicts.fixed_columns = 2  # model and technique stay in view when the table scrolls sideways
        yield titled(verdicts, "Verdicts: training energy against the matching baseline")
        table: DataTable[Any] = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        table.fixed_columns = PINNED
        yield table
        yield titled(PlotextPlot(id="tradeoff"), "Energy against accuracy")

    def on_mount(self) -> None:
        # After the app's first frame: reading and judging a study's store on the reading thread holds the
        # interpreter's lock half the time, and the first frame would wait for it (1.6 s instead of 1.1 s).
        if self.read_on_mount:
            self.call_after_refresh(self.reload)

    # -- data -----------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the store again on the reading thread; the filters, table and chart follow when the rows
        arrive (RowsRead), the verdicts when they are judged (VerdictsJudged). The cursor keeps its run."""
        self._generation += 1
        self.comparisons = None
        generation, path = self._generation, self.store.path

        # The first page first, straight from the store, when nothing is listed yet: a study's 5,000 runs take
        # a second or two to read and prepare, a page of them milliseconds. It is in the table's order where
        # that is a stored column (a Δ is not: then in id order, until the whole store replaces it).
        first_page = not self.rows
        order_by = STORED_ORDER.get(self.sort_column, "id")
        descending = self.reverse and self.sort_column in STORED_ORDER

        def read() -> None:
            if not path.is_file():  # no grid has run yet: nothing to read, and reading never creates it
                self.post_message(self.RowsRead(generation, []))
                self.post_message(self.VerdictsJudged(generation, []))
                return
            reader = Store.reader(path)
            try:
                if first_page:
                    page, total = reader.first_runs(ROW_LIMIT, order_by=order_by, descending=descending)
                    if total > len(page):
                        self.post_message(
                            self.RowsRead(generation, table_rows(page, {}, against_baselines=False), total)
                        )
                runs, last, plans = reader.runs(), reader.last_epoch_accuracies(), reader.plans()
            finally:
                reader.close()
            rows = table_rows(runs, last)
            self.post_message(self.RowsRead(generation, rows, choices=filter_choices(rows)))
            comparisons = compare.judge(runs, plans, metrics=judged_metrics(plans))
            self.post_message(self.VerdictsJudged(generation, comparisons))

        # A described worker: the @work decorator would describe it by the repr of thousands of rows.
        self.run_worker(
            read,
            name="runs",
            group="runs",
            description="reading the store and judging its verdicts",
            thread=True,
            exclusive=True,
            exit_on_error=False,
        )

    @on(RowsRead)
    def _read(self, message: RowsRead) -> None:
        if message.generation != self._generation:  # a reload since has its own on the way
            return
        if message.of is not None:  # the first page, while the store is read whole: listed, not yet filtered
            if not self.rows:
                self._first_page(message.rows, message.of)
            return
        self.rows = message.rows
        choices = message.choices if message.choices is not None else filter_choices(self.rows)
        for key in FILTERS:
            select = self.query_one(f"#filter-{key}", Select)
            values = choices[key]
            current = self.wanted_filters.pop(key, None) or select.value
            with select.prevent(Select.Changed):
                select.set_options([(escape_controls(v), v) for v in values])
                if current in values:
                    select.value = current
        self._show()

    def _first_page(self, rows: list[TableRow], total: int) -> None:
        table = self.query_one("#runs-table", DataTable)
        headers = self._headers()
        cells = [(str(row.run.id), self._cells(row)) for row in rows]
        fill(table, headers, cells, [self._widths(row) for row in rows])
        table.border_title = escape_markup(f"reading {total} runs · rows 1–{len(rows)} listed meanwhile")

    def _headers(self) -> list[tuple[str, str, bool]]:
        """(key, label, right-aligned) of each column, the sorted one marked ▲ or ▼."""
        return [
            (c.key, c.label + ((" ▼" if self.reverse else " ▲") if c.key == self.sort_column else ""), c.right)
            for c in COLUMNS
        ]

    def _cells(self, row: TableRow) -> Sequence[Text | str]:
        """A run's cells as the table shows them: aligned, its status styled, a marked run's id with •."""
        drawn = row.drawn
        if drawn is None:
            texts = row.cells or [escape_controls(column.text(row)) for column in COLUMNS]
            drawn = row.drawn = tuple(drawn_cell(column, text) for column, text in zip(COLUMNS, texts))
        if row.run.id not in self.marked:
            return drawn
        return [drawn_cell(COLUMNS[0], "•" + drawn[0].plain), *drawn[1:]]

    def _widths(self, row: TableRow) -> Sequence[int]:
        widths = row.widths
        if not widths:
            return [_width(cell) for cell in self._cells(row)]
        return [widths[0] + 1, *widths[1:]] if row.run.id in self.marked else widths  # the mark's •

    def filters(self) -> dict[str, str | None]:
        values = {}
        for key in FILTERS:
            value = self.query_one(f"#filter-{key}", Select).value
            values[key] = value if isinstance(value, str) else None
        return values

    def _show(self, *, order_only: bool = False) -> None:
        """Fill the table with the shown runs in the chosen order; with the verdicts and the chart too,
        unless only the order changed (they cover the same runs in any order)."""
        table = self.query_one("#runs-table", DataTable)
        keep = None
        if table.row_count and table.cursor_row < table.row_count:
            keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        present, missing = self._ascending(self.sort_column)
        ordered = (present[::-1] if self.reverse else present) + missing
        self.shown = filter_rows(ordered, self.filters(), self.query_text)  # a filter keeps the order
        headers = self._headers()
        pages = max(1, -(-len(self.shown) // ROW_LIMIT))
        self.page = min(self.page, pages - 1)
        first = self.page * ROW_LIMIT
        page = self.shown[first : first + ROW_LIMIT]
        rows = [(str(row.run.id), self._cells(row)) for row in page]
        fill(table, headers, rows, [self._widths(row) for row in page])
        if keep is not None and any(key == keep for key, _ in rows):
            table.move_cursor(row=table.get_row_index(keep))
        partial = any(r.partial_accuracy is not None and r.run.val_accuracy is None for r in self.shown)
        # The count and the page on the table they count (in the filter bar they were cut at 80 columns,
        # where the keys to the other pages matter most): only a page of rows is ever a widget.
        counted = f"{len(self.shown)} of {len(self.rows)} runs" + (
            f", {len(self.marked)} marked" if self.marked else ""
        )
        if pages > 1:
            last = min(first + ROW_LIMIT, len(self.shown))
            keys = "] next" if self.page == 0 else ("[ back" if self.page == pages - 1 else "[ ] pages")
            counted += f" · rows {first + 1}–{last} ({keys}, / finds)"
        table.border_title = escape_markup(counted)
        # The legend sits under the table it explains: the filter bar has no room for it at 80 columns.
        table.border_subtitle = "(acc) = last epoch of a stopped run" if partial else ""
        if not order_only:
            self._verdicts()
            self._chart()

    def _ascending(self, column: str) -> tuple[list[TableRow], list[TableRow]]:
        rows, orders = self._orders
        if rows is not self.rows:
            rows, orders = self._orders = (self.rows, {})
        if column not in orders:
            orders[column] = ascending(rows, column)
        return orders[column]

    @on(VerdictsJudged)
    def _judged(self, message: VerdictsJudged) -> None:
        if message.generation == self._generation:  # a reload since has its own on the way
            self.comparisons = message.comparisons
            self._verdicts()

    def _verdicts(self) -> None:
        """One row per technique and conditions among the shown runs: n, the primary metric's change [the
        interval that matches its verdict], the verdict, what its diagnostics flag (w reads them), p after
        Holm with the plan's family size, and the accuracy difference in pp, as `greenlab report` computes
        them on the whole store."""
        table = self.query_one("#verdicts-table", DataTable)
        heads = [
            (label, label, False)
            for label in (
                "model",
                "technique",
                "verdict",
                "Δ primary [CI]",
                "check (w)",
                "n",
                "p Holm (of)",
                "would decide",
                "Δ acc [CI]",
            )
        ]
        blank = [""] * (len(heads) - 2)
        if self.comparisons is None:
            fill(table, heads, [("judging", ["-", "judging the store's verdicts…", *blank])])
            return
        chosen = compare.of_runs(self.comparisons, (row.run.id for row in self.shown))
        accuracy_of = {c.cell: c for c in chosen if c.metric == "val_accuracy"}
        primaries = {c.metric for c in chosen if c.primary}
        rows: list[tuple[str, list[Text | str]]] = []
        for c in chosen:
            if not c.primary:
                continue
            p = "-" if c.p_holm is None else ("<0.001" if c.p_holm < 0.001 else f"{c.p_holm:.3f}")
            rows.append(
                (
                    f"{c.conditions}-{c.technique}",
                    [
                        # text, not markup ("[lr=0.01]" would read as a tag and vanish), controls written out
                        Text(escape_controls(c.label)),
                        escape_controls(c.technique),
                        # the word before the interval: on a narrow terminal the word is what stays in view
                        Text(c.word, style=_VERDICT_STYLE.get(c.verdict, "")),
                        change_text(c, with_ci=True)
                        + ("" if len(primaries) == 1 else f" {compare.METRIC_LABELS[c.metric]}"),
                        checks_cell(c),
                        f"{c.stats.n} v {c.stats.n_baseline}",
                        f"{p} ({c.holm_family})",
                        would_decide(c),
                        change_text(accuracy_of.get(c.cell), with_ci=True),
                    ],
                )
            )
        if not rows:
            rows = [("none", ["-", "no technique with a completed baseline among the shown runs", *blank])]
        named = compare.METRIC_LABELS[primaries.pop()] if len(primaries) == 1 else "each plan's"
        table.border_title = f"Verdicts: {named} (primary metric) against the matching baseline"
        fill(table, heads, rows)

    def _chart(self) -> None:
        chart = self.query_one("#tradeoff", PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        # A superseded run was replaced by its forced rerun: plotting both would show the work twice.
        chosen = [r for r in self.shown if r.run.id in self.marked] or [
            r for r in self.shown if r.run.status != "superseded" or self.filters().get("status") == "superseded"
        ]
        plottable = [
            (r, joules, acc)
            for r in chosen
            if (joules := r.run.energy_j) is not None and (acc := r.run.val_accuracy) is not None
        ]
        points = spread(plottable, CHART_LIMIT)
        use_wh = any(joules >= 3600 for _r, joules, _acc in points)
        groups: dict[str, list[tuple[float, float]]] = {}
        for r, joules, acc in points:
            groups.setdefault(technique_shown(r), []).append((joules, acc))
        techniques = sorted(groups)
        for index, technique in enumerate(techniques):
            group = groups[technique]
            plt.scatter(  # no label: plotext's legend would cover the best runs (little energy, high accuracy)
                [joules / 3600 if use_wh else joules for joules, _acc in group],
                [100 * acc for _joules, acc in group],
                marker=MARKERS[index % len(MARKERS)],
            )
        chart.border_subtitle = escape_markup(escape_controls(marker_legend(techniques)))  # prune[amount=0.9]: text
        plt.xlabel("energy (Wh)" if use_wh else "energy (J)")
        plt.ylabel("val acc %")
        counted = f"{len(points)}" if len(points) == len(plottable) else f"{len(points):,} of {len(plottable):,}"
        chart.border_title = f"Energy against accuracy: {counted} {'marked' if self.marked else 'shown'} runs"
        chart.refresh()

    # -- events and actions ---------------------------------------------------------------------------
    @on(Select.Changed)
    def _filter_changed(self) -> None:
        self.page = 0  # another set of runs: its first rows
        self._show()
        self.post_message(self.ViewChanged())

    @on(Input.Changed, "#runs-search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self.page = 0
        self._show()
        self.post_message(self.ViewChanged())  # kept as typed: a search is part of the view a user returns to

    @on(Input.Submitted, "#runs-search")
    def _search_done(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    def action_search(self) -> None:
        """/: filter as you type (model, technique, status, experiment, dataset, id); enter goes back."""
        self.query_one("#runs-search", Input).focus()

    def action_delete(self) -> None:
        """d: delete the marked runs, after a confirmation, with their epochs, samples and components."""
        if not self.marked:
            self.app.notify("Mark runs with space first; d deletes the marked ones.")
            return
        running = [r.run.id for r in self.rows if r.run.id in self.marked and r.run.status == "running"]
        if running:
            self.app.notify(f"Run {running[0]} is still running: cancel it first (x).", severity="warning")
            return
        marked = [r for r in self.rows if r.run.id in self.marked]
        visible = {r.run.id for r in self.shown}
        self.app.push_screen(
            ConfirmDelete(
                [(r.run.id, f"{r.run.model} · {technique_shown(r)}") for r in marked],
                hidden={r.run.id for r in marked if r.run.id not in visible},
            ),
            self._delete_answered,
        )

    def _delete_answered(self, answer: bool | None) -> None:
        if not answer:
            return
        chosen, path = sorted(self.marked), self.store.path

        def delete() -> None:
            # On a thread with its own connection: another process's lock on the store (a backup, a sqlite3
            # shell) makes the delete wait, and the UI must not wait with it.
            store = None
            try:
                if not path.is_file():  # removed meanwhile: deleting must not create an empty store
                    raise GreenLabError(f"no run store at {path} any more")
                store = Store(path, on_busy=lambda text: self.app.call_from_thread(self.app.notify, text, timeout=10))
                deleted = store.delete_runs(chosen)
            except GreenLabError as exc:  # the store's errors too (its open: a lock past the budget, a damaged file)
                self.app.call_from_thread(self.app.notify, f"Nothing deleted: {exc}", severity="error")
                return
            finally:
                if store is not None:
                    store.close()
            self.app.call_from_thread(self._deleted, chosen, deleted)

        self.run_worker(
            delete,
            name="delete",
            group="delete",
            description="deleting the marked runs",
            thread=True,
            exit_on_error=False,
        )

    def _deleted(self, chosen: list[int], deleted: int) -> None:
        self.marked.difference_update(chosen)
        self.reload()
        self.app.notify(f"Deleted {deleted} run{'s' if deleted != 1 else ''} and their data.")

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key == self.sort_column:
            self.reverse = not self.reverse
        else:
            self.sort_column, self.reverse = key, False
        self._show(order_only=True)
        self.post_message(self.ViewChanged())

    @on(DataTable.RowSelected, "#runs-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.post_message(self.DetailRequested(int(event.row_key.value or 0)))

    def action_page(self, step: int) -> None:
        """] and [: the next or previous ROW_LIMIT runs of those shown (the table lists one page at a time)."""
        pages = max(1, -(-len(self.shown) // ROW_LIMIT))
        page = min(max(self.page + step, 0), pages - 1)
        if page != self.page:
            self.page = page
            self._show(order_only=True)
            self.query_one("#runs-table", DataTable).move_cursor(row=0)

    def action_sort_next(self) -> None:
        index = COLUMN_KEYS.index(self.sort_column)
        self.sort_column, self.reverse = COLUMN_KEYS[(index + 1) % len(COLUMN_KEYS)], False
        self.page = 0  # a new order starts at its top
        self._show(order_only=True)
        self.post_message(self.ViewChanged())
        self.app.notify(f"sorted by {next(c.label for c in COLUMNS if c.key == self.sort_column)}", timeout=1.5)

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self.page = 0
        self._show(order_only=True)
        self.post_message(self.ViewChanged())

    def action_mark(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        if not table.row_count:
            return
        run_id = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or 0)
        self.marked ^= {run_id}
        self._show()

    def chosen_verdict(self) -> compare.Comparison | None:
        """The verdict `w` explains: the verdicts table's row under its cursor when it has focus, else the
        verdict of the run under the runs table's cursor (its technique and conditions), else the first."""
        shown = [c for c in compare.of_runs(self.comparisons or [], (row.run.id for row in self.shown)) if c.primary]
        if not shown:
            return None
        verdicts = self.query_one("#verdicts-table", DataTable)
        if verdicts.has_focus and verdicts.row_count:
            key = verdicts.coordinate_to_cell_key(verdicts.cursor_coordinate).row_key.value
            return next((c for c in shown if f"{c.conditions}-{c.technique}" == key), shown[0])
        runs = self.query_one("#runs-table", DataTable)
        if runs.row_count:
            run_id = int(runs.coordinate_to_cell_key(runs.cursor_coordinate).row_key.value or 0)
            mine = [c for c in shown if run_id in c.run_ids]
            if mine:
                return mine[0]
        return shown[0]

    def action_explain(self) -> None:
        """w: the selected verdict in full, as `greenlab report` writes it (checks, then sentences)."""
        chosen = self.chosen_verdict()
        if chosen is None:
            self.app.notify("No verdict among the shown runs to explain (or still judging).", timeout=3)
            return
        lines = explanation(chosen, self.comparisons or [])
        self.app.push_screen(VerdictScreen(f"{chosen.label} · {chosen.technique}: {chosen.word}", lines))

    @on(DataTable.RowSelected, "#verdicts-table")
    def _verdict_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()  # enter on a verdict explains it; it opens no run's detail
        self.action_explain()

    def action_toggle_verdicts(self) -> None:
        verdicts = self.query_one("#verdicts-table", DataTable)
        verdicts.display = not verdicts.display

    def action_toggle_chart(self) -> None:
        chart = self.query_one("#tradeoff", PlotextPlot)
        chart.display = not chart.display

    def action_reload(self) -> None:
        self.reload()


def checks_cell(c: compare.Comparison) -> Text:
    """What a verdict's diagnostics flag, by kind ('outlier, drift'), so a row that needs a look says so
    beside its verdict and interval; empty when nothing is flagged."""
    kinds = dict.fromkeys(d.kind.replace("_", " ") for d in c.diagnostics)
    if any(words.DIVERGED_NOTE in note for note in c.notes):  # a run on either side learned nothing
        kinds["diverged"] = None
    return Text(", ".join(kinds), style="bold" if kinds else "")


# Emphasis, not colour: the words carry the verdict; bold marks the two that claim an effect.
_VERDICT_STYLE = {"saves": "bold", "costs": "bold reverse"}


def _status_style(status: str) -> str:
    # Rich styles here, not colours: the theme's palette colours the table; these only add emphasis.
    return {
        "failed": "bold reverse",
        "diverged": "bold reverse",
        "interrupted": "italic",
        "running": "bold",
        "superseded": "dim",
    }.get(status, "")
