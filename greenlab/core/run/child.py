"""One run's child process, as the supervisor handles it: started, its events read, stopped, reaped.

This is the seam between executing a run and measuring it: the supervisor (greenlab.core.run.supervisor) opens
energy windows and writes the store from the events `events()` yields, whatever started the process (a
fork server or a fresh interpreter, greenlab.core.run.launcher) and wherever it runs. Nothing here measures or
stores anything.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from greenlab.core.run.forkserver import CHILD_MODULE
from greenlab.core.run.launcher import ForkedProcess, Launcher, RunProcess
from greenlab.core.train import child_events

TERMINATE_GRACE_S = 5.0


class _Output:
    """Drains the child's stdout/stderr on a thread (a full pipe would block the child) and keeps the tail."""

    def __init__(self, stream: Any) -> None:
        self.lines: deque[str] = deque(maxlen=40)
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            self.lines.append(line.rstrip())

    def tail(self, count: int = 8) -> str:
        self._thread.join(timeout=1)
        return "\n".join(list(self.lines)[-count:])


class RunChild:
    """A started run: `events()` until the child closes its end, `terminate()` from any thread, `reap()`."""

    def __init__(
        self, launcher: Launcher, run_json: str, env: Mapping[str, str], *, module: str = CHILD_MODULE
    ) -> None:
        self._read_fd, write_fd = os.pipe()
        try:
            self.process: RunProcess = launcher.launch(run_json, write_fd, env, module=module)
        except BaseException:
            os.close(self._read_fd)
            raise
        finally:
            os.close(write_fd)  # the child has its own copy: EOF on the read end means the child is gone
        self.launcher_kind = "forkserver" if isinstance(self.process, ForkedProcess) else "spawn"
        self._output = _Output(self.process.stdout)
        self._closed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self, tick: Callable[[], None], tick_s: float = 1.0) -> Iterator[child_events.Event]:
        """The child's events as they arrive; `tick()` is called about every `tick_s` meanwhile."""
        buffer = b""
        last_tick = time.monotonic()
        while True:
            ready, _, _ = select.select([self._read_fd], [], [], 0.25)
            if ready:
                chunk = os.read(self._read_fd, 65536)
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield child_events.decode(line.decode())
            if time.monotonic() - last_tick >= tick_s:
                tick()
                last_tick = time.monotonic()

    def terminate(self) -> None:
        """SIGTERM the child's session, SIGKILL it after a grace period; safe to call from any thread."""
        process = self.process
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._read_fd)

    def reap(self, timeout_s: float = TERMINATE_GRACE_S * 2) -> int:
        """The child's exit status (negative: a signal), killing it if it does not end in time."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def output_tail(self) -> str:
        return self._output.tail()
