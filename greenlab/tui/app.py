"""The GreenLab TUI: three panes (setup, live, runs), a run detail screen, and the grid worker.

The app owns two stores on purpose: sqlite connections stay in the thread that opened them, so the
worker thread runs the grid session (greenlab.core.grid.session: it opens its own Store for the grid's
writes) and the UI thread keeps one for reads. The worker turns the session's events into typed messages
(greenlab.tui.messages) posted to the app; the handlers here route them to the panes. Training runs in a
child process, so the UI thread only draws and answers keys while a model trains.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from greenlab.core.errors import ConfigError, GreenLabError
from greenlab.core.grid import forecast as forecast_module
from greenlab.core.grid.calibrator import Calibrator
from greenlab.core.grid.presenter import GridPresenter
from greenlab.core.grid.queue import QUEUED, REPEATED, STORED
from greenlab.core.grid.session import GridOutcome, GridRequest, GridSession
from greenlab.core.plan import metrics
from greenlab.core.plan.analysis import Plan
from greenlab.core.report import formatting
from greenlab.core.run.cancel import CancelToken
from greenlab.core.store.database import Store, check_location
from greenlab.core.text import escape_controls
from greenlab.tui import messages, preferences
from greenlab.tui.detail import DetailScreen
from greenlab.tui.dialogs import (
    CancelChoice,
    CancelRayGrid,
    ConfirmLongGrid,
    ConfirmQuit,
    HelpScreen,
    Question,
    VerdictScreen,
)
from greenlab.tui.live import LivePane
from greenlab.tui.report_dialog import ReportDialog, ReportRequest, write_report
from greenlab.tui.runs import RunsPane
from greenlab.tui.setup import SetupPane
from greenlab.tui.themes import DEFAULT_THEME, load_themes

PANES = {"setup": "Setup", "live": "Live", "runs": "Runs"}
KEYS = {"setup": "F2", "live": "F3", "runs": "F4"}
# Toasts go after a few seconds; what must stay (a refused setting, a failed run) stays in its pane too.
ERROR_TOAST_S = 8
FORCE_HINT = "tick force rerun in Setup"  # how the TUI reruns runs already stored
VERDICTS_TOLD = 4  # a grid's verdicts told in its closing toast; the Runs pane lists them all
PROGRESS_HZ = 4  # batch progress posted to the UI at most this often (greenlab.tui.messages.is_progress)


class GreenLabApp(App[int]):
    """The TUI face of GreenLab."""

    CSS_PATH = Path(__file__).with_name("greenlab.tcss")  # absolute: subclasses elsewhere keep it
    TITLE = "GreenLab"
    NOTIFICATION_TIMEOUT = 4
    SUB_TITLE = "energy of fine-tuning, with and without compression"
    # Width classes on the screen let the stylesheet stack columns on an 80-column terminal.
    # -tiny (under 76 columns) takes every -narrow rule and a few more of its own (greenlab.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-tiny"), (76, "-narrow"), (100, "-wide")]
    # Height classes: a short terminal (24 rows) gives the runs table the room and hides the chart (c shows it).
    # -cramped (under 22 rows) takes every -short rule, and hides the power chart (its axes do not fit).
    VERTICAL_BREAKPOINTS = [(0, "-cramped"), (22, "-short"), (32, "-tall")]
    BINDINGS = [
        # Function keys switch panes from anywhere: they never type into a field. The digits do the same
        # when no text field has focus (in one, a digit is text). The tabs show F2 F3 F4 already: the footer
        # keeps its room for the pane's own keys and q (help and the palette list them all).
        Binding("f2", "show_pane('setup')", "Setup", id="pane.setup", show=False),
        Binding("f3", "show_pane('live')", "Live", id="pane.live", show=False),
        Binding("f4", "show_pane('runs')", "Runs", id="pane.runs", show=False),
        Binding("1", "pane_key('setup')", "Setup (no field focused)", id="pane.setup.digit", show=False),
        Binding("2", "pane_key('live')", "Live (no field focused)", id="pane.live.digit", show=False),
        Binding("3", "pane_key('runs')", "Runs (no field focused)", id="pane.runs.digit", show=False),
        Binding("escape", "leave_field", "Leave the field", id="field.leave", show=False),
        # Running is app-wide so ctrl+r works from any pane, with whatever the setup form holds.
        Binding("ctrl+r", "run_selection", "Run", id="run.selection", tooltip="Run the selection in Setup"),
        Binding("ctrl+o", "load_file", "Load file", id="run.file", show=False),
        Binding("x", "cancel_run", "Cancel", id="run.cancel"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        theme: str | None = None,
        experiments: str | None = None,
        *,
        clock: Any = None,
    ) -> None:
        super().__init__()
        self.db_path = db
        self.experiments_path = experiments
        self.theme_problems: list[str] = []
        self.preferences, self.preference_problems = preferences.load()
        self._saved_preferences: preferences.Preferences | None = None
        self._requested_theme = theme or self.preferences.theme or DEFAULT_THEME
        self._clock = clock or time.monotonic
        # One understanding of the grids for the whole app: the worker folds events in, the panes read it.
        self.presenter = GridPresenter(clock=self._clock, hints={"skipped": FORCE_HINT})
        self._seen_stored = 0
        self.store: Store | None = None
        self._token: CancelToken | None = None  # the running grid's cancel
        self._cancel_requested = False
        self._stop_current_requested = False  # "this run" (a Ray grid: this grid), perhaps before it began
        self._grid_active = False
        self._active_ray = ""  # the running grid's Ray address; empty when it runs here
        self._grid_number = 0
        self._pending: list[tuple[int, GridSession]] = []  # grids queued after the running one, in order
        self._quitting = False
        # The forecast's calibration children: one at a time, killed before a grid starts and when the app ends.
        self.calibrator = Calibrator()
        self._register_themes()
        if self.preferences.keymap:  # a user's keys for binding ids (see the help screen and docs/tui.md)
            self.set_keymap(self.preferences.keymap)

    def _register_themes(self) -> None:
        themes, self.theme_problems = load_themes()
        for theme in themes:
            self.register_theme(theme)
        if self._requested_theme in self.available_themes:
            self.theme = self._requested_theme
        else:  # run_app refuses unknown names; this keeps a directly built app usable
            self.theme_problems.append(f"unknown theme '{self._requested_theme}'")

    # -- layout ---------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        # The UI thread's store: reads only, created here so its connection belongs to this thread (opened
        # when first read if the file is not made yet). The writer's open — migrations, records kept aside,
        # orphaned runs — is done on a thread after the first frame (_prepare_store).
        self.store = Store(self.db_path, read_only=True)
        self._live_pane = LivePane(id="live-pane", clock=self._clock)
        self._runs_pane = RunsPane(self.store, restore=self.preferences.runs, id="runs-pane", read_on_mount=False)
        yield Header()
        with TabbedContent(initial="setup", id="panes"):
            with TabPane(f"{KEYS['setup']} {PANES['setup']}", id="setup"):
                yield SetupPane(
                    self.experiments_path,
                    restore=self.preferences.setup,
                    db=self.db_path,
                    calibrate=self.calibrator,
                    queued_keys=self.queued_keys,
                    id="setup-pane",
                )
            with TabPane(f"{KEYS['live']} {PANES['live']}", id="live"):
                yield self._live_pane
            with TabPane(f"{KEYS['runs']} {PANES['runs']}", id="runs"):
                yield self._runs_pane
        # Compact, without the palette's own entry (ctrl+p is in help): at 80 columns every key still fits.
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = f"store {self.store.path if self.store else '-'}"
        self.call_after_refresh(self._prepare_store)
        self.query_one("#f-models").focus()
        for problem in self.theme_problems:
            self.notify(problem, title="Theme not loaded", severity="warning", markup=False)
        for problem in self.preference_problems:
            self.notify(problem, title="Preferences", severity="warning", markup=False)
        self.theme_changed_signal.subscribe(self, lambda _theme: self.save_preferences())

    def _prepare_store(self) -> None:
        """After the first frame, on a thread: the store opened to write once (created where it is not yet,
        migrated, records kept aside imported, orphaned runs closed), then the Runs pane reads it. run_app
        refused a store that is not GreenLab's, newer or damaged before the UI started; what remains (a lock
        held past the budget) is told here, and a grid's own open tells it again."""

        def prepare() -> None:
            try:
                Store(self.db_path, on_busy=lambda text: self.call_from_thread(self.notify, text, timeout=10)).close()
            except (GreenLabError, OSError) as exc:
                self.call_from_thread(
                    self.notify,
                    escape_controls(f"the run store cannot be opened to write now: {exc}"),
                    title="Run store",
                    severity="error",
                    timeout=ERROR_TOAST_S,
                    markup=False,
                )
            self.call_from_thread(self._store_prepared)

        self.run_worker(prepare, name="store", group="store", thread=True, exit_on_error=False)

    def _store_prepared(self) -> None:
        pane = self.runs_pane
        if pane.is_mounted:
            pane.reload()
        else:  # not mounted yet (a test's app, torn down at once): it reads the store when it is
            pane.read_on_mount = True

    def save_preferences(self) -> None:
        """Keep the theme, the form as it stands and the runs table's view for the next launch."""
        try:
            setup, runs = self.query_one(SetupPane), self.runs_pane
        except NoMatches:  # closing before the panes were built
            return
        prefs = preferences.Preferences(
            theme=self.theme, setup=setup.preference(), runs=runs.preference(), keymap=self.preferences.keymap
        )
        if prefs == self._saved_preferences:
            return
        problem = preferences.save(prefs)
        if problem:
            self.log.warning(problem)
        self._saved_preferences = prefs

    @on(SetupPane.FormChanged)
    @on(RunsPane.ViewChanged)
    def _view_changed(self) -> None:
        self.save_preferences()

    @property
    def live(self) -> LivePane:
        return self._live_pane

    @property
    def runs_pane(self) -> RunsPane:
        return self._runs_pane

    @property
    def running(self) -> bool:
        return self._grid_active

    # -- actions --------------------------------------------------------------------------------------
    def action_show_pane(self, pane: str) -> None:
        if isinstance(self.screen, DetailScreen):
            self.pop_screen()  # the panes live on the main screen: go back to it first
        self.query_one("#panes", TabbedContent).active = pane
        # Focus follows the pane, so its bindings (ctrl+r, sort, ...) work at once.
        target = {"setup": "#f-models", "live": "#queue", "runs": "#runs-table"}[pane]
        self.query_one(target).focus()

    def action_run_selection(self) -> None:
        self.query_one(SetupPane).action_run_selection()

    def action_load_file(self) -> None:
        self.query_one(SetupPane).action_load_file()

    def action_pane_key(self, pane: str) -> None:
        self.action_show_pane(pane)

    def action_leave_field(self) -> None:
        """Escape from a text field: focus goes to the pane's main widget, so digits switch panes again."""
        pane = self.query_one("#panes", TabbedContent).active
        self.query_one({"setup": "#f-models", "live": "#queue", "runs": "#runs-table"}[pane]).focus()

    def action_help(self) -> None:
        """Every key of what is on screen now: the pane's own first, then the app's, then the focused
        widget's (cursor moves and the like), each with its description (or tooltip, where one is longer)."""
        if isinstance(self.screen, HelpScreen):
            return
        groups: dict[str, dict[str, str]] = {"pane": {}, "app": {}, "widget": {}}
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if not binding.description or not active.enabled:
                continue
            if isinstance(active.node, (RunsPane, SetupPane, LivePane, DetailScreen, VerdictScreen)):
                group = "pane"
            elif active.node is self or isinstance(active.node, Screen):
                group = "app"
            else:
                group = "widget"
            described = binding.tooltip or binding.description
            groups[group].setdefault(described, self.get_key_display(binding))
        rows = [
            (key, description)
            for group in ("pane", "app", "widget")
            for description, key in sorted(groups[group].items(), key=lambda item: item[1])
        ]
        pane = PANES.get(self.query_one("#panes", TabbedContent).active, "")
        title = f"Keys: {pane} pane" if self.screen is self.screen_stack[0] else "Keys: this screen"
        self.push_screen(HelpScreen(title, rows))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("run_selection", "load_file") and self.screen is not self.screen_stack[0]:
            return False  # not over the detail screen or a dialog: the form is out of sight there
        if action in ("show_pane", "pane_key", "help") and isinstance(
            self.screen, (Question, HelpScreen, VerdictScreen)
        ):
            return False
        if action in ("pane_key", "leave_field"):
            in_field = isinstance(self.focused, Input)
            return not in_field if action == "pane_key" else in_field
        if action == "cancel_run":
            return self._grid_active  # in the footer only while something runs
        return True

    def action_cancel_run(self) -> None:
        """x: ask whether to stop the run in progress only, or it and everything queued after it."""
        if not self._grid_active:
            self.notify("No run in progress.", timeout=2)
            return
        queued = self.presenter.snapshot().waiting()  # runs that will really run: already stored ones are not
        question = CancelRayGrid() if self._active_ray else CancelChoice(queued)
        self.push_screen(question, self._cancel_answered)

    def _cancel_answered(self, answer: str | None) -> None:
        if answer == "run" and self._active_ray:
            self.notify(
                "Stopping this Ray grid: its running runs are stored as interrupted; the grids queued after it go on.",
                title="Cancel",
            )
            self._cancel_grid(only_current=True)
        elif answer == "run":
            self.notify("Stopping this run: it is stored as interrupted; the queue goes on.", title="Cancel")
            self._cancel_grid(only_current=True)
        elif answer == "queue":
            self.cancel_everything()

    def cancel_everything(self) -> None:
        """Stop the run in progress (stored as interrupted) and every grid queued after it."""
        if not self._grid_active:
            return
        for grid, _session in self._pending:
            self.live.snapshot = self.presenter.end_grid(grid, cancelled=True)
        self._pending.clear()
        self._cancel_requested = True
        self.notify("Cancelling: the run is stopped and stored as interrupted.", title="Cancel")
        self._cancel_grid()

    @work(thread=True, group="cancel", exit_on_error=False)
    def _cancel_grid(self, only_current: bool = False) -> None:
        # Stopping a child may wait a few seconds for it to exit: not on the UI thread.
        token = self._token
        if token is None:
            return
        if only_current:
            self._stop_current_requested = True
        if only_current and not self._active_ray:
            token.cancel_current()
        else:  # a Ray grid runs many at once: it stops as a whole
            token.cancel()

    async def action_quit(self) -> None:
        if not self._grid_active:
            self._exit_now()
            return
        self.push_screen(ConfirmQuit(), self._quit_answered)

    def _exit_now(self) -> None:
        self.calibrator.close()  # a calibration child is killed, not waited for
        self.exit(0)

    def _quit_answered(self, answer: bool | None) -> None:
        if not answer:
            return
        if not self._grid_active:  # the grid ended while the question was open: nothing left to cancel
            self._exit_now()
            return
        self._quitting = True
        self.cancel_everything()
        # Exits once the worker has stored the interrupted run (see _worker_changed); this is the fallback.
        self.set_timer(20, lambda: self.exit(0))  # the user chose to quit: a clean exit, not an interrupt

    def action_open_detail(self, run_id: int) -> None:
        assert self.store is not None
        store = self.store
        self.push_screen(
            DetailScreen(
                run_id,
                {"run": store.run, "epochs": store.epochs, "samples": store.samples, "components": store.components},
            )
        )

    def action_write_report(self, kind: str = "markdown") -> None:
        """Ask for a format and a file, then write `greenlab report` there (greenlab.tui.report_dialog)."""
        self.push_screen(ReportDialog(kind), self._report_asked)

    def _report_asked(self, request: ReportRequest | None) -> None:
        if request is None or self.store is None:
            return
        db = self.store.path

        def write() -> None:
            try:
                said = write_report(request, db)
            except GreenLabError as exc:  # refused or failed: nothing written, and the reason is the CLI's
                self.call_from_thread(
                    self.notify, escape_controls(str(exc)), title="Report not written", severity="error", markup=False
                )
                return
            self.call_from_thread(self.notify, escape_controls(said), title="Report written", markup=False)

        self.run_worker(write, name="report", group="report", description="writing a report", thread=True)

    # -- the command palette --------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from self._screen_commands(screen)

    def _screen_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The app's actions by name, then the keys shown in the footer of the screen under the palette."""
        commands = [
            SystemCommand(f"Show {title}", f"Switch to the {title.lower()} pane", partial(self.action_show_pane, name))
            for name, title in PANES.items()
        ]
        if screen is self.screen_stack[0]:
            setup, runs = self.query_one(SetupPane), self.runs_pane
            commands += [
                SystemCommand(
                    "Run selection",
                    "Run the models and techniques chosen in Setup (ctrl+r)",
                    setup.action_run_selection,
                ),
                SystemCommand(
                    "Load experiments file",
                    "Queue the grid of the file named in Setup (ctrl+o)",
                    setup.action_load_file,
                ),
                SystemCommand("Refresh runs", "Read the run store again (f5)", runs.reload),
                SystemCommand(
                    "Toggle energy chart", "Show or hide energy against accuracy (c)", runs.action_toggle_chart
                ),
                SystemCommand(
                    "Report: write to a file",
                    "greenlab report into a file you name: text, markdown, LaTeX, JSON, CSV, CodeCarbon or the plot",
                    partial(self.action_write_report, "markdown"),
                ),
                SystemCommand(
                    "Export runs as CSV",
                    "Every run and comparison, as greenlab report --format csv writes them, into a file you name",
                    partial(self.action_write_report, "csv"),
                ),
                SystemCommand(
                    "Explain verdict",
                    "The selected verdict in full, as greenlab report writes it (w)",
                    runs.action_explain,
                ),
            ]
        if self._grid_active:
            commands.append(
                SystemCommand("Cancel", "Stop the current run, or the whole queue (x)", self.action_cancel_run)
            )
        commands += [
            SystemCommand(f"Theme: {theme}", "Switch to this GreenLab theme", partial(setattr, self, "theme", theme))
            for theme in sorted(self.available_themes)
            if theme.startswith("greenlab")
        ]
        yield from commands
        # Footer keys of whatever has focus (sort, mark, back, ...), so each is also findable by name;
        # widget internals (cursor moves) stay out, as the footer leaves them out.
        titles = {c.title for c in commands} | {"Quit", "Run"}
        for active in screen.active_bindings.values():
            binding = active.binding
            if not binding.show or not binding.description or not active.enabled or binding.description in titles:
                continue
            titles.add(binding.description)
            yield SystemCommand(
                binding.description,
                f"key: {self.get_key_display(binding)}",
                partial(self.run_action, binding.action, active.node),
            )

    # -- grids and the worker -------------------------------------------------------------------------
    @on(SetupPane.GridRequested)
    def _grid_requested(self, event: SetupPane.GridRequested) -> None:
        if not event.runs:
            self.notify("Nothing to run.", severity="warning")
            return
        forecast = event.forecast
        if forecast is not None and forecast.too_long:  # a day or more: asked first, never started by a slip
            question = ConfirmLongGrid(f"{forecast_module.too_long_text(forecast)} ({forecast.describe()}).")
            self.push_screen(question, lambda start: self._queue_grid(event) if start else None)
            return
        self._queue_grid(event)

    def _queue_grid(self, event: SetupPane.GridRequested) -> None:
        """Queue the grid (or start it), saying truthfully what will run (its session's queue): runs already
        stored are skipped, and so are runs an earlier grid in the queue will have stored by then."""
        self._grid_number += 1
        grid = self._grid_number
        request = GridRequest(
            runs=event.runs,
            plan=event.plan or Plan.for_grid(event.runs),
            source=event.source,
            db=None if self.db_path is None else os.fspath(self.db_path),
            force=event.force,
            ray=event.ray or None,
        )
        # The grid's cancel exists before it starts: an x pressed during preflight or a fetch counts.
        session = GridSession(request, on_event=self._forwarder(grid))
        queue = session.queue(self.queued_keys())
        self.live.snapshot = self.presenter.add_grid(
            grid,
            event.runs,
            skip=queue.indices(STORED, REPEATED),
            queued=queue.indices(QUEUED),
            forecast=event.forecast,
        )
        what = queue.describe(event.source, force_hint=FORCE_HINT)
        if self._grid_active:
            self._pending.append((grid, session))
            self.notify(f"{what}; queued after the current grid.", markup=False)
        else:
            self.notify(what, title="Queued" if queue.to_run else "Nothing new to run", markup=False)
            self._launch(grid, session)
        self.action_show_pane("live")

    def queued_keys(self) -> set[str]:
        """Run keys of the grids queued or running that have not run yet (they will be stored by the time a
        grid queued after them reaches the same runs)."""
        return {e.key for e in self.presenter.snapshot().queue if e.status in ("waiting", "starting", "running")}

    def _launch(self, grid: int, session: GridSession) -> None:
        self._grid_active = True
        self._active_ray = session.request.ray or ""
        self._cancel_requested = False
        self._stop_current_requested = False
        self._token = session.token
        # Nothing of GreenLab's own may run beside a measurement: a calibration child is killed now, before
        # the grid's idle baseline, and none starts until the last grid queued has ended.
        self.calibrator.pause("a grid is running")
        self.live.snapshot = self.presenter.start_grid(grid)
        self.refresh_bindings()
        self.run_worker(session.run, name=f"grid-{grid}", group="grid", thread=True, exit_on_error=False)

    def _forwarder(self, grid: int) -> Callable[[Any], None]:
        """What hears grid `grid`'s events, in the worker thread: each is folded into the presenter, and the
        snapshot posted to the app as a message."""
        posted = [0.0]  # when the last snapshot was posted

        def forward(event: Any) -> None:
            snapshot = self.presenter.apply(event, grid)  # every event is folded in, whatever is posted
            now = time.monotonic()
            # A batch's progress is posted at most PROGRESS_HZ times a second (a small model finishes twenty
            # batches a second, and each message is UI work beside the run being measured); news always is.
            if messages.is_progress(event) and now - posted[0] < 1 / PROGRESS_HZ:
                return
            posted[0] = now
            self.post_message(messages.GridChanged(snapshot))

        return forward

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker outcomes land: failures are shown, a finished grid starts the next."""
        worker = event.worker
        if event.state == WorkerState.ERROR:
            error = worker.error
            if isinstance(error, GreenLabError):  # the user's to fix, told in full: a grid that cannot run here
                self.notify(
                    escape_controls(str(error)),
                    title="Grid not started",
                    severity="error",
                    timeout=ERROR_TOAST_S,
                    markup=False,
                )
            else:
                self.notify(
                    escape_controls(f"{type(error).__name__}: {error}"),
                    title=f"{worker.name} failed",
                    severity="error",
                    timeout=ERROR_TOAST_S,
                    markup=False,
                )
        if worker.group != "grid" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        grid = int(worker.name.split("-")[1])
        refused = isinstance(worker.error, GreenLabError)  # not started: preflight or a fetch said why
        self.live.snapshot = self.presenter.end_grid(
            grid,
            cancelled=self._cancel_requested
            or (self._stop_current_requested and bool(self._active_ray))
            or (event.state != WorkerState.SUCCESS and not refused),
        )
        self._grid_active = False
        self.refresh_bindings()
        # Quitting, or asked to: a ctrl+q pressed as the last run was stored (the question "a run is in
        # progress" still open) quit only 20 s later, when the fallback timer fired.
        if self._quitting or isinstance(self.screen, ConfirmQuit):
            self._exit_now()
            return
        if isinstance(worker.result, GridOutcome):
            self._tell_outcome(grid, worker.result)
        if self._pending:
            self._launch(*self._pending.pop(0))
        else:
            self.calibrator.resume()
            self.query_one(SetupPane).refresh_forecast()  # the grid's runs are history to forecast from

    def _tell_outcome(self, grid: int, outcome: GridOutcome) -> None:
        """A grid's verdicts on its plan's primary metric, a line each, as headless prints them after its
        summary (its runs were told as each was stored; a grid cut short has none); the Runs pane's verdict
        rows hold them in full."""
        verdicts = outcome.verdicts
        if not verdicts:
            return
        lines = [f"{c.group or c.model} · {c.technique}: {c.word}" for c in verdicts[:VERDICTS_TOLD]]
        if len(verdicts) > VERDICTS_TOLD:
            lines.append(f"and {len(verdicts) - VERDICTS_TOLD} more")
        lines.append("Runs pane: v lists them, w explains one")
        self.notify(
            escape_controls("\n".join(lines)),
            title=f"Grid {grid}: verdicts on {metrics.label(verdicts[0].metric)}",
            timeout=ERROR_TOAST_S,
            markup=False,
        )

    # -- routing the grid's messages ------------------------------------------------------------------
    @on(messages.GridChanged)
    def _grid_changed(self, message: messages.GridChanged) -> None:
        snapshot = message.snapshot
        self.live.snapshot = snapshot
        stored = snapshot.stored[self._seen_stored :]  # runs stored since the last snapshot seen
        if not stored:
            return
        self._seen_stored = len(snapshot.stored)
        self.runs_pane.reload()
        entries = {entry.run_id: entry for entry in snapshot.queue if entry.run_id is not None}
        for run_id in stored:
            entry = entries.get(run_id)
            if entry is None:
                continue
            severity: SeverityLevel = (
                "information"
                if entry.status == "completed"
                else ("warning" if entry.status == "interrupted" else "error")
            )
            energy = f", {formatting.energy(entry.energy_j)}" if entry.energy_j is not None else ""
            self.notify(
                escape_controls(f"{entry.label}: {entry.shown_status}{energy}"),
                title=f"Run {run_id} stored",
                severity="warning" if entry.diverged else severity,
                markup=False,
            )

    @on(RunsPane.DetailRequested)
    def _detail_requested(self, event: RunsPane.DetailRequested) -> None:
        self.action_open_detail(event.run_id)

    def on_unmount(self) -> None:
        self.calibrator.close()
        self.save_preferences()
        # However the app ends, a training child must not outlive it (the worker thread would keep the
        # process alive until the grid finished): cancel stores the run as interrupted and stops the rest.
        if self._token is not None and self._grid_active:
            self._token.cancel()
        if self.store is not None:
            self.store.close()


def run_app(db: str | None = None, theme: str | None = None, experiments: str | None = None) -> int:
    """Open the TUI on a store; returns the exit code (0, also when the user confirmed quitting during a run)."""
    if theme is not None:
        known = [t.name for t in load_themes()[0]]
        from textual.theme import BUILTIN_THEMES

        if theme not in known and theme not in BUILTIN_THEMES:
            from greenlab.core.errors import suggest

            names = sorted({*known, *BUILTIN_THEMES})
            raise ConfigError(
                f"unknown theme '{theme}'{suggest(theme, names)} (known: {', '.join(names)}; "
                "add one as a TOML file in themes/)",
                key="--theme",
            )
    try:  # check the store here, so a bad --db is one line on stderr, not a traceback in the UI
        # Reading only (milliseconds): the writer's open imports sqlite-utils and migrates, a third of the
        # time to the first frame; the app does it on a thread once that frame is drawn.
        if check_location(db).is_file():
            Store.reader(db, check=True).close()
    except (OSError, RuntimeError) as exc:  # the store's own errors are GreenLabErrors: one line as they are
        raise ConfigError(f"cannot open the run store: {exc}", key="--db") from None
    if experiments and not Path(experiments).exists():
        experiments = None  # nothing to offer; the form starts from the built-in defaults
    app = GreenLabApp(db=db, theme=theme, experiments=experiments)
    result = app.run()
    return 0 if result is None else int(result)
