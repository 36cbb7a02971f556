"""Write a report from the TUI: `greenlab report`'s formats (and its figure) into a file the user names.

The dialog only asks (format, file, replace or not); the app then runs `greenlab report` itself
(greenlab.report_cli.run_report, on a worker thread) with `--db` set to its store, so a report written from
the TUI is the command line's, byte for byte, under the same rules: never the store or its companions,
never through a link, never over an existing file unless "replace" is ticked, written whole or not at all.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Label, Select

from greenlab.core.errors import GreenLabError
from greenlab.core.report.render import FORMATS
from greenlab.tui.field import Field

PLOTS = ("plot (svg)", "plot (png)")  # the figure of `greenlab report --plot`
EXTENSIONS = {
    "text": "txt",
    "markdown": "md",
    "csv": "csv",
    "json": "json",
    "latex": "tex",
    "codecarbon": "csv",
    "plot (svg)": "svg",
    "plot (png)": "png",
}


@dataclass(frozen=True)
class ReportRequest:
    """What to write: a `greenlab report` format (or a plot) into `path`, replacing it only if `force`."""

    kind: str
    path: str
    force: bool = False

    def argv(self, db: Path) -> list[str]:
        """The `greenlab report` arguments that write it."""
        target = ["--plot", self.path] if self.kind in PLOTS else ["--format", self.kind, "--out", self.path]
        return ["--db", str(db), *target, *(["--force"] if self.force else [])]


def write_report(request: ReportRequest, db: Path) -> str:
    """Run `greenlab report` for `request`; what it said it wrote. GreenLabError: refused (nothing written)."""
    from greenlab.report_cli import run_report  # the command line's own code: one set of rules

    said = io.StringIO()
    code = run_report(request.argv(db), out=io.StringIO(), err=said)
    if code != 0:
        raise GreenLabError(said.getvalue().strip() or f"greenlab report exited {code}")
    return said.getvalue().strip().splitlines()[-1] if said.getvalue().strip() else f"wrote {request.path}"


class ReportDialog(ModalScreen[ReportRequest | None]):
    """Asks which report to write, and where."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="report.cancel")]

    def __init__(self, kind: str = "markdown") -> None:
        super().__init__(id="report")
        self.kind = kind if kind in EXTENSIONS else "markdown"

    def compose(self) -> ComposeResult:
        with Vertical(id="report-body"):
            yield Label("Write a report of the run store (as greenlab report does)", id="report-title")
            yield Select(
                [(kind, kind) for kind in (*FORMATS, *PLOTS)], value=self.kind, allow_blank=False, id="report-kind"
            )
            yield Field(f"report.{EXTENSIONS[self.kind]}", placeholder="file to write", id="report-path")
            yield Checkbox("replace the file if it exists", id="report-force")
            with Horizontal(id="report-actions"):
                yield Button("Write (enter)", variant="primary", id="report-write")
                yield Button("Cancel (escape)", id="report-cancel")

    def on_mount(self) -> None:
        self.query_one("#report-path", Field).focus()

    def on_select_changed(self, event: Select.Changed) -> None:
        path = self.query_one("#report-path", Field)
        stem = Path(path.value).stem or "report"
        path.value = f"{stem}.{EXTENSIONS.get(str(event.value), 'txt')}"

    def on_input_submitted(self) -> None:
        self._write()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "report-write":
            self._write()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _write(self) -> None:
        path = self.query_one("#report-path", Field).value.strip()
        if not path:
            self.notify("Name the file to write.", severity="warning")
            return
        kind = str(self.query_one("#report-kind", Select).value)
        self.dismiss(ReportRequest(kind, path, self.query_one("#report-force", Checkbox).value))
