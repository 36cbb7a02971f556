"""The forecast's calibration children, kept off every measurement: at most one at a time, stoppable, and
never beside a grid.

A calibration trains a model for a few seconds (greenlab.core.train.calibration, in a child process). On
a machine that measures energy that is work like any other: a calibration running while a grid measures
would be counted as the grid's, and slow it. So a `Calibrator`:
- runs one child at a time: a newer request stops the older child (a form edited five times starts five
  requests; only the last one's answer is wanted);
- holds the host's measurement lock (greenlab.core.measure.host_lock) while its child runs, without ever
  waiting for it: a grid measuring on this host, in this process or another, means "not calibrated now",
  and a grid starting in another process waits the few seconds until the child has ended;
- is `paused` by a face before its own grid starts (the child is killed before the idle baseline) and
  `resumed` after; paused, it answers from the calibrations already made, and says why for the others;
- `close()` kills the child at once (a TUI quits in well under a second).
Calibrations are kept per process (the device does not change under us); failures that may pass (a busy
host, a stopped child) are not kept. `GREENLAB_CALIBRATE=0` starts no child at all: runs without earlier
ones are forecast "unknown" (a scripted grid, or a test suite, that wants no forecast spares its seconds of CPU).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from greenlab.core.errors import GreenLabError
from greenlab.core.measure import hostload
from greenlab.core.measure.host_lock import HostLock

CalibrationSpec = tuple[str, int, str, int, str]  # model, image size, device, batch size, optimizer
Calibration = dict[str, Any]  # {flops_per_sample, flop_per_s, other_cores, cpus, ...} or {"error": why}
TIMEOUT_S = 300.0
PAUSE_WAIT_S = 2.0  # pause waits at most this long for a killed calibration to let go of the host
STOPPED = "calibration stopped (a newer forecast, a grid starting, or the app closing)"
OFF_ENV = "GREENLAB_CALIBRATE"
OFF = f"not calibrated: {OFF_ENV}=0"

_MADE: dict[CalibrationSpec, Calibration] = {}  # per process: what a child measured, for every Calibrator
_MADE_LOCK = threading.Lock()


def _children_cpu_s() -> float:
    """CPU seconds of this process's ended children (the calibration child once it is waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_child(todo: Sequence[CalibrationSpec]) -> subprocess.Popen[str]:
    """The calibration child for `todo`: one JSON line per spec on its stdout."""
    payload = json.dumps(
        [{"model": m, "image_size": s, "device": d, "batch_size": b, "optimizer": o} for m, s, d, b, o in todo]
    )
    return subprocess.Popen(
        [sys.executable, "-m", "greenlab.core.train.calibration", payload],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


class Calibrator:
    """Callable as the forecast's `calibrate`: specs in, a calibration (or {"error": why}) per spec out."""

    def __init__(self, *, start: Callable[[Sequence[CalibrationSpec]], subprocess.Popen[str]] | None = None) -> None:
        self._start = start or start_child
        self._lock = threading.Lock()
        self._turn = threading.Lock()  # one request at a time holds the host lock and runs its child
        self._child: subprocess.Popen[str] | None = None
        self._paused: str | None = None  # why no child may start now

    @property
    def running(self) -> bool:
        with self._lock:
            return self._child is not None and self._child.poll() is None

    def pause(self, why: str) -> None:
        """No child starts until `resume()`; the one running (if any) is killed now, and its host lock
        released before this returns (a grid started next takes the host at once, with no wait to tell)."""
        with self._lock:
            self._paused = why
        self.cancel()
        if self._turn.acquire(timeout=PAUSE_WAIT_S):  # the killed child's caller ends its turn in milliseconds
            self._turn.release()

    def resume(self) -> None:
        with self._lock:
            self._paused = None

    def cancel(self) -> None:
        """Kill the running child; its caller gets STOPPED for the specs it had not answered."""
        with self._lock:
            child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def close(self) -> None:
        """For good: the child is killed and none starts again."""
        self.pause("the app is closing")

    def __call__(self, specs: list[CalibrationSpec]) -> dict[CalibrationSpec, Calibration]:
        with _MADE_LOCK:
            made = {spec: _MADE[spec] for spec in specs if spec in _MADE}
        todo = [spec for spec in specs if spec not in made]
        if todo:
            made.update(self._calibrate(todo))
        return {spec: made[spec] for spec in specs}

    def _calibrate(self, todo: list[CalibrationSpec]) -> dict[CalibrationSpec, Calibration]:
        if os.environ.get(OFF_ENV, "").strip() == "0":
            return {spec: {"error": OFF} for spec in todo}
        self.cancel()  # a newer request: the older answer is no longer wanted, and its turn ends now
        with self._turn:
            return self._calibrate_in_turn(todo)

    def _calibrate_in_turn(self, todo: list[CalibrationSpec]) -> dict[CalibrationSpec, Calibration]:
        lock = HostLock("a forecast calibration", describe_as="nothing: a forecast calibration of a few seconds")
        try:
            held = lock.try_acquire()
        except GreenLabError as exc:
            return {spec: {"error": f"not calibrated: {exc}"} for spec in todo}
        if not held:
            return {spec: {"error": "not calibrated while a grid measures on this host"} for spec in todo}
        try:
            with self._lock:
                if self._paused is not None:
                    return {spec: {"error": f"not calibrated now: {self._paused}"} for spec in todo}
                try:
                    child = self._child = self._start(todo)
                except OSError as exc:
                    return {spec: {"error": f"calibration failed: {exc}"} for spec in todo}
            before, cpu_before = hostload.mark(), _children_cpu_s()
            try:
                out, err = child.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
                err = f"calibration took over {TIMEOUT_S:g} s"
            finally:
                with self._lock:
                    if self._child is child:
                        self._child = None
            # Others' CPU time while the child ran (this process's own and the child's are taken out): a busy
            # host slows the timed steps, and the forecast says so rather than folding it in silently.
            after = hostload.mark()
            load = hostload.others(before, after, run_cpu_s=_children_cpu_s() - cpu_before)
            other_cores = round((load["other_cpu_s"] or 0.0) / max(after.at - before.at, 1e-9), 2)
        finally:
            lock.release()
        lines: list[Calibration] = []
        for text in out.splitlines():
            if not text.startswith("{"):
                continue
            try:
                lines.append(json.loads(text))
            except ValueError:
                break  # a line cut short by a kill: what came before stands
        stopped = child.returncode is not None and child.returncode < 0
        why = STOPPED if stopped else ((err or "").strip().splitlines() or [f"exit {child.returncode}"])[-1]
        answers: dict[CalibrationSpec, Calibration] = {}
        with _MADE_LOCK:
            for spec, line in zip(todo, lines):
                answer = answers[spec] = {**line, "other_cores": other_cores, "cpus": load["cpus"]}
                if "error" not in answer and not busy(answer):  # a busy host's figure is not kept for later
                    _MADE[spec] = answer
        for spec in todo[len(lines) :]:
            answers[spec] = {"error": why}
        return answers


BUSY_CORES = 0.25  # other processes' use of the host, in cores, above which a calibration says so


def busy(calibration: Calibration) -> bool:
    """The host was busy with other processes while the calibration timed its steps."""
    return float(calibration.get("other_cores") or 0.0) > BUSY_CORES


def forget() -> None:
    """Drop every calibration made in this process (tests; a device that changed)."""
    with _MADE_LOCK:
        _MADE.clear()
