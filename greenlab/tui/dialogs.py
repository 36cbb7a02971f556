"""The TUI's modal screens: questions with a few answers (quit, cancel, delete) and the keys help.

A question screen returns the value of the answer chosen, by key or by button; each answer's key is a
binding with an id, so a user keymap can move it. Escape always means the harmless answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Label, Static


class Question(ModalScreen[Any]):
    """A question and its answers: (value, button label, variant), in the order of the bindings."""

    ANSWERS: tuple[tuple[Any, str, str], ...] = ()

    def __init__(self, question: str) -> None:
        super().__init__(classes="question")
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="confirm"):
            yield Label(self.question, id="confirm-question")
            for index, (_value, label, variant) in enumerate(self.ANSWERS):
                yield Button(label, variant=variant, id=f"answer-{index}")  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.query_one("#confirm", Grid).styles.grid_size_columns = len(self.ANSWERS)
        self.query_one("#confirm-question", Label).styles.column_span = len(self.ANSWERS)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self.ANSWERS[int(str(event.button.id).rsplit("-", 1)[1])][0])

    def action_answer(self, index: int) -> None:
        self.dismiss(self.ANSWERS[index][0])


class ConfirmQuit(Question):
    """Asked when quitting while a run trains: quitting cancels it (stored as interrupted)."""

    ANSWERS = ((True, "Quit (y)", "error"), (False, "Keep running (n)", "primary"))
    BINDINGS = [
        Binding("y", "answer(0)", "Quit", id="quit.yes"),
        Binding("n,escape", "answer(1)", "Keep running", id="quit.no"),
    ]

    def __init__(self) -> None:
        super().__init__(
            "A run is in progress. Quit anyway? It will be cancelled and stored as interrupted, "
            "with what it measured so far."
        )


class CancelChoice(Question):
    """Asked by x: stop only the run in progress, or it and every run queued after it."""

    ANSWERS = (
        ("run", "This run (r)", "warning"),
        ("queue", "Whole queue (a)", "error"),
        (None, "Keep running (n)", "primary"),
    )
    BINDINGS = [
        Binding("r", "answer(0)", "Stop this run", id="cancel.run"),
        Binding("a", "answer(1)", "Stop the whole queue", id="cancel.queue"),
        Binding("n,escape", "answer(2)", "Keep running", id="cancel.no"),
    ]

    def __init__(self, queued: int) -> None:
        super().__init__(
            f"Stop the run in progress (stored as interrupted), or it and the {queued} run"
            f"{'s' if queued != 1 else ''} queued after it?"
        )


class CancelRayGrid(CancelChoice):
    """Asked by x while a Ray grid runs: it runs several at once and stops as a whole (same keys, same ids)."""

    ANSWERS = (("run", "This grid (r)", "warning"), *CancelChoice.ANSWERS[1:])
    BINDINGS = [Binding("r", "answer(0)", "Stop this Ray grid", id="cancel.run"), *CancelChoice.BINDINGS[1:]]

    def __init__(self) -> None:
        Question.__init__(
            self,
            "Stop this Ray grid (its running runs stored as interrupted, the rest of it not "
            "started), or it and every grid queued after it?",
        )


class ConfirmLongGrid(Question):
    """Asked before a grid forecast to run longer than a day (greenlab.core.grid.forecast.CONFIRM_ABOVE_S)."""

    ANSWERS = ((True, "Start it (y)", "warning"), (False, "Not now (n)", "primary"))
    BINDINGS = [
        Binding("y", "answer(0)", "Start the long grid", id="long.yes"),
        Binding("n,escape", "answer(1)", "Do not start it", id="long.no"),
    ]

    def __init__(self, forecast: str) -> None:
        super().__init__(f"{forecast[:1].upper()}{forecast[1:]} Start it?")


class ConfirmDelete(Question):
    """Asked by d on the runs pane: deleting runs removes their epochs, samples and components too."""

    ANSWERS = ((True, "Delete (y)", "error"), (False, "Keep them (n)", "primary"))
    BINDINGS = [
        Binding("y", "answer(0)", "Delete", id="delete.yes"),
        Binding("n,escape", "answer(1)", "Keep them", id="delete.no"),
    ]

    def __init__(self, runs: Sequence[tuple[int, str]], hidden: Collection[int] = ()) -> None:
        """`runs`: the marked runs, (id, 'model · technique'); `hidden`: the ids of those the search or a
        filter hides now, named apart so nothing out of sight is deleted unawares."""
        count = len(runs)
        shown = [f"run {run_id} {label}" for run_id, label in runs[:NAMED_AT_MOST]]
        if count > NAMED_AT_MOST:
            shown.append(f"and {count - NAMED_AT_MOST} more")
        out_of_sight = [str(run_id) for run_id, _label in runs if run_id in hidden]
        warning = (
            f" {len(out_of_sight)} of them {'is' if len(out_of_sight) == 1 else 'are'} hidden by the search or a "
            f"filter: run{'s' if len(out_of_sight) != 1 else ''} {', '.join(out_of_sight[:NAMED_AT_MOST])}"
            + ("…" if len(out_of_sight) > NAMED_AT_MOST else "")
            + "."
            if out_of_sight
            else ""
        )
        super().__init__(
            f"Delete {count} marked run{'s' if count != 1 else ''} ({'; '.join(shown)}) from the store, with "
            f"their epochs, samples and energy components?{warning} This cannot be undone."
        )


NAMED_AT_MOST = 8  # runs named in the delete question; the rest are counted


class HelpScreen(ModalScreen[None]):
    """Every key of the pane it was opened over, with what it does."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "app.pop_screen", "Close", id="help.close")]

    def __init__(self, title: str, keys: Iterable[tuple[str, str]]) -> None:
        super().__init__(id="help")
        self.title_text = title
        self.keys = list(keys)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-body"):
            yield Label(self.title_text, id="help-title")
            # Above the table: on a short terminal the table fills the dialog and would push it out of sight.
            yield Label("escape closes this help; ↑ ↓ scroll", id="help-hint")
            yield DataTable(id="help-keys", cursor_type="none", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one("#help-keys", DataTable)
        key_width = max([len("key"), *(len(keys) for keys, _ in self.keys)])
        # The dialog's width less its border, padding and the cells' padding: what a description may take
        # before it wraps onto a second line of its row (a long one is wrapped, never cut).
        body = min(HELP_WIDTH, int(self.app.size.width * 0.95))
        what_width = max(20, body - 4 - key_width - 6)
        table.add_column("key", key="key", width=key_width)
        table.add_column("what it does", key="what", width=what_width)
        for keys, description in self.keys:
            table.add_row(keys, Text(description, overflow="fold"), height=None)


HELP_WIDTH = 80  # the help dialog's width on a wide terminal (greenlab.tcss: #help-body)


class VerdictScreen(ModalScreen[None]):
    """A verdict in full, as `greenlab report` writes it: its checks, then its sentences
    (greenlab.core.report.render.explanation)."""

    BINDINGS = [Binding("escape,q,w", "app.pop_screen", "Close", id="verdict.close")]

    def __init__(self, title: str, lines: Iterable[str]) -> None:
        super().__init__(id="verdict")
        self.title_text = title
        self.lines = list(lines)

    def compose(self) -> ComposeResult:
        with Vertical(id="verdict-body"):
            yield Label(Content(self.title_text), id="verdict-title")  # a group's [lr=0.01] is text, not markup
            yield Label("escape closes; ↑ ↓ scroll", id="verdict-hint")
            with VerticalScroll(id="verdict-text"):
                for line in self.lines:  # Content: sentences quote [brackets] markup would eat
                    yield Static(Content(line), classes="verdict-line")
