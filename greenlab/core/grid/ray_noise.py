"""Ray's own output during a grid, kept out of GreenLab's: a log file beside the data, written only when
Ray says something.

Ray talks on two channels a driver cannot configure away. Its C++ client writes warnings to file
descriptor 2 (a minute of "Failed to get cluster ID from GCS" when an address is not a cluster), and its
error listener prints what the raylets publish (a dead worker's or node's state, twenty lines at a time)
through `ray._private.worker.print_to_stdstream`. The first is caught by pointing descriptor 2 at the log
while `ray.init` runs, when the face draws on no terminal of its own (headless; the TUI draws on that
descriptor); the second by routing that function to the log for as long as Ray stays connected. GreenLab
says what matters in its own words: the driver names a lost node in one line.

Ray's private function is replaced only where it exists; a Ray that moved it prints as it always did.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOG_DIR_ENV = "GREENLAB_DATA_DIR"


def default_log_path() -> Path:
    """data/logs/ray-YYYYmmdd-HHMMSS-PID.log (under GREENLAB_DATA_DIR when set)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(os.environ.get(LOG_DIR_ENV, "data")) / "logs" / f"ray-{stamp}-{os.getpid()}.log"


class RayNoise:
    """The log Ray's own output goes to; the file exists only once something was written."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_log_path()
        self.lines = 0
        self._lock = threading.Lock()
        self._restore: Any = None

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as log:
                    log.write(text if text.endswith("\n") else text + "\n")
            except OSError:  # an unwritable data folder: Ray's chatter is not worth a failed grid
                return
            self.lines += text.count("\n") + (not text.endswith("\n"))

    def where(self) -> str:
        """A clause naming the log, or nothing when Ray said nothing."""
        return f"Ray's own messages are in {self.path}" if self.lines else ""

    # -- descriptor 2 during ray.init --------------------------------------------------------------------
    @contextlib.contextmanager
    def descriptor_quiet(self) -> Iterator[None]:
        """Descriptor 2 points at a scratch file for the block (when this process has a real one and the
        face does not draw on it), and what was written there is appended to the log."""
        if not _draws_on_no_terminal():
            yield
            return
        sys.stderr.flush()
        with tempfile.TemporaryFile(mode="w+b") as scratch:
            saved = os.dup(2)
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                scratch.seek(0)
                self.write(scratch.read().decode("utf-8", "replace"))

    # -- the error listener, while connected -------------------------------------------------------------
    def route_listener(self) -> None:
        """Ray's printed errors (raylet and worker messages) go to the log from now on."""
        try:
            from ray._private import worker
        except ImportError:
            return
        original = getattr(worker, "print_to_stdstream", None)
        if original is None or self._restore is not None:
            return

        def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
            pid = data.get("pid", "")
            self.write("".join(f"({pid}) {line}\n" for line in data.get("lines", [])))

        worker.print_to_stdstream = to_log
        self._restore = (worker, original)

    def restore(self) -> None:
        if self._restore is not None:
            module, original = self._restore
            module.print_to_stdstream = original
            self._restore = None


def _draws_on_no_terminal() -> bool:
    """Headless: sys.stderr is the process's descriptor 2 (a face that captures output has none)."""
    try:
        return sys.stderr.fileno() == 2 and sys.stdout.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False
