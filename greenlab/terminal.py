"""Lines and a one-line bar on a terminal, plain lines on a pipe or a log: the headless faces' output.

A bar is redrawn in place at most a few times a second and never on a pipe; a line first clears a bar.
"""

from __future__ import annotations

import shutil
import time
from typing import TextIO

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
        self.out.write(text + "\n")
        self.out.flush()

    def bar(self, text: str) -> None:
        """Redraw the bar with `text` if this is a terminal and the last redraw is old enough."""
        if not self.tty or time.monotonic() - self._last_draw < REDRAW_S:
            return
        self._last_draw = time.monotonic()
        columns = shutil.get_terminal_size((100, 20)).columns
        self.out.write("\r\033[K" + text[: columns - 1])
        self.out.flush()
        self._bar_shown = True
