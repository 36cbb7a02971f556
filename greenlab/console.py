"""The console face: prints what changed between the presenter's snapshots (greenlab.core.grid.presenter).

New log lines are printed as lines; on a terminal, a one-line bar (the training run's batches, or a
download's bytes, rate and ETA) is redrawn in place at most a few times a second; on a pipe or a log there
is no bar. With several runs at once (on Ray) the lines, each naming its run, tell them all; the bar
follows the latest run begun. Used by `--headless` and `--fetch`; it never dispatches over event types itself.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, TextIO

from greenlab.core.grid.presenter import GridPresenter, QueueEntry, RunView
from greenlab.core.text import escape_controls

REDRAW_S = 0.2


class TerminalLines:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._bar_shown = False
        self._last_draw = 0.0

    def line(self, text: str) -> None:
        if self._bar_shown:
            self.out.write("\r\033[K")
            self._bar_shown = False
        self.out.write(escape_controls(text) + "\n")  # a stored name or a child's error: shown, never obeyed
        self.out.flush()

    def bar(self, text: str) -> None:
        """Redraw the bar with `text` if this is a terminal and the last redraw is old enough."""
        if not self.tty or time.monotonic() - self._last_draw < REDRAW_S:
            return
        self._last_draw = time.monotonic()
        columns = shutil.get_terminal_size((100, 20)).columns
        self.out.write("\r\033[K" + escape_controls(text, keep="")[: columns - 1])
        self.out.flush()
        self._bar_shown = True


class ConsoleView:
    """A presenter's listener that prints what changed between its snapshots."""

    def __init__(self, out: TextIO, presenter: GridPresenter | None = None) -> None:
        self.terminal = TerminalLines(out)
        self.presenter = presenter or GridPresenter(
            hints={"skipped": "--force reruns", "waiting": "--no-wait exits instead"}
        )
        self.snapshot = self.presenter.snapshot()
        self._printed = 0

    def line(self, text: str) -> None:
        self.terminal.line(text)

    @property
    def run_open(self) -> bool:
        return bool(self.snapshot.running)

    @property
    def interrupted(self) -> list[QueueEntry]:
        """The queue's runs stored as interrupted (by a Ctrl-C, a SIGTERM or a cancel)."""
        return [entry for entry in self.snapshot.queue if entry.status == "interrupted"]

    @property
    def stopped(self) -> str | None:
        return self.snapshot.stopped

    def __call__(self, event: Any) -> None:
        before = self.snapshot
        self.snapshot = self.presenter.apply(event)
        lines = self.snapshot.new_lines(self._printed)
        for line in lines:
            if not (self.terminal.tty and line.level == "progress"):  # a terminal has the bar instead
                self.terminal.line(line.text)
            self._printed = line.seq
        current = self.snapshot.current
        if self.run_open and current is not None and current.phase == "train" and current.batches:
            others = len(self.snapshot.running) - 1  # on Ray several run at once: the bar shows the latest
            self.terminal.bar(_run_bar(current) + (f"  (+{others} running)" if others else ""))
        elif all(line.level == "progress" for line in lines) and self.snapshot.note != before.note:
            self.terminal.bar(self.snapshot.note)  # a download's progress: bytes, rate, ETA


def _run_bar(view: RunView) -> str:
    width = 20
    filled = int(width * view.batch / max(view.batches, 1))
    watts = " ".join(f"{c} {w:.0f}W" for c, w in view.tracker.latest().items()) if view.tracker else ""
    loss = f" loss {view.loss:.3f}" if view.loss is not None else ""
    return (
        f"{view.label} e{view.epoch} [{'#' * filled}{'.' * (width - filled)}] {view.batch}/{view.batches}{loss} {watts}"
    )
